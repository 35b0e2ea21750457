/* fl_ce.c: fused cross-entropy: per-row logsumexp, loss and optionally the gradient, in one
 * sweep per row. Compiled once per ISA; every symbol is FL_FN(name).
 *
 * The work is split by job: fl_ce_core.h (the context, the loss and gradient coefficients of a
 * row, the per-task sums), fl_ce_f32.h (rows of float32, float16 and bfloat16 logits, read once
 * in an online logsumexp), fl_ce_f64.h (float64 rows), fl_ce_tile.h (few classes: FL_W rows in
 * the SIMD lanes). This file is the driver: rows come in fixed blocks (fl_rows_per_block),
 * blocks in one stripe per thread (fl_stripes.h); a row goes through the tile path when
 * fl_ce_lanes_ok allows it, else one at a time. No N x C temporary is ever made.
 *
 * Reductions: every row's values go into order-independent sums (fl_rsum.h), one partial state
 * per stripe, merged at the end: the sums are bitwise the same for every thread count and for
 * every split of the rows into calls (fastlogits.dask, chunks), whose states merge the same way.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fastlogits.h"
#include "fl_atomic.h"
#include "fl_kernels.h"
#include "fl_pool.h"
#include "fl_rowio.h"
#include "fl_rowmath.h"
#include "fl_rsum.h"
#include "fl_stripes.h"
#include "fl_ce_core.h"
#include "fl_ce_f32.h"
#include "fl_ce_f64.h"
#include "fl_ce_tile.h"

/* A probability row with no classes: the cross-entropy is an empty sum; lse = -inf, so a
 * positive z_loss makes the row's z part infinite. */
static fl_ce_row fl_ce_prob_empty(const fl_ce_args *a, double s)
{
    return (fl_ce_row){0.0, a->z_loss > 0.0 ? s * a->z_loss * INFINITY : 0.0};
}

static fl_ce_row fl_ce_prob_row(const fl_ce_ctx *ctx, int64_t i0, int64_t i1, double s, void *scratch)
{
    if (ctx->g.c == 0) return fl_ce_prob_empty(ctx->a, s);
    return ctx->f64 ? fl_ce_prob_f64(ctx, i0, i1, s, (double *)scratch) : fl_ce_prob_f32(ctx, i0, i1, s, (float *)scratch);
}

/* One row: its loss and gradient, its values added to the task's sums. */
static void fl_ce_one_row(fl_ce_ctx *ctx, int64_t i0, int64_t i1, int64_t r, fl_ce_acc *acc, int64_t *bad, void *scratch,
                          fl_pend *pend)
{
    const fl_ce_args *a = ctx->a;
    int64_t c = ctx->g.c;
    double s = a->sample_weight.data ? *(const double *)fl_row_ptr(&a->sample_weight, i0, i1) : 1.0;
    fl_ce_row lr = {0.0, 0.0};
    if (ctx->index) {
        int64_t y = fl_ce_class(&a->target, i0, i1);
        int use = y != a->ignore_index;
        if (use && (y < 0 || y >= c)) {
            /* reported by the caller; the row is skipped like an ignored one */
            if (*bad < 0) *bad = r;
            use = 0;
        }
        if (use) fl_ce_acc_row(a, acc, s, s * (a->weight ? a->weight[y] : 1.0));
        if (!a->targets_only) {
            if (!use)
                fl_ce_fill_grad(ctx, i0, i1, 0.0, scratch);
            else if (ctx->f64)
                lr = fl_ce_index_f64(ctx, i0, i1, y, s, (double *)scratch);
            else
                lr = fl_ce_index_f32(ctx, i0, i1, y, s, (float *)scratch, pend);
        }
    } else {
        /* every row counts; the denominators are the sample weights' sum */
        acc->n_valid++;
        if (a->sample_weight.data) fl_rsum_buf_add(&acc->d2, s);
        if (!a->targets_only) lr = fl_ce_prob_row(ctx, i0, i1, s, scratch);
    }
    if (lr.ce != 0.0) fl_rsum_buf_add(&acc->ce, lr.ce);
    if (a->z_loss > 0.0) fl_rsum_buf_add(&acc->z, lr.z);
    if (a->loss.data) fl_put_scalar(&a->loss, i0, i1, lr.ce + lr.z);
}

/* Valid rows (a class index in range, not ignore_index) of the class indices t[0], t[s], ...
 * t[(n - 1) * s]; *nbad counts the others that are not ignored. One branch-free loop per
 * index type, which the compiler vectorises. */
#define FL_CE_COUNT_VALID(T)                                                                      \
    static int64_t fl_ce_count_##T(const T *t, int64_t s, int64_t n, int64_t c, int64_t ign, int64_t *nbad) \
    {                                                                                             \
        int64_t nv = 0, nb = 0;                                                                   \
        for (int64_t j = 0; j < n; j++) {                                                         \
            int64_t y = (int64_t)t[j * s], use = y != ign, in = (uint64_t)y < (uint64_t)c;        \
            nv += use & in;                                                                       \
            nb += use & !in;                                                                      \
        }                                                                                         \
        *nbad = nb;                                                                               \
        return nv;                                                                                \
    }
FL_CE_COUNT_VALID(int64_t)
FL_CE_COUNT_VALID(int32_t)

/* The valid rows of rows r0 .. r1 - 1, taken a run of one i0 at a time; *bad becomes the first
 * row with an out-of-range class, if any (rescanned row by row: an error path). */
static int64_t fl_ce_count_valid(const fl_ce_ctx *ctx, int64_t r0, int64_t r1, int64_t *bad)
{
    const fl_arr *t = &ctx->a->target;
    int64_t n1 = ctx->g.n1, c = ctx->g.c, ign = ctx->a->ignore_index, nv = 0;
    for (int64_t r = r0; r < r1;) {
        int64_t i0 = r / n1, i1 = r % n1, len = r1 - r < n1 - i1 ? r1 - r : n1 - i1, nbad;
        const void *p = fl_row_ptr(t, i0, i1);
        nv += t->dtype == FL_I64 ? fl_ce_count_int64_t((const int64_t *)p, t->s1, len, c, ign, &nbad)
                                 : fl_ce_count_int32_t((const int32_t *)p, t->s1, len, c, ign, &nbad);
        for (int64_t j = 0; nbad && *bad < 0 && j < len; j++) {
            int64_t y = fl_ce_class(t, i0, i1 + j);
            if (y != ign && (y < 0 || y >= c)) *bad = r + j;
        }
        r += len;
    }
    return nv;
}

/* One block of rows: per-row losses (written when asked), their values into the task's sums. */
static void fl_ce_block(fl_ce_ctx *ctx, int64_t b, void *scratch, fl_ce_tiles *tiles, fl_pend *pend, fl_ce_acc *acc,
                        int64_t *bad)
{
    int64_t n1 = ctx->g.n1, nrows = ctx->g.n0 * n1;
    int64_t r0 = b * ctx->rpb, r1 = r0 + ctx->rpb < nrows ? r0 + ctx->rpb : nrows;
    int64_t i0 = r0 / n1, i1 = r0 % n1;
    if (ctx->a->targets_only && ctx->index && !ctx->a->weight && !ctx->a->sample_weight.data) {
        /* the denominators alone, unweighted: a count of the valid rows */
        acc->n_valid += fl_ce_count_valid(ctx, r0, r1, bad);
        return;
    }
    for (int64_t r = r0; r < r1;) {
        int64_t nr = 1;
        if (tiles) {
            /* a tile: up to FL_W rows of the same i0 */
            nr = r1 - r < n1 - i1 ? r1 - r : n1 - i1;
            nr = nr < FL_W ? nr : FL_W;
            if (nr < FL_W)
                for (int64_t j = 0; j < FL_W; j++) tiles->gidx_part[j] = j < nr && fl_tile_gather_ok(ctx->a->x.s1) ? (int32_t)(j * ctx->a->x.s1) : 0;
            unsigned skip = 0;
            if (!fl_ce_tile_f32(ctx, i0, i1, nr, acc, tiles, &skip)) skip = (unsigned)((1ull << nr) - 1u);
            for (int64_t j = 0; skip && j < nr; j++)
                if (skip >> j & 1u) fl_ce_one_row(ctx, i0, i1 + j, r + j, acc, bad, scratch, pend);
        } else {
            fl_ce_one_row(ctx, i0, i1, r, acc, bad, scratch, pend);
        }
        r += nr;
        i1 += nr;
        if (i1 == n1) { i1 = 0; i0++; }
    }
    if (tiles) fl_ce_tiles_flush(ctx, tiles, acc);
}

/* The task's sums as a partial result: without sample weights d2 is the count of valid rows,
 * without class weights (and for probability targets) d1 is d2. */
static void fl_ce_acc_done(const fl_ce_ctx *ctx, fl_ce_acc *acc, int64_t bad, fl_ce_result *out)
{
    const fl_ce_args *a = ctx->a;
    fl_rsum_buf_done(&acc->ce);
    fl_rsum_buf_done(&acc->z);
    fl_rsum_buf_done(&acc->d1);
    fl_rsum_buf_done(&acc->d2);
    if (!a->sample_weight.data) fl_rsum_add(&acc->d2.s, (double)acc->n_valid);
    if (!(ctx->index && a->weight)) acc->d1.s = acc->d2.s;
    out->ce = acc->ce.s;
    out->z = acc->z.s;
    out->d1 = acc->d1.s;
    out->d2 = acc->d2.s;
    out->n_valid = acc->n_valid;
    out->first_bad = bad;
}

static void fl_ce_result_init(fl_ce_result *r)
{
    fl_rsum_init(&r->ce);
    fl_rsum_init(&r->z);
    fl_rsum_init(&r->d1);
    fl_rsum_init(&r->d2);
    r->n_valid = 0;
    r->first_bad = -1;
}

/* Blocks [b0, b1) into slot `slot`. */
static void fl_ce_task(void *vctx, int64_t b0, int64_t b1, int64_t slot)
{
    fl_ce_ctx *ctx = (fl_ce_ctx *)vctx;
    void *scratch = NULL;
    if (!ctx->a->targets_only) {
        /* logits row, gradient row, exponentials or target row of the compute type, block
         * maxima, a second row of exponentials (a pending streamed gradient's) */
        size_t c = (size_t)(ctx->g.c > 0 ? ctx->g.c : 1);
        scratch = malloc((4 * c + (size_t)fl_ce_nblocks((int64_t)c)) * (ctx->f64 ? sizeof(double) : sizeof(float)));
        if (!scratch) { fl_atomic_store(&ctx->failed, 1); return; }
    }
    fl_ce_tiles tiles, *tp = NULL;
    void *tile_mem = NULL;
    if (ctx->lanes) {
        size_t n = (size_t)ctx->g.c * FL_W;
        tile_mem = malloc(2 * n * sizeof(float) + (2 * FL_W + n) * sizeof(int32_t));
        if (!tile_mem) { free(scratch); fl_atomic_store(&ctx->failed, 1); return; }
        tiles.xt = (float *)tile_mem;
        tiles.gt = tiles.xt + n;
        tiles.gidx = (int32_t *)(void *)(tiles.gt + n);
        tiles.gidx_part = tiles.gidx + FL_W;
        tiles.oidx = tiles.gidx_part + FL_W;
        tiles.nb = 0;
        fl_tile_index(ctx->a->x.s1, ctx->g.c, tiles.gidx, tiles.oidx);
        tp = &tiles;
    }
    fl_ce_acc acc;
    fl_rsum_buf_init(&acc.ce);
    fl_rsum_buf_init(&acc.z);
    fl_rsum_buf_init(&acc.d1);
    fl_rsum_buf_init(&acc.d2);
    acc.n_valid = 0;
    int64_t bad = -1;
    fl_pend pend = {NULL, NULL, NULL, 0, 0, -1, FL_PEND_CE, 0.0f, 0.0f, 0.0f, 0.0, 0.0, FL_F32, FL_F32};
    for (int64_t b = b0; b < b1; b++) fl_ce_block(ctx, b, scratch, tp, &pend, &acc, &bad);
    fl_pend_drain(&pend, ctx->g.c);
    if (ctx->stream) fl_stream_fence();
    fl_ce_acc_done(ctx, &acc, bad, &ctx->slot[slot]);
    free(tile_mem);
    free(scratch);
}

/* merge the stripes' partial results (the first bad row is the least of theirs) */
static void fl_ce_combine(const fl_ce_ctx *ctx, int64_t ns, fl_ce_result *res)
{
    for (int64_t i = 0; i < ns; i++) {
        const fl_ce_result *p = &ctx->slot[i];
        fl_rsum_merge(&res->ce, &p->ce);
        fl_rsum_merge(&res->z, &p->z);
        fl_rsum_merge(&res->d1, &p->d1);
        fl_rsum_merge(&res->d2, &p->d2);
        res->n_valid += p->n_valid;
        if (p->first_bad >= 0 && (res->first_bad < 0 || p->first_bad < res->first_bad)) res->first_bad = p->first_bad;
    }
}

int FL_FN(cross_entropy)(const fl_ce_args *a, fl_grid g, fl_ce_result *res)
{
    fl_ce_result_init(res);
    int64_t nrows = g.n0 * g.n1;
    if (nrows <= 0) return FL_OK;
    fl_ce_ctx ctx;
    memset(&ctx, 0, sizeof(ctx));
    ctx.a = a;
    ctx.g = g;
    ctx.f64 = a->x.dtype == FL_F64;
    ctx.index = a->target.dtype == FL_I64 || a->target.dtype == FL_I32;
    ctx.rpb = fl_rows_per_block(g.c);
    ctx.lanes = fl_ce_lanes_ok(a, g, ctx.index);
    /* a float32 gradient row's plain path keeps its exponentials in it (fl_ce_index_f32), unless
     * it is the logits' row */
    int in_place = ctx.index && a->grad.dtype == FL_F32 && a->grad.data != a->x.data;
    ctx.stream = a->grad.data && fl_stream_ok(&a->grad, nrows, g.c, in_place);
    int64_t nb = (nrows + ctx.rpb - 1) / ctx.rpb, ns = fl_stripe_count(nb);
    if (a->weight) {
        fl_rsum w;
        fl_rsum_init(&w);
        fl_rsum_add_f64s(&w, a->weight, g.c);
        ctx.wsum = fl_rsum_value(&w);
    } else {
        ctx.wsum = (double)g.c;
    }
    ctx.slot = (fl_ce_result *)malloc((size_t)ns * sizeof(fl_ce_result));
    float *wf = NULL;
    if (a->weight && !ctx.f64 && g.c > 0) {
        wf = (float *)malloc((size_t)g.c * sizeof(float));
        if (wf)
            for (int64_t k = 0; k < g.c; k++) wf[k] = (float)a->weight[k];
    }
    ctx.wf = wf;
    int status = FL_OK;
    if (!ctx.slot || (a->weight && !ctx.f64 && g.c > 0 && !wf)) {
        status = FL_ENOMEM;
    } else {
        for (int64_t i = 0; i < ns; i++) fl_ce_result_init(&ctx.slot[i]);
        fl_stripes_run(nb, ns, fl_ce_task, &ctx);
        if (fl_atomic_load(&ctx.failed)) status = FL_ENOMEM;
        else fl_ce_combine(&ctx, ns, res);
    }
    free(wf);
    free(ctx.slot);
    return status;
}
