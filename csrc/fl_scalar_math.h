/* fl_scalar_math.h: exp, log and log1p of our own, branch-free, for float and double.
 *
 * Why our own: a libm call per element does not vectorise (and libmvec/SLEEF are not allowed),
 * and the SIMD paths must compute the same function as the scalar twin they are tested against.
 * Every function here is straight-line code on bit patterns (no table, no branch on the value),
 * so the compiler can vectorise loops over it and the SIMD headers can mirror it lane by lane.
 *
 * exp: x = n*ln2 + r with |r| <= ln2/2 (Cody-Waite split of ln2), exp(r) by a polynomial,
 * 2^n applied as two exponent-field multiplications so results down to the smallest subnormal
 * are right without a branch. Coefficients of expf: Cephes (S. L. Moshier), minimax on
 * [-ln2/2, ln2/2]; exp for double: Taylor to degree 13, whose truncation error there is
 * below 2^-56.
 * log: x = 2^e * m with m in [sqrt(1/2), sqrt(2)), log(m) by Cephes' minimax polynomial in
 * m - 1 (float) and by fdlibm's minimax polynomial in s = f/(2+f), f = m - 1 (double).
 * log1p(x) = log(u) - ((u - 1) - x)/u with u = 1 + x (Goldberg's correction, "What every
 * computer scientist should know about floating-point arithmetic", Theorem 4).
 */
#ifndef FL_SCALAR_MATH_H
#define FL_SCALAR_MATH_H

#include <stdint.h>
#include <math.h> /* INFINITY and NAN only: no libm function is called */
#include <string.h>

static inline uint32_t fl_f2u(float x) { uint32_t u; memcpy(&u, &x, 4); return u; }
static inline float fl_u2f(uint32_t u) { float x; memcpy(&x, &u, 4); return x; }
static inline uint64_t fl_d2u(double x) { uint64_t u; memcpy(&u, &x, 8); return u; }
static inline double fl_u2d(uint64_t u) { double x; memcpy(&x, &u, 8); return x; }

/* round to nearest even without libm: adding 1.5 * 2^23 (2^52) pushes the fraction bits out.
 * Valid for |x| < 2^22 (2^51), far beyond the clamped exp arguments. Needs strict IEEE
 * evaluation: this project never builds with -ffast-math. */
static inline float fl_rintf(float x) { return (x + 12582912.0f) - 12582912.0f; }
static inline double fl_rint(double x) { return (x + 6755399441055744.0) - 6755399441055744.0; }

#define FL_LOG2E_F 1.44269504088896341f
#define FL_LN2_HI_F 0.693359375f
#define FL_LN2_LO_F -2.12194440e-4f
#define FL_EXPF_HI 88.7228394f   /* above: +inf */
#define FL_EXPF_LO -103.972084f  /* below: 0 */

/* The losses' exponential (flv_exp_neg_fast): the same reduction with a degree-5 polynomial
 * 1 + c1 r + ... + c5 r^5, minimax coefficients of ARM's optimized-routines expf. 1.95 ULP at
 * worst with fused multiply-adds (exhaustive test) against 1.01 for the degree-7 one, and four
 * vector operations fewer: for the sums of the cross-entropy, held to a relative tolerance,
 * never for an output bounded in ULP. */
/* down to here the exponentials are normal floats (n >= -124 in the reduction), so
 * flv_exp_neg_normal and flv_exp_neg_fast_normal need no clamp and no subnormal handling */
#define FL_EXPF_NORMAL_LO -86.0f
/* The gap: x - m in [FL_EXPF_GAP_MID - FL_EXPF_GAP_HALF, FL_EXPF_GAP_MID + FL_EXPF_GAP_HALF]
 * = [-104.001, -85.999], between the normal range and the logits whose exponential is below
 * 2^-150 (0 in float32, correctly rounded, and what flv_exp_neg(_fast) return: masked logits,
 * -inf). The masked exponentials (flv_exp_*_masked) give the normal path's bits above it and 0
 * below it without the clamp and subnormal handling, and report lanes inside it, whose
 * subnormal results only the general path gives. */
#define FL_EXPF_GAP_MID -95.0f
#define FL_EXPF_GAP_HALF 9.001f
#define FL_EXPF5_C1 0x1.ffffecp-1f
#define FL_EXPF5_C2 0x1.fffdb6p-2f
#define FL_EXPF5_C3 0x1.555e66p-3f
#define FL_EXPF5_C4 0x1.573e2ep-5f
#define FL_EXPF5_C5 0x1.0e4020p-7f

/* p * 2^n for integral n in [-150, 128], as two exponent-field multiplications whose halves
 * are both normal */
static inline float fl_scale2f_s(float p, float n)
{
    int32_t ni = (int32_t)n;
    int32_t n1 = ni / 2;
    int32_t n2 = ni - n1;
    float s1 = fl_u2f((uint32_t)(n1 + 127) << 23);
    float s2 = fl_u2f((uint32_t)(n2 + 127) << 23);
    return (p * s1) * s2;
}

static inline float fl_expf_s(float x)
{
    /* clamp keeps n in range; the limits themselves map to inf and 0 through the scale */
    float xc = x > FL_EXPF_HI ? 89.0f : x;
    xc = xc < FL_EXPF_LO ? -104.0f : xc;
    float n = fl_rintf(xc * FL_LOG2E_F);
    float r = xc - n * FL_LN2_HI_F;
    r = r - n * FL_LN2_LO_F;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    float y = fl_scale2f_s(p, n);
    return x != x ? x : y; /* nan stays nan (the clamps above would have eaten it) */
}

/* exp(r) by the degree-5 polynomial of FL_EXPF5_C1..C5. Without fused multiply-adds
 * (portable C) the float32 polynomial would round twice a step (2.12 ULP), so it is evaluated
 * in double and rounded once. */
static inline float fl_expf5_poly_s(float r)
{
    double rd = (double)r, q = (double)FL_EXPF5_C5;
    q = q * rd + (double)FL_EXPF5_C4;
    q = q * rd + (double)FL_EXPF5_C3;
    q = q * rd + (double)FL_EXPF5_C2;
    q = q * rd + (double)FL_EXPF5_C1;
    return (float)(q * rd + 1.0);
}

/* fl_expf_s with the degree-5 polynomial of FL_EXPF5_C1..C5, for x <= 0 or nan */
static inline float fl_expf_fast_s(float x)
{
    float xc = x < FL_EXPF_LO ? -104.0f : x;
    float n = fl_rintf(xc * FL_LOG2E_F);
    float r = xc - n * FL_LN2_HI_F;
    r = r - n * FL_LN2_LO_F;
    float y = fl_scale2f_s(fl_expf5_poly_s(r), n);
    return x != x ? x : y;
}

/* The rows' exact-reduction exponentials: exp(x) * 2^-sn for an integer-valued sn, by
 * fl_expf_s's reduction and polynomial (fast: fl_expf_fast_s's) applied to x itself, the power
 * of two joined to 2^n exactly. A row with max m shifts by sn = round(m * log2(e)) instead of
 * computing x - m, whose rounding error (|x - m| * 2^-24 relative in the exponential) needed a
 * TwoSum correction: here nothing is rounded before the polynomial but r, as in exp itself.
 * For |x| <= FL_EXPF_SHIFT_XMAX, where the Cody-Waite split of ln2 stays exact to 2^-29 (n up
 * to 217), and x * log2(e) - sn in [-125, 1]: a normal result, within the exponential's own
 * error of exp(x) * 2^-sn (tested exhaustively over x in [-150, 64] in csrc/tests/test_math.c). */
#define FL_EXPF_SHIFT_XMAX 150.0f
static inline float fl_expf_shift_s(float x, float sn)
{
    float n = fl_rintf(x * FL_LOG2E_F);
    float r = x - n * FL_LN2_HI_F;
    r = r - n * FL_LN2_LO_F;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    return fl_scale2f_s(p, n - sn);
}

static inline float fl_expf_fast_shift_s(float x, float sn)
{
    float n = fl_rintf(x * FL_LOG2E_F);
    float r = x - n * FL_LN2_HI_F;
    r = r - n * FL_LN2_LO_F;
    return fl_scale2f_s(fl_expf5_poly_s(r), n - sn);
}

#define FL_LOG2E_D 1.4426950408889634074
#define FL_LN2_HI_D 6.93147180369123816490e-01
#define FL_LN2_LO_D 1.90821492927058770002e-10
#define FL_EXP_HI 709.782712893384 /* above: +inf */
#define FL_EXP_LO -745.1332191019412 /* below: 0 */

/* exp(x + dx) for a correction |dx| of the order of ulp(x) (the rounding error of a shift
 * x = a - b): exp(r)(1 + dx) = 1 + r + a + dx*exp(r) with a = r^2 P(r), so dx joins the small
 * term a before r and 1 are added, and the result takes no rounding more than exp(x) does
 * (exp(x)*(1 + dx) rounded separately cost up to half an ULP more). fl_exp_d(x) is
 * fl_exp_dx_d(x, 0), bit for bit. */
static inline double fl_exp_dx_d(double x, double dx)
{
    double xc = x > FL_EXP_HI ? 710.0 : x;
    xc = xc < FL_EXP_LO ? -746.0 : xc;
    /* a clamped x (result 0 or inf) takes no correction: there dx may be as large as the
     * rounding error of a shift of 1e30-sized values, and it would turn the 0 into garbage */
    dx = xc == x ? dx : 0.0;
    double n = fl_rint(xc * FL_LOG2E_D);
    double r = (xc - n * FL_LN2_HI_D) - n * FL_LN2_LO_D;
    double p = 1.0 / 6227020800.0;             /* 1/13! */
    p = p * r + 1.0 / 479001600.0;             /* 1/12! */
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    double a = p * (r * r);
    p = ((a + dx * ((a + r) + 1.0)) + r) + 1.0;
    /* 2^n = 2^n1 * 2^n2 with both halves normal, built from the bits of 2^52 + (k + 1023) (a
     * double's low bits hold a small integer k there) rather than an int64 conversion, which
     * AVX2 lacks: loops over lanes of this function then vectorise. p * 2^n1 is normal, so the
     * product is rounded once whatever the split: the same bits as any other split. */
    double n1 = fl_rint(n * 0.5), n2 = n - n1;
    double s1 = fl_u2d((fl_d2u(n1 + (4503599627370496.0 + 1023.0)) & 0x7ffull) << 52);
    double s2 = fl_u2d((fl_d2u(n2 + (4503599627370496.0 + 1023.0)) & 0x7ffull) << 52);
    double y = (p * s1) * s2;
    return x != x ? x : y;
}

static inline double fl_exp_d(double x) { return fl_exp_dx_d(x, 0.0); }

#define FL_SQRTH_F 0.70710678118654752440f
/* log(1 + t) = t - t^2/2 + t^3 * P(t), P of degree 8 (Cephes logf): the vector paths use the
 * same coefficients */
#define FL_LOGF_P0 3.3333331174e-1f
#define FL_LOGF_P1 -2.4999993993e-1f
#define FL_LOGF_P2 2.0000714765e-1f
#define FL_LOGF_P3 -1.6668057665e-1f
#define FL_LOGF_P4 1.4249322787e-1f
#define FL_LOGF_P5 -1.2420140846e-1f
#define FL_LOGF_P6 1.1676998740e-1f
#define FL_LOGF_P7 -1.1514610310e-1f
#define FL_LOGF_P8 7.0376836292e-2f

/* log(x) + c, |c| tiny against the result: c = 0 for log, log1p folds its rounding
 * correction in there so it is added to the low-order part before the final roundings. */
static inline float fl_logf_core_s(float x, float c)
{
    /* subnormals: scale up by 2^23 first */
    int sub = x < 1.17549435e-38f;
    float xs = sub ? x * 8388608.0f : x;
    uint32_t u = fl_f2u(xs);
    int32_t e = (int32_t)((u >> 23) & 0xff) - 126;
    float m = fl_u2f((u & 0x007fffffu) | 0x3f000000u); /* m in [0.5, 1) */
    int small = m < FL_SQRTH_F;
    e = small ? e - 1 : e;
    m = small ? m + m : m;
    float t = m - 1.0f;
    float z = t * t;
    float p = FL_LOGF_P8;
    p = p * t + FL_LOGF_P7;
    p = p * t + FL_LOGF_P6;
    p = p * t + FL_LOGF_P5;
    p = p * t + FL_LOGF_P4;
    p = p * t + FL_LOGF_P3;
    p = p * t + FL_LOGF_P2;
    p = p * t + FL_LOGF_P1;
    p = p * t + FL_LOGF_P0;
    float fe = (float)e - (sub ? 23.0f : 0.0f);
    float y = p * t * z;
    y = y + (fe * -2.12194440e-4f + c);
    y = y - 0.5f * z;
    y = t + y;
    y = y + fe * 0.693359375f;
    y = x == 0.0f ? -INFINITY : y;
    y = x < 0.0f ? NAN : y;
    y = x == INFINITY ? x : y;
    return x != x ? x : y;
}

static inline float fl_logf_s(float x) { return fl_logf_core_s(x, 0.0f); }

static inline float fl_log1pf_s(float x)
{
    float u = 1.0f + x;
    /* log(1 + x) = log(u) + log(1 - corr/u) ~ log(u) - corr/u, corr = u - 1 - x exactly */
    float corr = (u - 1.0f) - x;
    float y = fl_logf_core_s(u, -corr / u);
    /* where 1 + x rounds to 1, log1p(x) = x to within rounding */
    y = u == 1.0f ? x : y;
    y = u == 0.0f ? -INFINITY : y; /* x = -1 (corr/u would be 0/0) */
    return x == INFINITY ? x : y;
}

#define FL_SQRTH_D 0.70710678118654752440

/* log(x) + c for x = 2^e * m, |c| tiny against the result (c = 0 for log itself; log1p folds
 * its rounding correction in there). Reduction m in [sqrt(1/2), sqrt(2)), f = m - 1 exact,
 * s = f/(2+f), log(m) = f - (f^2/2 - s*(f^2/2 + R(s^2))) with R the minimax polynomial of
 * fdlibm's e_log.c (Sun Microsystems, 1993; |error of R| < 2^-58.45): below 1 ulp. */
static inline double fl_log_core_d(double x, double c)
{
    int sub = x < 2.2250738585072014e-308;
    double xs = sub ? x * 18014398509481984.0 : x; /* 2^54 */
    uint64_t u = fl_d2u(xs);
    /* the exponent as a double through the bits of 2^52 + e, not an int64 conversion: every
     * step is then a 64-bit lane operation AVX2 has (it has no int64 -> double conversion), so
     * loops over lanes of this function vectorise there too (logsumexp 65536x2: the lanes'
     * logarithms ran one by one). The same value. */
    double ef = fl_u2d(0x4330000000000000ull | ((u >> 52) & 0x7ffull)) - (4503599627370496.0 + 1022.0);
    double m = fl_u2d((u & 0x000fffffffffffffull) | 0x3fe0000000000000ull); /* [0.5, 1) */
    int small = m < FL_SQRTH_D;
    ef = small ? ef - 1.0 : ef;
    m = small ? m + m : m;
    double f = m - 1.0;
    double s = f / (2.0 + f);
    double z = s * s;
    double w = z * z;
    double t1 = w * (3.999999999940941908e-01 + w * (2.222219843214978396e-01 + w * 1.531383769920937332e-01));
    double t2 = z * (6.666666666666735130e-01 + w * (2.857142874366239149e-01 +
                     w * (1.818357216161805012e-01 + w * 1.479819860511658591e-01)));
    double r = t2 + t1;
    double hfsq = 0.5 * f * f;
    double fe = ef - (sub ? 54.0 : 0.0);
    double y = fe * FL_LN2_HI_D - ((hfsq - (s * (hfsq + r) + (fe * FL_LN2_LO_D + c))) - f);
    y = x == 0.0 ? -(double)INFINITY : y;
    y = x < 0.0 ? (double)NAN : y;
    y = x == (double)INFINITY ? x : y;
    return x != x ? x : y;
}

static inline double fl_log_d(double x) { return fl_log_core_d(x, 0.0); }

static inline double fl_log1p_d(double x)
{
    double u = 1.0 + x;
    /* log(1 + x) = log(u) + log(1 - corr/u) ~ log(u) - corr/u, corr = u - 1 - x exactly */
    double corr = (u - 1.0) - x;
    double y = fl_log_core_d(u, -corr / u);
    y = u == 1.0 ? x : y;       /* 1 + x rounds to 1: log1p(x) = x to within rounding */
    y = u == 0.0 ? -(double)INFINITY : y; /* x = -1 (corr/u would be 0/0) */
    return x == (double)INFINITY ? x : y;
}

#endif
