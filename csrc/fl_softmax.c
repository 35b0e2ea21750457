/* fl_softmax.c: softmax and log_softmax along the class axis, float32 (float16/bfloat16 read
 * in place and written in their own dtype) and float64. Compiled once per ISA; every exported
 * symbol is FL_FN(name).
 *
 * A row is one pass for its max, one for the sum of exponentials (kept in a scratch row, or
 * written to y), one to scale or shift. Outputs of 8 MB and more are streamed: each row is left
 * pending (fl_pend.h) and written with non-temporal stores during the next row's sum, so the
 * stores overlap that row's reads and exponentials. Rows of few classes go FL_W at a time in
 * the lanes (fl_tile.h), with the same formulas. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fastlogits.h"
#include "fl_kernels.h"
#include "fl_postdrv.h"
#include "fl_rowmath_f64.h"

/* ---------------- softmax and log_softmax ---------------- */

/* A softmax row's 1/S, the same in rows and tiles. AVX-512: fl_recip_sum_f (a float32 division
 * and a Newton step, whose lane loops vectorise there: two double divisions a tile were 30% of
 * softmax 65536x2); elsewhere the double quotient rounded once (GCC leaves the Newton step's
 * double lanes scalar on AVX2, slower than its divisions). */
#if FL_ISA == FL_ISA_AVX512
#define FL_SOFTMAX_NEWTON 1
#else
#define FL_SOFTMAX_NEWTON 0
#endif
static inline float fl_softmax_recip(double s)
{
    return FL_SOFTMAX_NEWTON ? fl_recip_sum_f(s) : (float)(1.0 / s);
}

/* Is a log_softmax row's log-sum log1p(rest) (a single max) made of float32 exponentials too
 * small for it? Its largest output is -log1p(rest) ~ -rest, and below 2^-100 the exponentials'
 * rounding in or near the subnormal range (2^-150 each, absolute) is a sizeable part of rest:
 * a row [0, -100 x 63] came out 28 ULP off. Such rows take their rest again from
 * double-precision exponentials (fl_rsumexp_precise_t), in the tiles as in the rows. */
static inline int fl_log_rest_tiny(double n_eq, double rest)
{
    return n_eq == 1.0 && rest < 0x1p-100;
}

/* the rest of fl_log_rest_tiny's lanes of a tile again, as the row path takes it (out of line:
 * inlined, it cost the tiles' lane loops their vectorisation, +30% instructions on 65536x2) */
static FL_NOINLINE void fl_log_tile_rest_precise(const float *xt, int64_t c, int64_t nr, const float *n_eq,
                                                 const float *mf, double *rest, float *row)
{
    for (int64_t j = 0; j < nr; j++) {
        if (!fl_log_rest_tiny((double)n_eq[j], rest[j])) continue;
        double ne;
        for (int64_t k = 0; k < c; k++) row[k] = xt[k * FL_W + j];
        rest[j] = fl_rsumexp_precise_t(row, c, mf[j], &ne, FL_F32);
    }
}

/* A softmax or log_softmax row computed in float32 into y (of dtype ydt: float32, float16 or
 * bfloat16), or, when pend is not NULL, left pending there (y must then be the output row
 * itself, and written by nobody else until drained). Scratch: two rows for the logits and two
 * for the exponentials, so that a new row does not overwrite what the pending one still reads. */
static void fl_softmax_row_f32(fl_post_ctx *ctx, const char *xrow, void *y, int32_t ydt, float *scratch,
                               fl_pend *pend)
{
    int64_t c = ctx->g.c;
    int log_mode = ctx->op == FL_LOG_SOFTMAX;
    const float *held = pend ? pend->src : NULL;
    float *bx = scratch == held ? scratch + c : scratch;
    float *be = scratch + 2 * c == held ? scratch + 3 * c : scratch + 2 * c;
    fl_xrow x = fl_row_in_x(ctx->x, xrow, c, bx);
    float lo, m = fl_x_dispatch(x.dt, fl_rmaxmin_t, x.p, c, &lo);
    fl_ahead ahead = fl_post_ahead(ctx, xrow, pend);
    if (!isfinite(m)) {
        /* all -inf, a +inf (inf - inf) or a NaN: every output is NaN, as in PyTorch */
        fl_pend_drain(pend, c);
        for (int64_t k = 0; k < c; k++) fl_xput(y, k, NAN, ydt);
        return;
    }
    /* the exponentials: in the output row itself when it is float32 and not left pending; they
     * carry the factor c of fl_rsumexp_shift_t (1 on the TwoSum paths), which the softmax's
     * 1/S takes out: it takes the whole sum, scaled the same (no ties apart, scale 1), and
     * log_softmax log S from its parts (the rest divided by c, scale c). */
    float *ey = log_mode ? NULL : pend || ydt != FL_F32 ? be : (float *)y;
    double n_eq = 0.0, scale = 1.0, rest = FL_SUM_GAP;
    int shift = fl_shift_mode(m, lo, c, FL_LANES_MAX_C);
    /* in place, a masked row's shift sums may stop at a logit in the gap (FL_SUM_GAP) after
     * storing exponentials over the logits that the TwoSum path then reads: they go to the
     * scratch row instead (the fuzz harness found such rows' softmax garbage in place) */
    if (shift == FL_EXP_MASKED && (const void *)ey == x.p) ey = be;
    if (shift == FL_EXP_NORMAL)
        rest = log_mode ? fl_x_dispatch(x.dt, fl_rsumexp_shift_t, x.p, c, m, NULL, &n_eq, &scale, NULL, FL_SUM_TIES, ahead)
                        : fl_x_dispatch(x.dt, fl_rsumexp_shift_t, x.p, c, m, ey, &n_eq, &scale, NULL, FL_SUM_STORE, ahead);
    else if (shift == FL_EXP_MASKED)
        rest = log_mode ? fl_x_dispatch(x.dt, fl_rsumexp_shift_t, x.p, c, m, NULL, &n_eq, &scale, NULL,
                                        FL_SUM_TIES | FL_SUM_MASKED, ahead)
                        : fl_x_dispatch(x.dt, fl_rsumexp_shift_t, x.p, c, m, ey, &n_eq, &scale, NULL,
                                        FL_SUM_STORE | FL_SUM_MASKED, ahead);
    if (rest == FL_SUM_GAP) {
        /* the TwoSum path: rows beyond the shift's range, and masked rows with a logit in the gap */
        scale = 1.0;
        if (lo >= m + FL_EXPF_NORMAL_LO)
            rest = fl_x_dispatch(x.dt, fl_rsumexp_t, x.p, c, m, ey, &n_eq, 1, ahead, FL_EXP_NORMAL);
        else
            rest = fl_x_dispatch(x.dt, fl_rsumexp_t, x.p, c, m, ey, &n_eq, 1, ahead, FL_EXP_GENERAL);
    }
    if (log_mode && c > 1 && fl_log_rest_tiny(n_eq, rest))
        rest = fl_x_dispatch(x.dt, fl_rsumexp_precise_t, x.p, c, m, &n_eq);
    float alpha = fl_softmax_recip((n_eq + rest) * scale);
    /* outputs alpha * ey_k may be subnormal where a logit lies more than about 87 - log(1/alpha)
     * below the max (a margin of 1 for the factor scale and the exponential's error): such rows
     * scale by flv_mul_tiny */
    int kind = log_mode ? FL_PEND_SHIFT
               : (double)lo - (double)m + fl_log_d((double)alpha) < -86.0 ? FL_PEND_SCALE_TINY : FL_PEND_SCALE;
    fl_pend p = {y, log_mode ? x.p : ey, NULL, c, 0, -1, kind, alpha, 0.0f, 0.0f, (double)m,
                 log_mode ? fl_log_sum(n_eq, rest) : 0.0, x.dt, ydt};
    if (pend) {
        fl_pend_drain(pend, c);
        *pend = p;
    } else {
        fl_pend_write_plain(&p);
    }
}

static void fl_softmax_row(fl_post_ctx *ctx, int64_t i0, int64_t i1, void *scratch)
{
    int64_t c = ctx->g.c;
    const char *xrow = fl_row_ptr(ctx->x, i0, i1);
    char *yrow = fl_row_ptr(ctx->y, i0, i1);
    int log_mode = ctx->op == FL_LOG_SOFTMAX;
    if (!ctx->f64 && fl_row_is_x(ctx->y)) {
        fl_softmax_row_f32(ctx, xrow, yrow, ctx->y->dtype, (float *)scratch, NULL);
    } else if (!ctx->f64) {
        float *y = (float *)scratch + 4 * c;
        fl_softmax_row_f32(ctx, xrow, y, FL_F32, (float *)scratch, NULL);
        fl_row_out_f32(ctx->y, yrow, c, y);
    } else {
        double *bx = (double *)scratch, *by = bx + c;
        const double *x = fl_row_in_f64(ctx->x, xrow, c, bx);
        double *y = fl_row_dst_f64(ctx->y, yrow, by);
        double m = fl_rmax_f64(x, c);
        if (!isfinite(m)) {
            for (int64_t k = 0; k < c; k++) y[k] = NAN;
        } else if (log_mode) {
            double n_eq, rest = fl_rsumexp_f64(x, c, m, NULL, &n_eq, NULL);
            double ls = fl_log_sum(n_eq, rest);
            for (int64_t k = 0; k < c; k++) y[k] = (x[k] - m) - ls;
        } else {
            /* the error budget of the 4 ULP bound, each step rounded once: the exponential
             * with its shift's error folded in (fl_exp_dx_d, under 1 ULP), the sum n_eq + rest
             * (compensated, 0.5) and a division by it, not a multiplication by a rounded 1/s
             * (0.5). The fuzz harness found 4.01 and 4.1 ULP when two of those were rounded
             * twice. */
            double n_eq, s;
            fl_rsumexp_f64(x, c, m, y, &n_eq, &s);
            for (int64_t k = 0; k < c; k++) y[k] /= s;
        }
        fl_row_out_f64(ctx->y, yrow, c, y);
    }
}

/* The softmax of a tile of two classes in float32 lanes: of [a, b] it is [1, t] / (1 + t) in the
 * order of the max, t = exp(min - max) with the rounding of min - max folded in (fl_vexp_sub,
 * 1 ULP), so a row takes one exponential and two quotients each rounded once: p_max = 1/s
 * within 1.5 ULP (s = 1 + t rounded, 0.5; t's error moves s by at most t/(1 + t) of it; the
 * quotient, 0.5), p_min = t/s within 2.5 (t, s, the quotient). Ties: t = 1, 1/2 each. A lane
 * whose max is not finite (a NaN, +inf, both -inf) is NaN, as in the row path, here in the
 * tile: no row is handed back, so a row's bits never depend on its neighbours. */
static void fl_softmax2_tile(const float *xt, float *yt)
{
    flv a = flv_load(xt), b = flv_load(xt + FL_W);
    flv m = flv_max(a, b), lo = flv_min_ord(a, b), d, t;
    if (fl_tile_normal(m, lo)) t = fl_vexp_sub_n(lo, m, m, &d, 1);
    else t = fl_vexp_sub(lo, m, fl_exp_floor(m), &d);
    flv one = flv_set1(1.0f), s = flv_add(one, t), pmax = flv_div(one, s), pmin = flv_div(t, s);
    /* m - m: 0 where the max is finite, NaN where it is not (+0 leaves a positive p unchanged) */
    flv nan = flv_sub(m, m), ab = flv_sub(a, b);
    flv_store(yt, flv_add(flv_sel_neg(ab, pmin, pmax), nan));
    flv_store(yt + FL_W, flv_add(flv_sel_neg(ab, pmax, pmin), nan));
}

/* A tile's outputs from its sums: softmax e * fl_softmax_recip(S) (the exponentials in yt),
 * log_softmax fl_log_shift (the logits in xt; rest redone where tiny), into yt, then stored to
 * the rows (i0, i1 .. i1 + nr - 1). */
static void fl_softmax_tile_finish(fl_post_ctx *ctx, int64_t i0, int64_t i1, int64_t nr, const fl_post_tiles *t,
                                   const float *xt, float *yt, flv m, const float *n_eq, double *rest,
                                   void *scratch)
{
    int64_t c = ctx->g.c;
    const fl_arr *y = ctx->y;
    float f[FL_W];
    if (ctx->op != FL_LOG_SOFTMAX) {
        /* fl_recip_sum_f's steps, the same operations, as three lane loops that each vectorise
         * (one loop of the whole mixed float/double function became scalar divisions on AVX2) */
        double s[FL_W];
        for (int64_t j = 0; j < FL_W; j++) {
            s[j] = (double)n_eq[j] + rest[j];
            f[j] = (float)s[j];
        }
        if (FL_SOFTMAX_NEWTON) {
            flv_store(f, flv_div(flv_set1(1.0f), flv_load(f)));
            for (int64_t j = 0; j < FL_W; j++) {
                double y = (double)f[j];
                f[j] = (float)fma(y, fma(-s[j], y, 1.0), y);
            }
        } else {
            for (int64_t j = 0; j < FL_W; j++) f[j] = (float)(1.0 / s[j]);
        }
        flv inv = flv_load(f);
        for (int64_t k = 0; k < c; k++) flv_store(yt + k * FL_W, flv_mul(flv_load(yt + k * FL_W), inv));
    } else {
        /* the row path's formula (fl_log_shift), so that a result does not depend on the layout
         * that chose the path */
        float mf[FL_W], ls[FL_W];
        flv_store(mf, m);
        int tiny = 0;
        /* fl_log_rest_tiny without its branches, so that the loop vectorises */
        for (int64_t j = 0; j < FL_W; j++) tiny |= (n_eq[j] == 1.0f) & (rest[j] < 0x1p-100);
        if (tiny && c > 1) fl_log_tile_rest_precise(xt, c, nr, n_eq, mf, rest, (float *)scratch);
        for (int64_t j = 0; j < FL_W; j++) ls[j] = (float)fl_log_sum((double)n_eq[j], rest[j]);
        flv vls = flv_load(ls);
        for (int64_t k = 0; k < c; k++) flv_store(yt + k * FL_W, fl_log_shift(flv_load(xt + k * FL_W), m, vls));
    }
    fl_tile_store((float *)(void *)fl_row_ptr(y, i0, i1), y->s1, y->sc, c, nr,
                  y->s1 == c && y->sc == 1 ? t->oidx : NULL, yt);
}

/* fl_softmax_row for a tile, with the same formulas (fl_softmax_tile_finish) */
static int fl_softmax_tile(fl_post_ctx *ctx, int64_t i0, int64_t i1, int64_t nr, const fl_post_tiles *t, void *scratch)
{
    int64_t c = ctx->g.c;
    int log_mode = ctx->op == FL_LOG_SOFTMAX;
    flv m;
    float n_eq[FL_W];
    double rest[FL_W];
    const fl_arr *y = ctx->y;
    if (c == 2 && !log_mode) {
        fl_post_tile_load(ctx, i0, i1, nr, t);
        fl_softmax2_tile(t->xt, t->yt);
        fl_tile_store((float *)(void *)fl_row_ptr(y, i0, i1), y->s1, y->sc, c, nr,
                      y->s1 == c && y->sc == 1 ? t->oidx : NULL, t->yt);
        return 1;
    }
    if (!fl_tile_sums(ctx, i0, i1, nr, t, !log_mode, &m, n_eq, rest)) return 0;
    fl_softmax_tile_finish(ctx, i0, i1, nr, t, t->xt, t->yt, m, n_eq, rest, scratch);
    return 1;
}

/* fl_softmax_tile for two whole tiles side by side (fl_tile_pair_fn; not the two-class softmax,
 * whose tile takes one exponential a row) */
static int fl_softmax_tile_pair(fl_post_ctx *ctx, int64_t i0, int64_t i1, const fl_post_tiles *t, void *scratch)
{
    flv m[2];
    float n_eq[2][FL_W];
    double rest[2][FL_W];
    if (!fl_tile_sums_pair(ctx, i0, i1, t, ctx->op != FL_LOG_SOFTMAX, m, n_eq, rest)) return 0;
    fl_softmax_tile_finish(ctx, i0, i1, FL_W, t, t->xt, t->yt, m[0], n_eq[0], rest[0], scratch);
    fl_softmax_tile_finish(ctx, i0, i1 + FL_W, FL_W, t, t->xt2, t->yt2, m[1], n_eq[1], rest[1], scratch);
    return 1;
}

/* the widest rows whose tiles go two at a time (fl_tile_pair_fn) */
#define FL_SOFTMAX_PAIR_MAX_C 16

/* A streamed task's scratch: the row left pending, then fl_softmax_row_f32's rows. */
typedef struct { fl_pend pend; float rows[]; } fl_softmax_stream_scratch;

static void fl_softmax_stream_row(fl_post_ctx *ctx, int64_t i0, int64_t i1, void *scratch)
{
    fl_softmax_stream_scratch *s = (fl_softmax_stream_scratch *)scratch;
    fl_softmax_row_f32(ctx, fl_row_ptr(ctx->x, i0, i1), fl_row_ptr(ctx->y, i0, i1), ctx->y->dtype, s->rows,
                       &s->pend);
}

static void fl_softmax_task(void *vctx, int64_t b0, int64_t b1)
{
    fl_post_ctx *ctx = (fl_post_ctx *)vctx;
    /* float32: the logits and exponentials rows of fl_softmax_row_f32 and an output row */
    size_t c = (size_t)(ctx->g.c > 0 ? ctx->g.c : 1);
    size_t bytes = ctx->f64 ? 2 * c * sizeof(double) : 5 * c * sizeof(float);
    if (ctx->stream) {
        fl_softmax_stream_scratch *s = malloc(sizeof(fl_softmax_stream_scratch) + 4 * c * sizeof(float));
        if (!s) { fl_atomic_store(&ctx->failed, 1); return; }
        fl_pend none = {NULL, NULL, NULL, 0, 0, -1, FL_PEND_SCALE, 0.0f, 0.0f, 0.0f, 0.0, 0.0, FL_F32, FL_F32};
        s->pend = none;
        fl_walk_rows(ctx, b0, b1, s, fl_softmax_stream_row);
        fl_pend_drain(&s->pend, ctx->g.c);
        fl_stream_fence();
        free(s);
    } else if (!ctx->f64 && fl_post_lanes_ok(ctx, ctx->y, FL_LANES_MAX_C)) {
        fl_run_tiles_q(ctx, b0, b1, bytes, fl_softmax_row, fl_softmax_tile,
                       (ctx->g.c > 2 || ctx->op == FL_LOG_SOFTMAX) && ctx->g.c <= FL_SOFTMAX_PAIR_MAX_C
                           ? fl_softmax_tile_pair : NULL,
                       NULL);
    } else {
        fl_run_rows(ctx, b0, b1, bytes, fl_softmax_row);
    }
}

int FL_FN(softmax)(const fl_arr *x, const fl_arr *y, fl_grid g, int mode)
{
    fl_post_ctx ctx = {x, y, NULL, g, mode, 0, 0.0, x->dtype == FL_F64 || y->dtype == FL_F64, 0, 0, 0};
    /* a float32 softmax row's plain path keeps its exponentials in the output row (in place) */
    int in_place = mode != FL_LOG_SOFTMAX && y->dtype == FL_F32;
    ctx.stream = !ctx.f64 && !fl_post_lanes_ok(&ctx, y, FL_LANES_MAX_C) && fl_stream_ok(y, g.n0 * g.n1, g.c, in_place);
    return fl_drive(&ctx, fl_softmax_task);
}
