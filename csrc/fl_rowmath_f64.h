/* fl_rowmath_f64.h: row arithmetic in double precision: float64 rows (max, exponentials of
 * the shifts with their rounding error, sums of exponentials, the entropy's dot product), the
 * compensated accumulation in eight lanes they share, and the double-precision sum of a
 * float32 row whose logsumexp cancels.
 *
 * Sums are Neumaier-compensated in eight lanes (fl_csum8) and rounded once at the end: a row
 * sum is a fixed-order function of the row alone, so it is the same for every thread count
 * and chunking. Compiled once per ISA. */
#ifndef FL_ROWMATH_F64_H
#define FL_ROWMATH_F64_H

#include <math.h>
#include <stdint.h>
#include "fl_rowio.h"
#include "fl_dd.h"
#include "fl_scalar_math.h"

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
    return fl_exp_dx_d(s, e);
}

/* Compensated (Neumaier) accumulation in eight lanes, combined pairwise: the sums of double rows. */
typedef struct { double s[8], c[8]; } fl_csum8;

/* Neumaier's step: s += v, the rounding error exactly into c */
static inline void fl_neumaier(double *s, double *c, double v)
{
    double t = *s + v;
    *c += fabs(*s) >= fabs(v) ? (*s - t) + v : (v - t) + *s;
    *s = t;
}

static inline void fl_csum8_add(fl_csum8 *a, int j, double v) { fl_neumaier(&a->s[j], &a->c[j], v); }

/* The sixteen parts through one more compensated sum, rounded once: a pairwise sum of the
 * eight rounded lane totals was up to 1.5 ULP off, which took float64 softmax past its 4 ULP
 * bound (4.1 on a 615-class row, found by the fuzz harness). */
static inline double fl_csum8_total_plus(const fl_csum8 *a, double extra)
{
    double s = extra, c = 0.0;
    for (int j = 0; j < 8; j++) fl_neumaier(&s, &c, a->s[j]);
    for (int j = 0; j < 8; j++) c += a->c[j];
    return s + c;
}

static inline double fl_csum8_total(const fl_csum8 *a) { return fl_csum8_total_plus(a, 0.0); }

/* As fl_rsumexp_t, for double rows; *total (if not NULL) receives n_eq + rest rounded once. */
static inline double fl_rsumexp_f64(const double *x, int64_t n, double m, double *y, double *n_eq, double *total)
{
    fl_csum8 acc = {{0}, {0}};
    int64_t cnt = 0;
    for (int64_t k = 0; k < n; k++) {
        double xk = x[k]; /* read before y[k] is written: y may be x (in place) */
        double e = fl_exp_sub_d(xk, m);
        if (y) y[k] = e;
        cnt += xk >= m;
        fl_csum8_add(&acc, (int)(k & 7), xk < m ? e : 0.0);
    }
    *n_eq = (double)cnt;
    if (total) *total = fl_csum8_total_plus(&acc, *n_eq);
    return fl_csum8_total(&acc);
}

/* As fl_rsumexp_t with double-precision exponentials of the exact differences x_k - m: for
 * float32 rows whose logsumexp cancels (|m + log s| small against the float32 error of s). */
FL_ALWAYS_INLINE double fl_rsumexp_precise_t(const void *x, int64_t n, float m, double *n_eq, int32_t dt)
{
    fl_csum8 acc = {{0}, {0}};
    int64_t cnt = 0;
    for (int64_t k = 0; k < n; k++) {
        float xk = fl_xget(x, k, dt);
        cnt += xk >= m;
        fl_csum8_add(&acc, (int)(k & 7), xk < m ? fl_exp_d((double)xk - (double)m) : 0.0);
    }
    *n_eq = (double)cnt;
    return fl_csum8_total(&acc);
}

/* fl_rdot_shift_t for float64 rows, to the accuracy of the exponentials alone: the shift
 * x_k - m carried with its rounding error (TwoSum), each product with its own (Dekker's
 * product: no fma, which would be a libm call on the scalar path), all added
 * in compensated lanes. A plain sum of rounded products took the float64 entropy of a peaked
 * 200-class row to 4.16 ULP (found by the fuzz harness). Terms with p_k = 0 (-inf logits,
 * underflow) add nothing. */
static inline double fl_rdot_shift_f64(const double *x, const double *p, int64_t n, double m)
{
    fl_csum8 acc = {{0}, {0}};
    for (int64_t k = 0; k < n; k++) {
        if (!(p[k] > 0.0)) continue;
        fl_dd d = fl_dd_two_sum(x[k], -m), prod = fl_dd_two_prod(p[k], d.hi);
        fl_csum8_add(&acc, (int)(k & 7), prod.hi);
        fl_csum8_add(&acc, (int)(k & 7), prod.lo + p[k] * d.lo);
    }
    return fl_csum8_total(&acc);
}

#endif
