/* fl_reduce.c: logsumexp and entropy, the row reductions of the softmax family. Compiled once
 * per ISA; every exported symbol is FL_FN(name).
 *
 * A row's max, then its sum of exponentials split as n_eq + rest (the entries equal to the
 * max apart), so log(sum) = log1p((n_eq - 1) + rest) stays accurate for peaked rows; rows whose
 * logsumexp cancels (|m + log s| small) are redone in double (float32 rows) or double-double
 * (float64 rows). The entropy is log s - sum p_k (x_k - m) / s from shifted values, so rows of
 * ties do not cancel. Rows of few classes go FL_W at a time in the lanes (fl_tile.h). */
#include <math.h>
#include <stdlib.h>

#include "fastlogits.h"
#include "fl_dd.h"
#include "fl_kernels.h"
#include "fl_postdrv.h"
#include "fl_rowmath_f64.h"

/* ---------------- logsumexp and entropy ---------------- */

/* logsumexp and entropy of one row from its max m, the parts n_eq + rest of the sum s of
 * exp(x - m) and, for the entropy, dot = sum p_k (x_k - m) with p_k = exp(x_k - m):
 * H = log s - dot/s. */
static double fl_reduce_finish(int what, double m, double n_eq, double rest, double dot)
{
    double log_s = fl_log_sum(n_eq, rest);
    if (what == FL_LOGSUMEXP) return m + log_s;
    return log_s - dot / (n_eq + rest);
}

/* A row whose max is not finite. logsumexp: -inf (empty or all -inf), +inf, or NaN. entropy:
 * 0 for an empty row (a sum of nothing), NaN otherwise (the softmax is NaN). */
static double fl_reduce_special(int what, double m, int64_t c)
{
    if (what == FL_LOGSUMEXP) return m;
    return c == 0 ? 0.0 : NAN;
}

/* The entropy of a float32 row in double throughout: for results below 1e-30, where the
 * float32 exponentials of the small terms are subnormal and too coarse. */
FL_ALWAYS_INLINE double fl_entropy_precise_t(const void *x, int64_t n, float m, int32_t dt)
{
    fl_csum8 rest = {{0}, {0}}, dot = {{0}, {0}};
    int64_t cnt = 0;
    for (int64_t k = 0; k < n; k++) {
        float xk = fl_xget(x, k, dt);
        if (xk >= m) {
            cnt++;
        } else if (xk > -INFINITY) {
            double d = (double)xk - (double)m, e = fl_exp_d(d);
            fl_csum8_add(&rest, (int)(k & 7), e);
            fl_csum8_add(&dot, (int)(k & 7), e * d);
        }
    }
    double r = fl_csum8_total(&rest);
    return fl_log_sum((double)cnt, r) - fl_csum8_total(&dot) / ((double)cnt + r);
}

static void fl_reduce_row(fl_post_ctx *ctx, int64_t i0, int64_t i1, void *scratch)
{
    int64_t c = ctx->g.c;
    const char *xrow = fl_row_ptr(ctx->x, i0, i1);
    double v;
    if (!ctx->f64) {
        float *bx = (float *)scratch, *bp = bx + c;
        fl_xrow x = fl_row_in_x(ctx->x, xrow, c, bx);
        float lo, m = fl_x_dispatch(x.dt, fl_rmaxmin_t, x.p, c, &lo);
        fl_ahead ahead = fl_post_ahead(ctx, xrow, NULL);
        if (!isfinite(m)) {
            v = fl_reduce_special(ctx->op, m, c);
        } else {
            int ent = ctx->op == FL_ENTROPY;
            float *e = ent ? bp : NULL;
            if (!ent && fl_shift_ok(m, lo)) {
                /* the cheaper sums first: their rest is within FL_FAST_REST_ERR * 2^-24 (relative),
                 * which moves log S by at most that times rest/S; where this is below 3 * 2^-24 *
                 * |v| (under 3 ULP of the float32 result, 3.5 with its rounding) it stands, else
                 * the precise sums below redo the row */
                double n_eq, rest = fl_x_dispatch(x.dt, fl_rsumexp_fast_shift_t, x.p, c, m, &n_eq, ahead);
                v = fl_reduce_finish(ctx->op, m, n_eq, rest, 0.0);
                if (FL_FAST_REST_ERR * rest <= 3.0 * fabs(v) * (n_eq + rest)) {
                    fl_put_scalar(ctx->y, i0, i1, v);
                    return;
                }
            }
            /* the exponentials in bp carry the factor scale of fl_rsumexp_shift_t (1 on the
             * TwoSum paths), which the entropy's dot product divides out */
            double n_eq, scale = 1.0, rest = fl_shift_ok(m, lo) ? fl_x_dispatch(x.dt, fl_rsumexp_shift_t, x.p, c, m, e, &n_eq, &scale, ahead)
                                           : lo >= m + FL_EXPF_NORMAL_LO
                                           ? fl_x_dispatch(x.dt, fl_rsumexp_t, x.p, c, m, e, &n_eq, 1, ahead, 1)
                                           : fl_x_dispatch(x.dt, fl_rsumexp_t, x.p, c, m, e, &n_eq, 1, ahead, 0);
            double dot = ent ? fl_x_dispatch(x.dt, fl_rdot_shift_t, x.p, bp, c, m) / scale : 0.0;
            v = fl_reduce_finish(ctx->op, m, n_eq, rest, dot);
            /* the float32 exponentials leave log s off by up to about 2^-22 * rest/s: where
             * that is not small against the logsumexp (|v| < rest/s, m and log s cancelled),
             * redo the sum in double */
            if (!ent && fabs(v) < rest / (n_eq + rest)) {
                rest = fl_x_dispatch(x.dt, fl_rsumexp_precise_t, x.p, c, m, &n_eq);
                v = fl_reduce_finish(ctx->op, m, n_eq, rest, 0.0);
            }
            if (ent && v < 1e-30) v = fl_x_dispatch(x.dt, fl_entropy_precise_t, x.p, c, m);
        }
    } else {
        double *bx = (double *)scratch, *bp = bx + c;
        const double *x = fl_row_in_f64(ctx->x, xrow, c, bx);
        double m = fl_rmax_f64(x, c);
        if (!isfinite(m)) {
            v = fl_reduce_special(ctx->op, m, c);
        } else {
            int ent = ctx->op == FL_ENTROPY;
            double n_eq, rest = fl_rsumexp_f64(x, c, m, ent ? bp : NULL, &n_eq, NULL);
            v = fl_reduce_finish(ctx->op, m, n_eq, rest, ent ? fl_rdot_shift_f64(x, bp, c, m) : 0.0);
            /* m and log s cancelled by more than a third: double cannot hold the 4 ULP bound
             * there, so redo the row in double-double */
            if (!ent && 1.5 * fabs(v) < fabs(m) + fl_log_sum(n_eq, rest)) v = fl_dd_logsumexp(x, c, m);
        }
    }
    fl_put_scalar(ctx->y, i0, i1, v);
}

/* the results of a tile's nr rows: one vector store where the output is float32 with unit
 * stride along the rows (one value a row, no dtype dispatch: a tenth of logsumexp 65536x2's
 * instructions went to the per-row stores), else row by row */
static void fl_put_tile(const fl_arr *y, int64_t i0, int64_t i1, int64_t nr, const double *v)
{
    if (y->dtype == FL_F32 && y->s1 == 1) {
        float f[FL_W];
        for (int j = 0; j < FL_W; j++) f[j] = (float)v[j];
        flv_store_part((float *)(void *)fl_row_ptr(y, i0, i1), flv_load(f), nr);
        return;
    }
    for (int64_t j = 0; j < nr; j++) fl_put_scalar(y, i0, i1 + j, v[j]);
}

/* logsumexp of a tile, as fl_reduce_row, including its double-precision sum for the rows whose
 * result cancels (|v| < 1), taken from the tile's copy of the row */
static int fl_logsumexp_tile(fl_post_ctx *ctx, int64_t i0, int64_t i1, int64_t nr, const fl_post_tiles *t, void *scratch)
{
    (void)scratch;
    int64_t c = ctx->g.c;
    flv m;
    float n_eq[FL_W], mv[FL_W];
    double rest[FL_W];
    if (!fl_tile_sums(ctx, i0, i1, nr, t, 0, &m, n_eq, rest)) return 0;
    double ls[FL_W];
    flv_store(mv, m);
    /* fl_reduce_finish's log(S) for all lanes in one loop the compiler can vectorise */
    for (int64_t j = 0; j < FL_W; j++) ls[j] = fl_log_sum((double)n_eq[j], rest[j]);
    /* lanes whose logsumexp cancelled (|v| < rest/s, as in fl_reduce_row) take the double sums */
    int redo[FL_W], cancelled = 0;
    for (int64_t j = 0; j < nr; j++) {
        redo[j] = fabs((double)mv[j] + ls[j]) < rest[j] / ((double)n_eq[j] + rest[j]);
        cancelled |= redo[j];
    }
    double pne[FL_W], prest[FL_W], pls[FL_W];
    if (cancelled) {
        fl_tile_sumexp_precise(t->xt, c, mv, pne, prest);
        for (int64_t j = 0; j < FL_W; j++) pls[j] = fl_log_sum(pne[j], prest[j]);
    }
    double v[FL_W];
    for (int64_t j = 0; j < FL_W; j++) v[j] = j < nr && redo[j] ? (double)mv[j] + pls[j] : (double)mv[j] + ls[j];
    fl_put_tile(ctx->y, i0, i1, nr, v);
    return 1;
}

/* Entropy of FL_W rows in the lanes: the sums of fl_tile_sums (exponentials kept), then
 * dot = sum_k e_k * (x_k - m) in double lane by lane, as fl_reduce_row. A lane whose entropy
 * is below 1e-30 is redone from its row as there (float32 products lose it). */
static int fl_entropy_tile(fl_post_ctx *ctx, int64_t i0, int64_t i1, int64_t nr, const fl_post_tiles *t, void *scratch)
{
    int64_t c = ctx->g.c;
    flv m;
    float n_eq[FL_W], mv[FL_W];
    double rest[FL_W], dot[FL_W], v[FL_W];
    if (!fl_tile_sums(ctx, i0, i1, nr, t, 1, &m, n_eq, rest)) return 0;
    flv_store(mv, m);
    for (int j = 0; j < FL_W; j++) dot[j] = 0.0;
    for (int64_t k = 0; k < c; k++) {
        const float *xk = t->xt + k * FL_W, *ek = t->yt + k * FL_W;
        for (int j = 0; j < FL_W; j++) dot[j] += (double)ek[j] * fl_clamp_shift_d((double)xk[j] - (double)mv[j]);
    }
    for (int j = 0; j < FL_W; j++) v[j] = fl_log_sum((double)n_eq[j], rest[j]) - dot[j] / ((double)n_eq[j] + rest[j]);
    for (int64_t j = 0; j < nr; j++) {
        if (v[j] < 1e-30) {
            float *row = (float *)scratch;
            for (int64_t k = 0; k < c; k++) row[k] = t->xt[k * FL_W + j];
            v[j] = fl_entropy_precise_t(row, c, mv[j], FL_F32);
        }
    }
    fl_put_tile(ctx->y, i0, i1, nr, v);
    return 1;
}

static void fl_reduce_task(void *vctx, int64_t b0, int64_t b1)
{
    fl_post_ctx *ctx = (fl_post_ctx *)vctx;
    if (!ctx->f64 && fl_post_lanes_ok(ctx, NULL))
        fl_run_tiles(ctx, b0, b1, fl_scratch2(ctx), fl_reduce_row,
                     ctx->op == FL_LOGSUMEXP ? fl_logsumexp_tile : fl_entropy_tile);
    else
        fl_run_rows(ctx, b0, b1, fl_scratch2(ctx), fl_reduce_row);
}

int FL_FN(row_reduce)(const fl_arr *x, const fl_arr *out, fl_grid g, int what)
{
    fl_post_ctx ctx = {x, out, NULL, g, what, 0, 0.0, x->dtype == FL_F64 || out->dtype == FL_F64, 0, 0, 0};
    return fl_drive(&ctx, fl_reduce_task);
}
