/* fl_ce_f64.h: cross-entropy rows of float64 logits (fl_ce.c includes it after fl_ce_core.h).
 *
 * Two passes from cache: the max, then the exponentials of the shifts carried with their
 * rounding error (fl_exp_sub_d), summed as n_max + rest like the float32 rows (the entries
 * equal to the max count exactly 1 each; rest in the compensated lanes of fl_rowmath_f64.h) and
 * stored into the gradient row when one is wanted, which pass 2 then scales in place.
 * Compiled once per ISA.
 */
#ifndef FL_CE_F64_H
#define FL_CE_F64_H

#include "fl_ce_core.h"
#include "fl_rowmath_f64.h"

static double fl_ce_wshift_f64(const double *x, const double *w, int64_t c, double m)
{
    double acc[4] = {0, 0, 0, 0};
    for (int64_t k = 0; k < c; k++) {
        double wk = w ? w[k] : 1.0;
        acc[k & 3] += wk != 0.0 ? wk * (x[k] - m) : 0.0;
    }
    return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

static fl_ce_row fl_ce_index_f64(const fl_ce_ctx *ctx, int64_t i0, int64_t i1, int64_t y, double s, double *scratch)
{
    const fl_ce_args *a = ctx->a;
    int64_t c = ctx->g.c;
    const double *x = fl_row_in_f64(&a->x, fl_row_ptr(&a->x, i0, i1), c, scratch);
    char *grow = a->grad.data ? fl_row_ptr(&a->grad, i0, i1) : NULL;
    double *g = grow ? fl_row_dst_f64(&a->grad, grow, scratch + c) : NULL;
    double m = fl_rmax_f64(x, c);
    if (!isfinite(m)) return fl_ce_bad_row(ctx, i0, i1, scratch);
    double wy = a->weight ? a->weight[y] : 1.0;
    double xy = x[y] - m;
    double sw = a->label_smoothing > 0.0 ? fl_ce_wshift_f64(x, a->weight, c, m) : 0.0;
    double n_max, rest = fl_rsumexp_f64(x, c, m, g, &n_max, NULL);
    fl_ce_sum S = fl_ce_make_sum(n_max, rest);
    double lse = m + S.logS;
    fl_ce_row r = fl_ce_index_loss(ctx, s, wy, xy, S, sw, lse);
    if (g) {
        double alpha, beta, gy;
        fl_ce_index_coefs(ctx, s, wy, g[y], xy, S, lse, &alpha, &beta, &gy);
        const double *w = a->weight;
        if (beta == 0.0)
            for (int64_t k = 0; k < c; k++) g[k] *= alpha;
        else if (!w)
            for (int64_t k = 0; k < c; k++) g[k] = alpha * g[k] - beta;
        else
            for (int64_t k = 0; k < c; k++) g[k] = alpha * g[k] - beta * w[k];
        g[y] = gy;
        fl_row_out_f64(&a->grad, grow, c, g);
    }
    return r;
}

static fl_ce_row fl_ce_prob_f64(const fl_ce_ctx *ctx, int64_t i0, int64_t i1, double s, double *scratch)
{
    const fl_ce_args *a = ctx->a;
    int64_t c = ctx->g.c;
    const double *x = fl_row_in_f64(&a->x, fl_row_ptr(&a->x, i0, i1), c, scratch);
    const double *t = fl_row_in_f64(&a->target, fl_row_ptr(&a->target, i0, i1), c, scratch + 2 * c);
    char *grow = a->grad.data ? fl_row_ptr(&a->grad, i0, i1) : NULL;
    double *g = grow ? fl_row_dst_f64(&a->grad, grow, scratch + c) : NULL;
    double m = fl_rmax_f64(x, c);
    if (!isfinite(m)) return fl_ce_bad_row(ctx, i0, i1, scratch);
    const double *w = a->weight;
    double eps = a->label_smoothing, keep = 1.0 - eps, k = eps / (double)c;
    /* compensated: plain running sums were 300 ULP off on a 70000-class row. D is -inf when a
     * positive probability sits on a -inf logit: the plain sum keeps that value, the
     * compensation would turn it into nan. */
    fl_csum8 st = {{0}, {0}}, sd = {{0}, {0}};
    double plain_d = 0.0;
    for (int64_t j = 0; j < c; j++) {
        double wt = (keep * t[j] + k) * (w ? w[j] : 1.0);
        double dj = wt != 0.0 ? wt * (x[j] - m) : 0.0;
        fl_csum8_add(&st, (int)(j & 7), wt);
        fl_csum8_add(&sd, (int)(j & 7), dj);
        plain_d += dj;
    }
    double T = fl_csum8_total(&st), D = isfinite(plain_d) ? fl_csum8_total(&sd) : plain_d;
    double n_max, rest = fl_rsumexp_f64(x, c, m, g, &n_max, NULL);
    fl_ce_sum S = fl_ce_make_sum(n_max, rest);
    double lse = m + S.logS;
    fl_ce_row r = {s * (T * S.logS - D), fl_ce_zterm(a, s, lse)};
    if (g) {
        double beta = s * a->grad_scale_ce, alpha = (beta * T + fl_ce_zcoef(a, s, lse)) / S.S;
        for (int64_t j = 0; j < c; j++) g[j] = alpha * g[j] - beta * ((keep * t[j] + k) * (w ? w[j] : 1.0));
        fl_row_out_f64(&a->grad, grow, c, g);
    }
    return r;
}

#endif
