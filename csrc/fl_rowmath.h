/* fl_rowmath.h: the arithmetic on one contiguous row, float32 (SIMD lanes) and float64.
 *
 * Accuracy design (see API.md, "Accuracy"): x - m is carried with its rounding error e
 * (TwoSum), folded into the exponential as exp(s)*(1 + e), so exp(x_i - max) is right to about
 * one ULP even when x_i and the max differ in magnitude; sums of exponentials accumulate in
 * float64 (float32 rows) or in eight compensated float64 lanes (float64 rows).
 * Everything is compiled once per ISA, with FL_W lanes.
 */
#ifndef FL_ROWMATH_H
#define FL_ROWMATH_H

#include <float.h>
#include <math.h>
#include <stdint.h>
#include "fl_simd.h"
#include "fl_scalar_math.h"

/* ---------- float32 rows ---------- */

/* max of a row; NaN anywhere gives NaN; an empty row gives -inf */
static inline float fl_rmax_f32(const float *x, int64_t n)
{
    flv acc = flv_set1(-INFINITY);
    int64_t k = 0;
    for (; k + FL_W <= n; k += FL_W) acc = flv_max(acc, flv_load(x + k));
    if (k < n) acc = flv_max(acc, flv_load_part(x + k, n - k, -INFINITY));
    return flv_hmax(acc);
}

/* exp(x - m) for a finite m, with the rounding error of x - m folded in */
static inline flv fl_vexp_sub(flv x, flv m)
{
    flv s = flv_sub(x, m);
    flv bv = flv_sub(s, x);
    flv e = flv_add(flv_sub(x, flv_sub(s, bv)), flv_sub(flv_neg(m), bv));
    e = flv_zero_nan(e); /* x = -inf: s = -inf and e is inf - inf */
    flv p = flv_exp(s);
    return flv_fma(p, e, p);
}

/* sum of exp(x_k - m) in double; when y is not NULL also stores exp(x_k - m) there */
static inline double fl_rsumexp_f32(const float *x, int64_t n, float m, float *y)
{
    flv vm = flv_set1(m);
    double sum = 0.0;
    int64_t k = 0;
    for (; k + FL_W <= n; k += FL_W) {
        flv e = fl_vexp_sub(flv_load(x + k), vm);
        if (y) flv_store(y + k, e);
        sum += flv_hsum_d(e);
    }
    if (k < n) {
        flv e = fl_vexp_sub(flv_load_part(x + k, n - k, -INFINITY), vm);
        if (y) flv_store_part(y + k, e, n - k);
        sum += flv_hsum_d(e);
    }
    return sum;
}

static inline void fl_rscale_f32(float *y, int64_t n, float a)
{
    flv va = flv_set1(a);
    int64_t k = 0;
    for (; k + FL_W <= n; k += FL_W) flv_store(y + k, flv_mul(flv_load(y + k), va));
    if (k < n) flv_store_part(y + k, flv_mul(flv_load_part(y + k, n - k, 0.0f), va), n - k);
}

/* y_k = (x_k - m) - c in double, then rounded once: log_softmax without cancellation loss */
static inline void fl_rsub2_f32(const float *x, int64_t n, double m, double c, float *y)
{
    for (int64_t k = 0; k < n; k++) y[k] = (float)(((double)x[k] - m) - c);
}

/* sum over k of p_k * (x_k - m) with p_k = exp(x_k - m), skipping p_k = 0 (so -inf logits add 0) */
static inline double fl_rdot_shift_f32(const float *x, const float *p, int64_t n, double m)
{
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t k = 0;
    for (; k + 8 <= n; k += 8)
        for (int j = 0; j < 8; j++) {
            double t = p[k + j] > 0.0f ? (double)p[k + j] * ((double)x[k + j] - m) : 0.0;
            acc[j] += t;
        }
    for (; k < n; k++) acc[0] += p[k] > 0.0f ? (double)p[k] * ((double)x[k] - m) : 0.0;
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/* sigmoid and log-sigmoid, elementwise, stable for any |x| */
static inline flv fl_vsigmoid(flv x)
{
    flv t = flv_exp(flv_neg(flv_abs(x)));              /* exp(-|x|) in (0, 1] */
    flv r = flv_div(flv_set1(1.0f), flv_add(flv_set1(1.0f), t));
    return flv_sel_neg(x, flv_mul(t, r), r);           /* x < 0: t/(1+t) */
}

static inline flv fl_vlog_sigmoid(flv x)
{
    /* log sigmoid(x) = min(x, 0) - log1p(exp(-|x|)) */
    flv t = flv_exp(flv_neg(flv_abs(x)));
    return flv_sub(flv_min(x, flv_set1(0.0f)), flv_log1p(t));
}

/* ---------- float64 rows ---------- */

static inline double fl_rmax_f64(const double *x, int64_t n)
{
    double m = -INFINITY;
    int nan = 0;
    for (int64_t k = 0; k < n; k++) {
        m = x[k] > m ? x[k] : m;
        nan |= x[k] != x[k];
    }
    return nan ? NAN : m;
}

static inline double fl_exp_sub_d(double x, double m)
{
    double s = x - m;
    double bv = s - x;
    double e = (x - (s - bv)) + (-m - bv);
    e = e == e ? e : 0.0;
    double p = fl_exp_d(s);
    return p + p * e;
}

/* sum of exp(x_k - m), eight lanes each compensated (Neumaier), combined pairwise */
static inline double fl_rsumexp_f64(const double *x, int64_t n, double m, double *y)
{
    double s[8] = {0, 0, 0, 0, 0, 0, 0, 0}, c[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t k = 0;
    for (; k + 8 <= n; k += 8)
        for (int j = 0; j < 8; j++) {
            double e = fl_exp_sub_d(x[k + j], m);
            if (y) y[k + j] = e;
            double t = s[j] + e;
            c[j] += (s[j] >= e) ? (s[j] - t) + e : (e - t) + s[j];
            s[j] = t;
        }
    for (; k < n; k++) {
        double e = fl_exp_sub_d(x[k], m);
        if (y) y[k] = e;
        double t = s[0] + e;
        c[0] += (s[0] >= e) ? (s[0] - t) + e : (e - t) + s[0];
        s[0] = t;
    }
    for (int j = 0; j < 8; j++) s[j] += c[j];
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

static inline double fl_rdot_shift_f64(const double *x, const double *p, int64_t n, double m)
{
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t k = 0;
    for (; k + 8 <= n; k += 8)
        for (int j = 0; j < 8; j++) acc[j] += p[k + j] > 0.0 ? p[k + j] * (x[k + j] - m) : 0.0;
    for (; k < n; k++) acc[0] += p[k] > 0.0 ? p[k] * (x[k] - m) : 0.0;
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
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
