/* fl_postdrv.h: the driver shared by the postprocessing kernels (fl_softmax.c, fl_reduce.c,
 * fl_sigmoid.c, fl_select.c).
 *
 * A kernel is a row function plus a driver. The driver splits the row grid into fixed blocks
 * (fl_rows_per_block) and hands block ranges to the thread pool; each task allocates its
 * scratch rows once and walks its rows. Rows are read through fl_rowio.h, so the row functions
 * only ever see contiguous float or double. With few classes, fl_run_tiles hands the rows to a
 * tile function FL_W rows at a time (fl_tile.h), or two tiles at a time to a pair function
 * where the kernel has one. Compiled once per ISA, into each kernel file. */
#ifndef FL_POSTDRV_H
#define FL_POSTDRV_H

#include <math.h>
#include <stdlib.h>

#include "fastlogits.h"
#include "fl_atomic.h"
#include "fl_pool.h"
#include "fl_rowio.h"
#include "fl_rowmath.h"
#include "fl_tile.h"

/* A task over a block range: the common driver state of every kernel in this file. */
typedef struct {
    const fl_arr *x, *y, *z;   /* operands (y, z may be NULL) */
    fl_grid g;
    int op;                    /* which variant */
    int64_t k;                 /* top-k */
    double threshold;          /* predict_binary */
    int f64;                   /* compute in double */
    fl_atomic_int failed;      /* set by a task that could not allocate (several may, at once) */
    int64_t flat_n;            /* elementwise over one contiguous run: its length (grid: blocks) */
    int stream;                /* softmax: rows left pending and written with non-temporal stores;
                                * elementwise (flat): the float32 output streamed */
} fl_post_ctx;

typedef void (*fl_row_fn)(fl_post_ctx *ctx, int64_t i0, int64_t i1, void *scratch);

/* call fn on the rows of blocks [b0, b1) */
static inline void fl_walk_rows(fl_post_ctx *ctx, int64_t b0, int64_t b1, void *scratch, fl_row_fn fn)
{
    int64_t rpb = fl_rows_per_block(ctx->g.c);
    int64_t nrows = ctx->g.n0 * ctx->g.n1;
    int64_t r0 = b0 * rpb, r1 = b1 * rpb < nrows ? b1 * rpb : nrows;
    int64_t i0 = r0 / ctx->g.n1, i1 = r0 % ctx->g.n1;
    for (int64_t r = r0; r < r1; r++) {
        fn(ctx, i0, i1, scratch);
        if (++i1 == ctx->g.n1) { i1 = 0; i0++; }
    }
}

static inline void fl_run_rows(fl_post_ctx *ctx, int64_t b0, int64_t b1, size_t scratch_bytes, fl_row_fn fn)
{
    void *scratch = NULL;
    if (scratch_bytes) {
        scratch = malloc(scratch_bytes);
        if (!scratch) { fl_atomic_store(&ctx->failed, 1); return; }
    }
    fl_walk_rows(ctx, b0, b1, scratch, fn);
    free(scratch);
}

static inline int fl_drive(fl_post_ctx *ctx, fl_task_fn task)
{
    int64_t nrows = ctx->g.n0 * ctx->g.n1;
    if (nrows <= 0) return FL_OK;
    int64_t rpb = fl_rows_per_block(ctx->g.c);
    fl_parallel_for((nrows + rpb - 1) / rpb, task, ctx);
    return fl_atomic_load(&ctx->failed) ? FL_ENOMEM : FL_OK;
}

/* two scratch rows of the compute type: one for the input, one for the output */
static inline size_t fl_scratch2(const fl_post_ctx *ctx)
{
    return 2 * (size_t)(ctx->g.c > 0 ? ctx->g.c : 1) * (ctx->f64 ? sizeof(double) : sizeof(float));
}

/* fl_ahead_next_row for input rows that follow each other in memory (in place or converted
 * to a scratch row), none otherwise (the hint would fetch memory not needed) */
static inline fl_ahead fl_post_ahead(const fl_post_ctx *ctx, const char *xrow, fl_pend *pend)
{
    const fl_arr *x = ctx->x;
    if (x->sc != 1 || x->s1 != ctx->g.c) return fl_ahead_none();
    return fl_ahead_next_row(xrow, ctx->g.c, (int64_t)fl_esize(x->dtype), pend);
}

/* ---------------- small C: rows in the lanes ---------------- */

/* A tile of rows set aside for a second, slower computation: nq of its FL_W lanes used (the
 * lanes themselves in fl_post_tiles.qt). Its rows are counted in grid order from the first one
 * queued (i0, i1), number r = i0 * n1 + i1: lane q holds row r + off[q], off[q] a whole number
 * below FL_QUEUE_SPAN (exact in float32, so that a tile's rows go in by the same lane
 * compression as their logits). off, and qt's last class, have FL_W lanes of room past the
 * queue's end: a masked store reaches FL_W lanes from where it starts, and a later load of
 * anything within that reach (nq, when it followed off) waits for the store to retire. */
#define FL_QUEUE_SPAN 16777216 /* 2^24 */
typedef struct {
    int64_t i0, i1, r;
    int nq;
    float off[2 * FL_W];
} fl_tile_queue;

/* Per-task scratch of a tile kernel: the logits tile, an output tile, the second tile of each
 * for a pair (fl_tile_pair_fn), the index tables, the queue's tile and its state. */
typedef struct {
    float *xt, *yt, *xt2, *yt2, *qt;
    int32_t *gidx, *gidx_part, *oidx;
    fl_tile_queue *q;
} fl_post_tiles;

/* A tile kernel: nr rows (i0, i1 .. i1 + nr - 1) in the lanes. Returns 0, having written
 * nothing, if the rows must go one by one (a non-finite max). */
typedef int (*fl_tile_fn)(fl_post_ctx *ctx, int64_t i0, int64_t i1, int64_t nr, const fl_post_tiles *t,
                          void *scratch);
/* A kernel of two tiles at once: the 2 FL_W rows (i0, i1 .. i1 + 2 FL_W - 1), all in one run
 * of the grid's last axis, the second tile in xt2 and yt2. Returns 0, having written nothing,
 * when the tiles must go one at a time (as a tile kernel hands back rows). A tile's steps (max,
 * exponentials, sums, logarithm) form one chain about the size of the core's reordering window,
 * so the next tile's independent work overlaps it only in part; two tiles computed side by side
 * in one function give the core both chains at once. Each row's arithmetic is that of the
 * single tile, so the results are the same bits.
 * Wider tiles gain less and then lose (AMD Zen 4, 10,000,000 logits: logsumexp 10-24% less
 * time from 2 to 32 classes, 17% more at 64; the softmax family 5-25% less up to 16 classes,
 * 3-20% more from 24): each kernel passes its pair up to its own FL_*_PAIR_MAX_C. */
typedef int (*fl_tile_pair_fn)(fl_post_ctx *ctx, int64_t i0, int64_t i1, const fl_post_tiles *t, void *scratch);
/* The end of a task's tiles: the rows left in the queue. */
typedef void (*fl_tile_done_fn)(fl_post_ctx *ctx, const fl_post_tiles *t);

/* The rows of the tile (i0, i1 ..) whose bits are set in redo into the queue, the queue done
 * first where they would not fit: one lane compression a class and one for the rows' offsets.
 * (A loop over the set bits mispredicted its exit in most tiles of logsumexp 65536 x 2, where
 * 7.9% of the rows are queued: half the kernel's time.) Two classes take no branch on redo
 * either: their tile is short enough that a mispredicted test costs more than compressing
 * nothing; wider tiles skip the compressions, a class each, when no lane is queued. */
static inline void fl_tile_queue_rows(fl_post_ctx *ctx, const fl_post_tiles *t, const float *xt, fl_tile_done_fn done,
                                      int64_t i0, int64_t i1, unsigned redo)
{
    int64_t c = ctx->g.c;
    if (c > 2 && !redo) return;
    fl_tile_queue *q = t->q;
    int64_t r = i0 * ctx->g.n1 + i1;
    int n = fl_popcount(redo);
    if (q->nq && (q->nq + n > FL_W || r - q->r > FL_QUEUE_SPAN - FL_W)) done(ctx, t);
    if (!q->nq) {
        q->i0 = i0;
        q->i1 = i1;
        q->r = r;
    }
    for (int64_t k = 0; k < c; k++) flv_store_compress(t->qt + k * FL_W + q->nq, flv_load(xt + k * FL_W), redo);
    flv_store_compress(q->off + q->nq, flv_add(flv_load(fl_lane_index), flv_set1((float)(r - q->r))), redo);
    q->nq += n;
}

/* the place (i0, i1) of the queue's lane j */
static inline void fl_tile_queue_place(const fl_post_ctx *ctx, const fl_tile_queue *q, int j, int64_t *i0, int64_t *i1)
{
    int64_t a = q->i1 + (int64_t)q->off[j], n1 = ctx->g.n1;
    *i0 = q->i0 + (a >= n1 ? a / n1 : 0);
    *i1 = a >= n1 ? a % n1 : a;
}

/* Do x (and the row output y, if any) allow tiles: float32, C <= max_c (the kernel's widest
 * tile: FL_LANES_MAX_C, or its own where its tiles beat its row path further; a kernel whose
 * tiles hand rows back gives fl_shift_mode the same limit), a tile layout for both? */
static inline int fl_post_lanes_ok(const fl_post_ctx *ctx, const fl_arr *y, int64_t max_c)
{
    const fl_arr *x = ctx->x;
    if (FL_W == 1 || x->dtype != FL_F32 || !fl_tile_layout_ok(x->s1, ctx->g.c, max_c)) return 0;
    /* any float32 output layout is stored from the tile (fl_tile_store), so out= never changes
     * the arithmetic: results do not depend on where they are written */
    return !y || y->dtype == FL_F32;
}

/* fl_run_rows with tiles of up to FL_W rows of the same i0; fn takes the rows a tile gives back,
 * done (if not NULL) the queue at the end. */
static inline void fl_run_tiles_q(fl_post_ctx *ctx, int64_t b0, int64_t b1, size_t scratch_bytes, fl_row_fn fn,
                                  fl_tile_fn tile, fl_tile_pair_fn pair, fl_tile_done_fn done)
{
    int64_t rpb = fl_rows_per_block(ctx->g.c), c = ctx->g.c, n1 = ctx->g.n1, s1 = ctx->x->s1;
    int64_t nrows = ctx->g.n0 * n1;
    int64_t r = b0 * rpb, r1 = b1 * rpb < nrows ? b1 * rpb : nrows;
    size_t nt = (size_t)c * FL_W;
    char *mem = (char *)malloc(scratch_bytes + (5 * nt + FL_W) * sizeof(float) + (2 * FL_W + nt) * sizeof(int32_t));
    if (!mem) { fl_atomic_store(&ctx->failed, 1); return; }
    void *scratch = mem;
    fl_post_tiles t;
    t.xt = (float *)(void *)(mem + scratch_bytes);
    t.yt = t.xt + nt;
    t.xt2 = t.yt + nt;
    t.yt2 = t.xt2 + nt;
    t.qt = t.yt2 + nt;
    fl_tile_queue queue = {0, 0, 0, 0, {0.0f}};
    t.q = &queue;
    t.gidx = (int32_t *)(void *)(t.qt + nt + FL_W); /* qt's room past the queue: fl_tile_queue */
    t.gidx_part = t.gidx + FL_W;
    t.oidx = t.gidx_part + FL_W;
    fl_tile_index(s1, c, t.gidx, t.oidx);
    int64_t i0 = r / n1, i1 = r % n1;
    while (r < r1) {
        int64_t nr = r1 - r < n1 - i1 ? r1 - r : n1 - i1;
        if (pair && nr >= 2 * FL_W && pair(ctx, i0, i1, &t, scratch)) {
            nr = 2 * FL_W;
        } else {
            nr = nr < FL_W ? nr : FL_W;
            if (nr < FL_W)
                for (int64_t j = 0; j < FL_W; j++) t.gidx_part[j] = j < nr && fl_tile_gather_ok(s1) ? (int32_t)(j * s1) : 0;
            if (!tile(ctx, i0, i1, nr, &t, scratch))
                for (int64_t j = 0; j < nr; j++) fn(ctx, i0, i1 + j, scratch);
        }
        r += nr;
        i1 += nr;
        if (i1 == n1) { i1 = 0; i0++; }
    }
    if (done) done(ctx, &t);
    free(mem);
}

/* fl_run_tiles_q for a kernel that queues nothing */
static inline void fl_run_tiles(fl_post_ctx *ctx, int64_t b0, int64_t b1, size_t scratch_bytes, fl_row_fn fn,
                                fl_tile_fn tile)
{
    fl_run_tiles_q(ctx, b0, b1, scratch_bytes, fn, tile, NULL, NULL);
}

/* Load the tile of rows (i0, i1 .. i1 + nr - 1) of x into xt */
static inline void fl_post_tile_load_to(const fl_post_ctx *ctx, int64_t i0, int64_t i1, int64_t nr, const fl_post_tiles *t,
                                        float *xt)
{
    const fl_arr *x = ctx->x;
    fl_tile_load((const float *)(void *)fl_row_ptr(x, i0, i1), x->s1, x->sc, ctx->g.c, nr,
                 nr == FL_W ? t->gidx : t->gidx_part, xt);
}

/* Load the tile of rows (i0, i1 .. i1 + nr - 1) of x into t->xt */
static inline void fl_post_tile_load(const fl_post_ctx *ctx, int64_t i0, int64_t i1, int64_t nr, const fl_post_tiles *t)
{
    fl_post_tile_load_to(ctx, i0, i1, nr, t, t->xt);
}

/* The n_eq + rest sums of each lane's row of np loaded tiles (np = 1 or 2, a constant where
 * inlined: two tiles side by side, fl_tile_pair_fn) with TwoSum-corrected exponentials (as
 * fl_rsumexp_t with precise set): tile p at xt[p] with finite maxima m[p], its exponentials
 * stored in yt[p] if keep. */
FL_ALWAYS_INLINE void fl_tile_sums_n(const float *const *xt, float *const *yt, int np, int64_t c, int keep,
                                     const flv *m, float (*n_eq)[FL_W], double (*rest)[FL_W])
{
    flv zero = flv_set1(0.0f), one = flv_set1(1.0f), cnt[2] = {zero, zero}, lo[2];
    fl_dacc acc[2];
    FL_UNROLL(2)
    for (int p = 0; p < np; p++) {
        lo[p] = fl_exp_floor(m[p]);
        acc[p] = fl_dacc_zero();
    }
    for (int64_t k = 0; k < c; k++) {
        FL_UNROLL(2)
        for (int p = 0; p < np; p++) {
            flv d, e = fl_vexp_sub(flv_load(xt[p] + k * FL_W), m[p], lo[p], &d);
            if (keep) flv_store(yt[p] + k * FL_W, e);
            acc[p] = fl_dacc_add(acc[p], flv_sel_neg(d, e, zero));
            cnt[p] = flv_add(cnt[p], flv_sel_neg(d, zero, one));
        }
    }
    FL_UNROLL(2)
    for (int p = 0; p < np; p++) {
        flv_store(n_eq[p], cnt[p]);
        fl_dacc_store(rest[p], acc[p]);
    }
}

/* fl_tile_sums_n of a loaded tile of two classes, the same values from one exponential a row:
 * the max's own term exp(0) = 1 goes to n_eq, so rest is exp(min - max), or 0 for a tie; the
 * exponentials into yt (if not NULL) as fl_tile_sums_n keeps them. Returns 0 when a row's max
 * is not finite. */
static inline int fl_tile_sums2(const float *xt, float *yt, flv *m, float *n_eq, double *rest)
{
    flv a = flv_load(xt), b = flv_load(xt + FL_W), lo = flv_min_ord(a, b), d, e;
    *m = flv_max(b, a); /* as fl_tile_max */
    if (!flv_all_finite(*m)) return 0;
    if (fl_tile_normal(*m, lo)) e = fl_vexp_sub_n(lo, *m, *m, &d, 1);
    else e = fl_vexp_sub(lo, *m, fl_exp_floor(*m), &d);
    flv zero = flv_set1(0.0f), one = flv_set1(1.0f);
    float r[FL_W];
    flv_store(n_eq, flv_add(one, flv_sel_neg(d, zero, one)));
    flv_store(r, flv_sel_neg(d, e, zero));
    for (int j = 0; j < FL_W; j++) rest[j] = (double)r[j];
    if (yt) {
        /* the max's exponential is exp(0) = 1, the other's e (1 again for a tie) */
        flv_store(yt, flv_sel_neg(flv_sub(a, *m), e, one));
        flv_store(yt + FL_W, flv_sel_neg(flv_sub(b, *m), e, one));
    }
    return 1;
}

/* Load np tiles of nr rows (np = 1 or 2, a constant where inlined; the second, rows i1 + FL_W ..
 * of a pair, fl_tile_pair_fn, into t->xt2), take their maxima m[p] and the n_eq + rest sums of
 * each lane's row (fl_tile_sums_n; two classes: fl_tile_sums2), storing the exponentials in
 * t->yt (t->yt2) if keep. Returns 0 when a row's max is not finite (lanes past nr repeat row 0
 * or hold 0). */
FL_ALWAYS_INLINE int fl_tile_sums_np(const fl_post_ctx *ctx, int64_t i0, int64_t i1, int64_t nr, const fl_post_tiles *t,
                                     int np, int keep, flv *m, float (*n_eq)[FL_W], double (*rest)[FL_W])
{
    int64_t c = ctx->g.c;
    float *xt[2] = {t->xt, t->xt2}, *yt[2] = {t->yt, t->yt2};
    FL_UNROLL(2)
    for (int p = 0; p < np; p++) fl_post_tile_load_to(ctx, i0, i1 + p * FL_W, nr, t, xt[p]);
    if (c == 2) {
        FL_UNROLL(2)
        for (int p = 0; p < np; p++)
            if (!fl_tile_sums2(xt[p], keep ? yt[p] : NULL, &m[p], n_eq[p], rest[p])) return 0;
        return 1;
    }
    FL_UNROLL(2)
    for (int p = 0; p < np; p++) m[p] = fl_tile_max(xt[p], c);
    FL_UNROLL(2)
    for (int p = 0; p < np; p++)
        if (!flv_all_finite(m[p])) return 0;
    const float *const xc[2] = {xt[0], xt[1]};
    fl_tile_sums_n(xc, yt, np, c, keep, m, n_eq, rest);
    return 1;
}

/* fl_tile_sums_np of one tile of nr rows (exponentials in t->yt if keep) */
static inline int fl_tile_sums(const fl_post_ctx *ctx, int64_t i0, int64_t i1, int64_t nr, const fl_post_tiles *t, int keep,
                               flv *m, float *n_eq, double *rest)
{
    return fl_tile_sums_np(ctx, i0, i1, nr, t, 1, keep, m, (float (*)[FL_W])n_eq, (double (*)[FL_W])rest);
}

/* fl_tile_sums_np of the two whole tiles of a pair (rows i1 .. i1 + 2 FL_W - 1, side by side) */
static inline int fl_tile_sums_pair(const fl_post_ctx *ctx, int64_t i0, int64_t i1, const fl_post_tiles *t, int keep,
                                    flv *m, float (*n_eq)[FL_W], double (*rest)[FL_W])
{
    return fl_tile_sums_np(ctx, i0, i1, FL_W, t, 2, keep, m, n_eq, rest);
}

#endif
