/* fl_dd.h: double-double arithmetic (about 106 bits) for the few places where double is not
 * enough: a float64 logsumexp whose result cancels between the row max m and log(sum), where
 * every double-precision algorithm loses the ratio (|m| + log s) / |logsumexp|.
 *
 * Portable C: products are split with Dekker's method (no fma, so no libm call where the CPU
 * lacks FMA), sums use Knuth's TwoSum. References: T. J. Dekker, "A floating-point technique
 * for extending the available precision" (1971); D. E. Knuth, TAOCP vol. 2, 4.2.2.
 * exp is by range reduction to |r| <= ln2/64, a Taylor polynomial of degree 11 and five
 * squarings (relative error about 1e-31); log by one Newton step on exp from a double start.
 */
#ifndef FL_DD_H
#define FL_DD_H

#include <math.h>
#include <stdint.h>
#include "fl_scalar_math.h"

typedef struct { double hi, lo; } fl_dd;

static inline fl_dd fl_dd_two_sum(double a, double b)
{
    double s = a + b, bb = s - a;
    fl_dd r = {s, (a - (s - bb)) + (b - bb)};
    return r;
}

static inline fl_dd fl_dd_fast_two_sum(double a, double b) /* |a| >= |b| */
{
    double s = a + b;
    fl_dd r = {s, b - (s - a)};
    return r;
}

static inline void fl_dd_split(double a, double *hi, double *lo)
{
    double t = 134217729.0 * a; /* 2^27 + 1 */
    *hi = t - (t - a);
    *lo = a - *hi;
}

static inline fl_dd fl_dd_two_prod(double a, double b)
{
    double ah, al, bh, bl, p = a * b;
    fl_dd_split(a, &ah, &al);
    fl_dd_split(b, &bh, &bl);
    fl_dd r = {p, ((ah * bh - p) + ah * bl + al * bh) + al * bl};
    return r;
}

static inline fl_dd fl_dd_add(fl_dd a, fl_dd b)
{
    fl_dd s = fl_dd_two_sum(a.hi, b.hi), t = fl_dd_two_sum(a.lo, b.lo);
    s.lo += t.hi;
    s = fl_dd_fast_two_sum(s.hi, s.lo);
    s.lo += t.lo;
    return fl_dd_fast_two_sum(s.hi, s.lo);
}

static inline fl_dd fl_dd_mul(fl_dd a, fl_dd b)
{
    fl_dd p = fl_dd_two_prod(a.hi, b.hi);
    p.lo += a.hi * b.lo + a.lo * b.hi;
    return fl_dd_fast_two_sum(p.hi, p.lo);
}

static inline fl_dd fl_dd_mul_d(fl_dd a, double b)
{
    fl_dd p = fl_dd_two_prod(a.hi, b);
    p.lo += a.lo * b;
    return fl_dd_fast_two_sum(p.hi, p.lo);
}

static inline fl_dd fl_dd_from(double a) { fl_dd r = {a, 0.0}; return r; }

/* 2^n for an integer n in [-1022, 1023] */
static inline double fl_dd_pow2(int64_t n) { return fl_u2d((uint64_t)(n + 1023) << 52); }

/* exp(a) for a <= 0 (the shifted logits); below -745 it is 0 */
static inline fl_dd fl_dd_exp(fl_dd a)
{
    static const fl_dd ln2 = {6.931471805599452862e-01, 2.319046813846299558e-17};
    if (a.hi < -745.0) return fl_dd_from(0.0);
    double n = fl_rint(a.hi / ln2.hi);
    fl_dd r = fl_dd_add(a, fl_dd_mul_d(ln2, -n)); /* |r| <= ln2/2 */
    r.hi *= 1.0 / 32.0;
    r.lo *= 1.0 / 32.0;
    /* Taylor: 1 + r + r^2/2! + ... + r^11/11!, Horner in double-double */
    static const fl_dd inv_fact[12] = {
        {1.0, 0.0}, {1.0, 0.0},
        {0.5, 0.0},
        {0.16666666666666666, 9.25185853854297e-18},
        {0.041666666666666664, 2.3129646346357427e-18},
        {0.008333333333333333, 1.1564823173178714e-19},
        {0.001388888888888889, -5.300543954373577e-20},
        {0.0001984126984126984, 1.7209558293420705e-22},
        {2.48015873015873e-05, 2.1511947866775882e-23},
        {2.7557319223985893e-06, -1.858393274046472e-22},
        {2.755731922398589e-07, 2.3767714622250297e-23},
        {2.505210838544172e-08, -1.448814070935912e-24},
    };
    fl_dd p = inv_fact[11];
    for (int k = 10; k >= 1; k--) p = fl_dd_add(fl_dd_mul(p, r), inv_fact[k]);
    p = fl_dd_add(fl_dd_mul(p, r), fl_dd_from(1.0));
    for (int i = 0; i < 5; i++) p = fl_dd_mul(p, p);
    /* 2^n in two steps keeps both factors normal down to the subnormal results */
    int64_t ni = (int64_t)n, n1 = ni / 2, n2 = ni - n1;
    double s1 = fl_dd_pow2(n1), s2 = fl_dd_pow2(n2);
    fl_dd y = {p.hi * s1 * s2, p.lo * s1 * s2};
    return y;
}

/* log(s) for s >= 1: one Newton step y + s*exp(-y) - 1 from the double-precision y = log(s) */
static inline fl_dd fl_dd_log(fl_dd s)
{
    double y0 = fl_log_d(s.hi);
    fl_dd t = fl_dd_mul(s, fl_dd_exp(fl_dd_from(-y0)));
    return fl_dd_add(fl_dd_from(y0), fl_dd_add(t, fl_dd_from(-1.0)));
}

/* logsumexp of a double row with finite max m, in double-double, rounded once: for rows where
 * m and log(sum) cancel. The entries equal to m count exactly 1 each; x - m is exact (TwoSum). */
static inline double fl_dd_logsumexp(const double *x, int64_t n, double m)
{
    fl_dd rest = {0.0, 0.0};
    int64_t cnt = 0;
    for (int64_t k = 0; k < n; k++) {
        if (x[k] >= m) cnt++;
        else if (x[k] > -INFINITY) rest = fl_dd_add(rest, fl_dd_exp(fl_dd_two_sum(x[k], -m)));
    }
    fl_dd r = fl_dd_add(fl_dd_from(m), fl_dd_log(fl_dd_add(fl_dd_from((double)cnt), rest)));
    return r.hi + r.lo;
}

#endif
