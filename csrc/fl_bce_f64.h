/* fl_bce_f64.h: the binary losses of float64 logits, element by element (fl_bce.c includes it
 * after its context): the formulas of fl_bce.c's note in double, written branch-free so that
 * each ISA build vectorises the loops. A loss or gradient built from a factor below about
 * 2^-300 is computed scaled by 2^512 and rounded to the subnormal grid once (fl_pow_scaled_d).
 * The losses of a piece are returned in a row (the caller's loss row or scratch); their sum,
 * when the caller wants one, is taken in a fixed order in compensated lanes (fl_piece_sum_f64).
 * Compiled once per ISA.
 */
#ifndef FL_BCE_F64_H
#define FL_BCE_F64_H

#include <math.h>
#include <stdint.h>
#include "fl_rowmath_f64.h"
#include "fl_scalar_math.h"

static inline double fl_mul0_d(double a, double b) { double p = a * b; return p == p ? p : 0.0; }

static inline double fl_softplus2_d(double x, double a, double b, double L)
{
    double rn = x < 0.0 ? -x : 0.0, rp = x > 0.0 ? x : 0.0;
    return (fl_mul0_d(a, rn) + fl_mul0_d(b, rp)) + (a + b) * L;
}

/* q^gamma scaled by 2^512 where it is below about 2^-300 (*down = 2^-512 then, else 1): a loss
 * or gradient built from a factor that small can fall below the normal range, where each of
 * its products would round to the subnormal grid; scaled, the result is rounded there once,
 * by the final multiplication by *down (the fuzz harness found a loss 1 subnormal unit off). */
static inline double fl_pow_scaled_d(double q, int mode, double gamma, double *down)
{
    int small;
    double m;
    switch (mode) {
    case FL_POW_ONE:
        small = 0;
        m = 1.0;
        break;
    case FL_POW_ID:
        small = q < 0x1p-300;
        m = small ? q * 0x1p512 : q;
        break;
    case FL_POW_SQ:
        small = q < 0x1p-150;
        m = small ? (q * 0x1p256) * (q * 0x1p256) : q * q;
        break;
    default: {
        /* 2^-300 = e^-207.9; the shift's rounding, at most ulp(355) = 6e-14 relative, is
         * no larger than the rounding of gamma*log q that far out */
        double lq = gamma * fl_log_d(q);
        small = lq < -208.0;
        m = fl_exp_d(small ? lq + 512.0 * FL_LN2_HI_D + 512.0 * FL_LN2_LO_D : lq);
    }
    }
    *down = small ? 0x1p-512 : 1.0;
    return m;
}

/* the float64 twin of fl_lanes_t, element by element (each ISA build vectorises the loops);
 * l receives the losses (a scratch row when the caller does not keep them) */
static void fl_elems_f64(const fl_bce_ctx *c, const double *x, const double *y, const double *w,
                           const double *pw, double *l, double *g, int64_t n)
{
    double scale = c->o.grad_scale, alpha = c->o.alpha, gamma = c->o.gamma;
    int use_alpha = alpha >= 0.0, mode = c->pow_mode;
    if (c->o.kind == FL_LOSS_BCE) {
        for (int64_t k = 0; k < n; k++) {
            double xk = x[k], yk = y[k], wk = w ? w[k] : 1.0, pk = pw ? pw[k] : 1.0;
            double t = fl_exp_d(-fabs(xk));
            double yc = 1.0 - yk;
            double a = pk * yk == 0.0 ? 0.0 : (wk * pk) * yk, b = yc == 0.0 ? 0.0 : wk * yc; /* see fl_vcoef */
            l[k] = fl_softplus2_d(xk, a, b, fl_log1p_d(t));
            if (g) {
                double r = 1.0 / (1.0 + t), tr = t * r;
                double sp = xk < 0.0 ? tr : r, sn = xk < 0.0 ? r : tr;
                g[k] = (b * sp - a * sn) * scale;
            }
        }
    } else {
        for (int64_t k = 0; k < n; k++) {
            double xk = x[k], yk = y[k], yc = 1.0 - yk;
            double t = fl_exp_d(-fabs(xk));
            double ce = fl_softplus2_d(xk, yk, yc, fl_log1p_d(t));
            double r = 1.0 / (1.0 + t), tr = t * r;
            double sp = xk < 0.0 ? tr : r, sn = xk < 0.0 ? r : tr;
            double q = sp * yc + sn * yk, down;
            double mod = fl_pow_scaled_d(q, mode, gamma, &down);
            double at = use_alpha ? alpha * yk + (1.0 - alpha) * yc : 1.0;
            /* a small ce is scaled up too, for the same reason: down becomes 2^-1024 (exact) */
            int ce_small = ce < 0x1p-600;
            double ce_s = ce_small ? ce * 0x1p512 : ce, ldown = ce_small ? down * 0x1p-512 : down;
            l[k] = (at * (ce_s * mod)) * ldown;
            if (g) {
                double dce = sp * yc - yk * sn;
                double t2 = ((gamma * ce) * mod) * ((sp * sn / q) * (yc - yk));
                t2 = t2 == t2 ? t2 : 0.0;
                g[k] = ((at * (mod * dce + t2)) * scale) * down;
            }
        }
    }
}

/* the sum of a piece's n losses in a fixed order: eight compensated lanes (plain running sums
 * lost up to 700 ULP over a million elements each within 0.5 ULP) */
static double fl_piece_sum_f64(const double *l, int64_t n)
{
    fl_csum8 acc = {{0}, {0}};
    for (int64_t k = 0; k < n; k++) fl_csum8_add(&acc, (int)(k & 7), l[k]);
    double total = fl_csum8_total(&acc);
    if (isfinite(total)) return total;
    /* an infinite loss (x = +-inf) or a nan: the compensation holds inf - inf, the plain sum
     * the right value */
    total = 0.0;
    for (int64_t k = 0; k < n; k++) total += l[k];
    return total;
}

#endif
