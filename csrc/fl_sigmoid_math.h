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
 * below 2^-1). So no correction term, and no division, is needed. Always inlined: GCC left it
 * a call per vector in the BCE's option sets (62% of the loss's samples, perf AVX-512). */
FL_ALWAYS_INLINE flv fl_vlog1p_unit(flv t)
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

/* Below FL_SIG_TINY, t = exp(-|x|) (|x| > 17.3) leaves 1 + t = 1 in float32 and log1p(t) = t
 * once rounded (t^2/2 is below half an ULP of t), which is what the formulas here give: the
 * tiny forms below take those values directly in such lanes. Their products and quotients of
 * tiny values (t^2, t/(1 + t) for |x| > 87) would be subnormal, which x86 cores compute by a
 * microcode assist (about 25-70 ns a vector on this Xeon): log_sigmoid of randn * 60 ran ~25x
 * slower than under FTZ/DAZ. In the other lanes (NaN included) a tiny form gives the plain
 * form's bits, so the choice between them is a matter of cost only. */
#define FL_SIG_TINY 0x1p-25f

/* -|x| above FL_SIG_PLAIN_LO: t = exp(-|x|) >= exp(-17) = 4.1e-8 is not below FL_SIG_TINY
 * (2^-25 = 3.0e-8), and -|x| is above FL_EXPF_NORMAL_LO, so flv_exp_neg_normal gives t (the
 * same bits as flv_exp_neg, without its test for a subnormal result). The elementwise kernels
 * test this once for a group of vectors (the min of their -|x|) instead of testing each
 * vector's t: that per-vector test cost plain rows 15% (sigmoid) and 9% (log_sigmoid) more
 * instructions (callgrind AVX2). */
#define FL_SIG_PLAIN_LO -17.0f

/* fl_vlog1p_unit, the tiny lanes' log1p(t) = t taken directly: the log-sigmoid's. (The BCE
 * takes t itself in its own wide form, fl_bce.c, whose groups are tested once.) */
static inline flv fl_vlog1p_unit_tiny(flv t)
{
    flv tiny = flv_set1(FL_SIG_TINY);
    flv small = flv_sub(t, tiny); /* negative in the tiny lanes (NaN lanes: NaN, taken as others) */
    return flv_sel_neg(small, t, fl_vlog1p_unit(flv_sel_neg(small, tiny, t)));
}

/* -|x|, the exponent of t = exp(-|x|) */
static inline flv fl_vmabs(flv x) { return flv_neg(flv_abs(x)); }

/* exp(-|x|), in (0, 1] (nan for nan) */
static inline flv fl_vexp_mabs(flv x) { return flv_exp_neg(fl_vmabs(x)); }

/* -|x| above FL_SIG_NORMAL_LO: t = exp(-|x|) > 2^-40, and the plain forms make no subnormal
 * value (the smallest, log1p's t^3 P(t), is above 2^-123). Zen 4 computes products with a
 * subnormal operand at full speed, but stalls on a product of normal values that is subnormal
 * (fl_dispatch.c): there the plain forms hold from -|x| > FL_SIG_NORMAL_LO, and beyond it the
 * tiny forms (with the plain primitives) are the faster (log_sigmoid of randn * 20 on AVX2 2x
 * slower with the plain forms to |x| = 86). */
#define FL_SIG_NORMAL_LO -28.0f

/* The -|x| above which a group of vectors takes the plain forms: FL_SIG_PLAIN_LO, where the
 * tiny forms spare Intel cores the assists of products of tiny values, or FL_SIG_NORMAL_LO where
 * subnormal operands cost nothing (fl_subnormals_plain: AMD). Read once a span. */
static inline flv fl_sig_plain_lo(void) { return flv_set1(fl_subnormals_plain() ? FL_SIG_NORMAL_LO : FL_SIG_PLAIN_LO); }

/* Are the lanes of a group of vectors whose -|x| have the lanewise min nm all above lo
 * (fl_sig_plain_lo)? (A NaN lane may count either way: both forms give it the same bits.) */
static inline int fl_vsig_plain(flv nm, flv lo) { return !flv_any_ge(lo, nm); }

/* sigmoid and log-sigmoid of x from t = exp(-|x|), elementwise, stable for any |x|. sigmoid:
 * 1/(1+t), or t/(1+t) for x < 0, as one division of the selected numerator: t/(1+t) is then
 * rounded once, not as t times a rounded 1/(1+t), and the multiplication is gone. The plain
 * forms are for lanes known to have no t below FL_SIG_TINY (fl_vsig_plain), the tiny forms for
 * any. */
static inline flv fl_vsigmoid_t(flv x, flv t)
{
    flv one = flv_set1(1.0f);
    return flv_div(flv_sel_neg(x, t, one), flv_add(one, t));
}

static inline flv fl_vsigmoid_tiny_t(flv x, flv t)
{
    flv one = flv_set1(1.0f), num = flv_sel_neg(x, t, one), tiny = flv_set1(FL_SIG_TINY);
    /* the tiny lanes: 1 + t = 1, the quotient is the numerator (t or 1), which the division
     * sees raised to FL_SIG_TINY (a select there let GCC fold it into an AVX-512 division masked
     * to the other lanes, and a masked-off subnormal lane still took the assist) */
    return flv_sel_neg(flv_sub(t, tiny), num, flv_div(flv_max(num, tiny), flv_add(one, t)));
}

/* log sigmoid(x) = min(x, 0) - log1p(exp(-|x|)) */
static inline flv fl_vlog_sigmoid_t(flv x, flv t)
{
    return flv_sub(flv_min(x, flv_set1(0.0f)), fl_vlog1p_unit(t));
}

static inline flv fl_vlog_sigmoid_tiny_t(flv x, flv t)
{
    return flv_sub(flv_min(x, flv_set1(0.0f)), fl_vlog1p_unit_tiny(t));
}

static inline double fl_sigmoid_d(double x)
{
    double t = fl_exp_d(-fabs(x));
    return (x < 0.0 ? t : 1.0) / (1.0 + t);
}

static inline double fl_log_sigmoid_d(double x)
{
    double t = fl_exp_d(-fabs(x));
    return (x < 0.0 ? x : 0.0) - fl_log1p_d(t);
}

#endif
