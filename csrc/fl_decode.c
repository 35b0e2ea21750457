/* fl_decode.c: filter_logits and sample (API section 8). Compiled once per ISA; every symbol
 * is FL_FN(name).
 *
 * A row is read from memory once. Its kept set (temperature, top-k, top-p, min-p,
 * min_tokens_to_keep, in the order of transformers' warpers) is a prefix of the row in the
 * order (tempered value descending, index ascending) and is found without sorting the row
 * (fl_decode_select.h):
 *   1. one SIMD pass keeps the N largest values behind a rising threshold: N = k' for top-k
 *      (k' <= FL_DEC_LIST_MAX), else a speculative N = FL_DEC_SPEC for top-p and min-p;
 *   2. the kept prefix is resolved on that list (radix select over at most a few hundred
 *      candidates) when it provably ends inside it: always for top-k, and for top-p or min-p
 *      when their boundary falls before the list's end (top-p needs the row's mass: one pass
 *      of exponentials from cache);
 *   3. otherwise (large nucleus, k' > FL_DEC_LIST_MAX, pure sampling) the exponentials of the
 *      whole row are kept in a scratch row and the radix select runs over the candidates
 *      above the min-p floor.
 * A draw is the inverse CDF of one uniform over the kept mass, in index order and in blocks
 * of FL_DEC_BLOCK candidates whose masses are summed in a fixed order, so a token depends only
 * on the row, its settings and its key (fl_philox.h): the same for every thread count, SIMD
 * path and batch order. Rows are handed to threads in fixed blocks (fl_rows_per_block).
 * float64 rows take the general path (3) in float64.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fastlogits.h"
#include "fl_decode_row.h"
#include "fl_kernels.h"
#include "fl_philox.h"
#include "fl_pool.h"

typedef struct {
    const fl_dec_args *a;
    fl_grid g;
    int sample;         /* sample (else filter_logits) */
    int64_t *bad;       /* per block: the first row (grid order) without a distribution, or -1 */
    int failed;
} fl_dec_ctx;

static inline double fl_arg_f64(const fl_arr *a, int64_t i0, int64_t i1) { return *(const double *)fl_row_ptr(a, i0, i1); }
static inline int64_t fl_arg_i64(const fl_arr *a, int64_t i0, int64_t i1) { return *(const int64_t *)fl_row_ptr(a, i0, i1); }

/* the settings of row (i0, i1) */
static fl_drow fl_dec_settings(const fl_dec_args *a, int64_t c, int64_t i0, int64_t i1)
{
    fl_drow p;
    p.t = fl_arg_f64(&a->temperature, i0, i1);
    p.keep = fl_arg_i64(&a->min_keep, i0, i1);
    p.keep = p.keep < 1 ? 1 : p.keep > c ? c : p.keep;
    int64_t k = fl_arg_i64(&a->top_k, i0, i1);
    p.kprime = k <= 0 || k >= c ? c : (k > p.keep ? k : p.keep);
    p.p = fl_arg_f64(&a->top_p, i0, i1);
    double mp = fl_arg_f64(&a->min_p, i0, i1);
    p.lminp = mp > 0.0 ? fl_log_d(mp) : -(double)INFINITY;
    return p;
}

/* ---------- filter_logits ---------- */

/* y = the tempered row where kept, -inf elsewhere; kept: x >= xa up to index idx_b, x >= xb
 * after it (the boundary in logit space, fl_dcut_xthr) */
FL_ALWAYS_INLINE void fl_dec_write_t(const void *x, int64_t c, float t, float xa, float xb, int64_t idx_b, float *y,
                                     int32_t dt)
{
    flv tv = flv_set1(t), ninf = flv_set1(-INFINITY);
    for (int64_t k = 0; k < c; k += FL_W) {
        int64_t n = c - k < FL_W ? c - k : FL_W;
        flv v = n == FL_W ? fl_xload(x, k, dt) : fl_xload_part(x, k, n, -INFINITY, dt);
        flv yv = t == 1.0f ? v : flv_div(v, tv);
        if (k + FL_W - 1 <= idx_b || k > idx_b) {
            flv thr = flv_set1(k > idx_b ? xb : xa);
            flv_store_part(y + k, flv_sel_neg(flv_sub(v, thr), ninf, yv), n);
        } else {
            float tmp[FL_W];
            flv_store(tmp, yv);
            for (int64_t j = 0; j < n; j++) {
                float xv = fl_xget(x, k + j, dt);
                y[k + j] = xv >= (k + j <= idx_b ? xa : xb) ? tmp[j] : -INFINITY;
            }
        }
    }
}

static void fl_dec_filter_row(fl_dec_ctx *ctx, fl_dscratch *s, int64_t i0, int64_t i1)
{
    const fl_dec_args *a = ctx->a;
    int64_t c = ctx->g.c;
    fl_drow p = fl_dec_settings(a, c, i0, i1);
    const char *xrow = fl_row_ptr(&a->x, i0, i1);
    char *yrow = fl_row_ptr(&a->out, i0, i1);
    if (a->x.dtype == FL_F64) {
        double *y = fl_row_dst_f64(&a->out, yrow, (double *)s->ybuf);
        const double *x = fl_row_in_f64(&a->x, xrow, c, (double *)s->xbuf);
        fl_dres r = fl_drow_resolve_f64(s, x, c, &p);
        for (int64_t k = 0; k < c; k++) {
            double v = x[k] / p.t;
            y[k] = r.state == FL_DROW_NAN ? NAN : r.state == FL_DROW_EMPTY ? v : fl_dcut_keeps(&r.cut, fl_dkey(v), k) ? v : -INFINITY;
        }
        fl_row_out_f64(&a->out, yrow, c, y);
        return;
    }
    float *y = a->out.dtype == FL_F64 ? (float *)s->ybuf : fl_row_dst_f32(&a->out, yrow, (float *)s->ybuf);
    fl_xrow x = fl_row_in_x(&a->x, xrow, c, (float *)s->xbuf);
    float t = (float)p.t;
    fl_dres r = fl_drow_resolve_f32(s, x, c, &p);
    if (r.state == FL_DROW_NAN) {
        for (int64_t k = 0; k < c; k++) y[k] = NAN;
    } else if (r.state == FL_DROW_EMPTY) {
        for (int64_t k = 0; k < c; k++) y[k] = -INFINITY;
    } else {
        float xa, xb;
        fl_dcut_xthr(&r.cut, t, &xa, &xb);
        fl_x_dispatch(x.dt, fl_dec_write_t, x.p, c, t, xa, xb, r.cut.idx_b, y);
    }
    if (a->out.dtype == FL_F64) {
        /* the float32 results widened (fl_row_out_f32 writes the float32 family only) */
        for (int64_t k = 0; k < c; k++) ((double *)(void *)yrow)[k * a->out.sc] = (double)y[k];
    } else {
        fl_row_out_f32(&a->out, yrow, c, y);
    }
}

/* ---------- sample ---------- */

/* first index of the max (NaN counts as the largest), as predict */
FL_ALWAYS_INLINE int64_t fl_dec_argmax_t(const void *x, int64_t c, int32_t dt)
{
    float m = fl_rmax_t(x, c, dt);
    for (int64_t k = 0; k < c; k++) {
        float v = fl_xget(x, k, dt);
        if (v == m || (m != m && v != v)) return k;
    }
    return 0;
}

static int64_t fl_dec_argmax_d(const double *x, int64_t c)
{
    int64_t best = 0;
    double bv = x[0];
    for (int64_t k = 1; k < c && bv == bv; k++)
        if (x[k] > bv || x[k] != x[k]) { bv = x[k]; best = k; }
    return best;
}

/* one row: 0, or 1 when a tempered row has no distribution to draw from */
static int fl_dec_sample_row(fl_dec_ctx *ctx, fl_dscratch *s, int64_t i0, int64_t i1)
{
    const fl_dec_args *a = ctx->a;
    int64_t c = ctx->g.c;
    fl_drow p = fl_dec_settings(a, c, i0, i1);
    const char *xrow = fl_row_ptr(&a->x, i0, i1);
    int f64 = a->x.dtype == FL_F64;
    int64_t tok;
    double lp = 0.0;
    if (p.t == 0.0 || (!f64 && (float)p.t == 0.0f)) {
        if (f64) tok = fl_dec_argmax_d(fl_row_in_f64(&a->x, xrow, c, (double *)s->xbuf), c);
        else {
            fl_xrow x = fl_row_in_x(&a->x, xrow, c, (float *)s->xbuf);
            tok = fl_x_dispatch(x.dt, fl_dec_argmax_t, x.p, c);
        }
    } else {
        uint64_t seed = (uint64_t)fl_arg_i64(&a->seed, i0, i1), off = (uint64_t)fl_arg_i64(&a->offset, i0, i1);
        uint64_t stream = a->stream.data ? (uint64_t)fl_arg_i64(&a->stream, i0, i1) : (uint64_t)(i0 * ctx->g.n1 + i1);
        double u = fl_philox_uniform(seed, off, stream);
        fl_dres r;
        if (f64) r = fl_drow_resolve_f64(s, fl_row_in_f64(&a->x, xrow, c, (double *)s->xbuf), c, &p);
        else r = fl_drow_resolve_f32(s, fl_row_in_x(&a->x, xrow, c, (float *)s->xbuf), c, &p);
        if (r.state != FL_DROW_OK) return 1;
        tok = fl_drow_draw(s, &r, u, &lp);
    }
    *(int64_t *)fl_row_ptr(&a->out, i0, i1) = tok;
    if (a->logprob.data) fl_put_scalar(&a->logprob, i0, i1, lp);
    return 0;
}

static void fl_dec_task(void *vctx, int64_t b0, int64_t b1)
{
    fl_dec_ctx *ctx = (fl_dec_ctx *)vctx;
    fl_dscratch s;
    if (!fl_dscratch_init(&s, ctx->g.c)) { ctx->failed = 1; return; }
    int64_t rpb = fl_rows_per_block(ctx->g.c), nrows = ctx->g.n0 * ctx->g.n1;
    for (int64_t b = b0; b < b1 && !s.failed; b++) {
        int64_t r0 = b * rpb, r1 = r0 + rpb < nrows ? r0 + rpb : nrows;
        ctx->bad[b] = -1;
        for (int64_t r = r0; r < r1 && !s.failed; r++) {
            int64_t i0 = r / ctx->g.n1, i1 = r % ctx->g.n1;
            if (!ctx->sample) fl_dec_filter_row(ctx, &s, i0, i1);
            else if (fl_dec_sample_row(ctx, &s, i0, i1) && ctx->bad[b] < 0) ctx->bad[b] = r;
        }
    }
    if (s.failed) ctx->failed = 1;
    fl_dscratch_free(&s);
}

static int fl_dec_drive(const fl_dec_args *a, fl_grid g, int sample, int64_t *first_bad)
{
    if (first_bad) *first_bad = -1;
    int64_t nrows = g.n0 * g.n1;
    if (nrows <= 0 || g.c <= 0) return FL_OK;
    int64_t rpb = fl_rows_per_block(g.c), nb = (nrows + rpb - 1) / rpb;
    fl_dec_ctx ctx = {a, g, sample, (int64_t *)malloc((size_t)nb * sizeof(int64_t)), 0};
    if (!ctx.bad) return FL_ENOMEM;
    fl_parallel_for(nb, fl_dec_task, &ctx);
    if (first_bad)
        for (int64_t b = 0; b < nb; b++)
            if (ctx.bad[b] >= 0) { *first_bad = ctx.bad[b]; break; }
    free(ctx.bad);
    return ctx.failed ? FL_ENOMEM : FL_OK;
}

int FL_FN(filter_logits)(const fl_dec_args *a, fl_grid g) { return fl_dec_drive(a, g, 0, NULL); }

int FL_FN(sample)(const fl_dec_args *a, fl_grid g, int64_t *first_bad) { return fl_dec_drive(a, g, 1, first_bad); }
