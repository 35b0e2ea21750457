/* fl_sigmoid_math.h: sigmoid and log-sigmoid of single values, stable for any |x|: FL_W
 * float32 lanes (exp(-|x|) then a division, or log1p of it without rounding 1 + t) and a float64
 * scalar twin. Shared by the elementwise kernels (fl_sigmoid.c) and the binary losses
 * (fl_bce.c). Compiled once per ISA. */
#ifndef FL_SIGMOID_MATH_H
#define FL_SIGMOID_MATH_H

#include <math.h>
#include "fl_simd.h"
#include "fl_scalar_math.h"

/* log1p(t) for 0 <= t <= 1 (or nan), the t = exp(-|x|) of softplus and log-sigmoid: fl_logf_core_s's
 * reduction and polynomial without its special cases, and without rounding 1 + t. Where
 * 1 + t < sqrt(2) the reduced argument f = m - 1 is t itself; above, m = (1 + t)/2 and
 * f = (t - 1)/2 = fma(t, 1/2, -1/2), exact for t in [sqrt(2) - 1, 1] (a multiple of ulp(t)/2
 * below 2^-1). So no correction term, and no division, is needed. */
static inline flv fl_vlog1p_unit(flv t)
{
    flv half = flv_set1(0.5f), zero = flv_set1(0.0f);
    flv d = flv_sub(t, flv_set1(2.0f * FL_SQRTH_F - 1.0f));
    flv f = flv_sel_neg(d, t, flv_fma(t, half, flv_neg(half)));
    flv fe = flv_sel_neg(d, zero, flv_set1(1.0f));
    flv z = flv_mul(f, f);
    flv p = flv_set1(FL_LOGF_P8);
    p = flv_fma(p, f, flv_set1(FL_LOGF_P7));
    p = flv_fma(p, f, flv_set1(FL_LOGF_P6));
    p = flv_fma(p, f, flv_set1(FL_LOGF_P5));
    p = flv_fma(p, f, flv_set1(FL_LOGF_P4));
    p = flv_fma(p, f, flv_set1(FL_LOGF_P3));
    p = flv_fma(p, f, flv_set1(FL_LOGF_P2));
    p = flv_fma(p, f, flv_set1(FL_LOGF_P1));
    p = flv_fma(p, f, flv_set1(FL_LOGF_P0));
    flv y = flv_fma(fe, flv_set1(FL_LN2_LO_F), flv_mul(flv_mul(p, f), z));
    y = flv_fma(flv_neg(half), z, y);
    y = flv_add(f, y);
    return flv_fma(fe, flv_set1(FL_LN2_HI_F), y);
}

/* exp(-|x|), in (0, 1] (nan for nan) */
static inline flv fl_vexp_mabs(flv x) { return flv_exp_neg(flv_neg(flv_abs(x))); }

/* sigmoid and log-sigmoid, elementwise, stable for any |x| */
static inline flv fl_vsigmoid(flv x)
{
    flv t = fl_vexp_mabs(x);
    flv r = flv_div(flv_set1(1.0f), flv_add(flv_set1(1.0f), t));
    return flv_sel_neg(x, flv_mul(t, r), r);           /* x < 0: t/(1+t) */
}

static inline flv fl_vlog_sigmoid(flv x)
{
    /* log sigmoid(x) = min(x, 0) - log1p(exp(-|x|)) */
    return flv_sub(flv_min(x, flv_set1(0.0f)), fl_vlog1p_unit(fl_vexp_mabs(x)));
}

static inline double fl_sigmoid_d(double x)
{
    double t = fl_exp_d(-fabs(x));
    double r = 1.0 / (1.0 + t);
    return x < 0.0 ? t * r : r;
}

static inline double fl_log_sigmoid_d(double x)
{
    double t = fl_exp_d(-fabs(x));
    return (x < 0.0 ? x : 0.0) - fl_log1p_d(t);
}

#endif
