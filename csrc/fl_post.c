/* fl_post.c: postprocessing kernels (softmax family, row reductions, elementwise sigmoids,
 * argmax, top-k, thresholds). Compiled once per ISA; every symbol is FL_FN(name).
 *
 * Shape of the code: a kernel is a row function plus a driver. The driver splits the row grid
 * into fixed blocks (fl_rows_per_block) and hands block ranges to the thread pool; each task
 * allocates its scratch rows once and walks its rows. Rows are read through fl_rowio.h, so the
 * row functions only ever see contiguous float or double.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fastlogits.h"
#include "fl_dd.h"
#include "fl_kernels.h"
#include "fl_pool.h"
#include "fl_rowio.h"
#include "fl_rowmath.h"

/* A task over a block range: the common driver state of every kernel in this file. */
typedef struct {
    const fl_arr *x, *y, *z;   /* operands (y, z may be NULL) */
    fl_grid g;
    int op;                    /* which variant */
    int64_t k;                 /* top-k */
    double threshold;          /* predict_binary */
    int f64;                   /* compute in double */
    int failed;                /* set by a task that could not allocate */
    int64_t flat_n;            /* elementwise over one contiguous run: its length (grid: blocks) */
    int stream;                /* softmax: rows left pending and written with non-temporal stores */
} fl_post_ctx;

typedef void (*fl_row_fn)(fl_post_ctx *ctx, int64_t i0, int64_t i1, void *scratch);

/* call fn on the rows of blocks [b0, b1) */
static void fl_walk_rows(fl_post_ctx *ctx, int64_t b0, int64_t b1, void *scratch, fl_row_fn fn)
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

static void fl_run_rows(fl_post_ctx *ctx, int64_t b0, int64_t b1, size_t scratch_bytes, fl_row_fn fn)
{
    void *scratch = NULL;
    if (scratch_bytes) {
        scratch = malloc(scratch_bytes);
        if (!scratch) { ctx->failed = 1; return; }
    }
    fl_walk_rows(ctx, b0, b1, scratch, fn);
    free(scratch);
}

static int fl_drive(fl_post_ctx *ctx, fl_task_fn task)
{
    int64_t nrows = ctx->g.n0 * ctx->g.n1;
    if (nrows <= 0) return FL_OK;
    int64_t rpb = fl_rows_per_block(ctx->g.c);
    fl_parallel_for((nrows + rpb - 1) / rpb, task, ctx);
    return ctx->failed ? FL_ENOMEM : FL_OK;
}

/* two scratch rows of the compute type: one for the input, one for the output */
static size_t fl_scratch2(const fl_post_ctx *ctx)
{
    return 2 * (size_t)(ctx->g.c > 0 ? ctx->g.c : 1) * (ctx->f64 ? sizeof(double) : sizeof(float));
}

/* ---------------- small C: rows in the lanes ---------------- */

/* Per-task scratch of a tile kernel: the logits tile, an output tile, the index tables. */
typedef struct { float *xt, *yt; int32_t *gidx, *gidx_part, *oidx; } fl_post_tiles;

/* A tile kernel: nr rows (i0, i1 .. i1 + nr - 1) in the lanes. Returns 0, having written
 * nothing, if the rows must go one by one (a non-finite max). */
typedef int (*fl_tile_fn)(fl_post_ctx *ctx, int64_t i0, int64_t i1, int64_t nr, const fl_post_tiles *t,
                          void *scratch);

/* Do x (and the row output y, if any) allow tiles: float32, C <= FL_LANES_MAX_C, one of the
 * two tile layouts for both? */
static int fl_post_lanes_ok(const fl_post_ctx *ctx, const fl_arr *y)
{
    const fl_arr *x = ctx->x;
    if (FL_W == 1 || x->dtype != FL_F32 || !fl_tile_layout_ok(x->s1, ctx->g.c)) return 0;
    /* any float32 output layout is stored from the tile (fl_tile_store), so out= never changes
     * the arithmetic: results do not depend on where they are written */
    return !y || y->dtype == FL_F32;
}

/* fl_run_rows with tiles of up to FL_W rows of the same i0; fn takes the rows a tile gives back. */
static void fl_run_tiles(fl_post_ctx *ctx, int64_t b0, int64_t b1, size_t scratch_bytes, fl_row_fn fn,
                         fl_tile_fn tile)
{
    int64_t rpb = fl_rows_per_block(ctx->g.c), c = ctx->g.c, n1 = ctx->g.n1, s1 = ctx->x->s1;
    int64_t nrows = ctx->g.n0 * n1;
    int64_t r = b0 * rpb, r1 = b1 * rpb < nrows ? b1 * rpb : nrows;
    size_t nt = (size_t)c * FL_W;
    char *mem = (char *)malloc(scratch_bytes + 2 * nt * sizeof(float) + (2 * FL_W + nt) * sizeof(int32_t));
    if (!mem) { ctx->failed = 1; return; }
    void *scratch = mem;
    fl_post_tiles t;
    t.xt = (float *)(void *)(mem + scratch_bytes);
    t.yt = t.xt + nt;
    t.gidx = (int32_t *)(void *)(t.yt + nt);
    t.gidx_part = t.gidx + FL_W;
    t.oidx = t.gidx_part + FL_W;
    fl_tile_index(s1, c, t.gidx, t.oidx);
    int64_t i0 = r / n1, i1 = r % n1;
    while (r < r1) {
        int64_t nr = r1 - r < n1 - i1 ? r1 - r : n1 - i1;
        nr = nr < FL_W ? nr : FL_W;
        if (nr < FL_W)
            for (int64_t j = 0; j < FL_W; j++) t.gidx_part[j] = j < nr ? (int32_t)(j * s1) : 0;
        if (!tile(ctx, i0, i1, nr, &t, scratch))
            for (int64_t j = 0; j < nr; j++) fn(ctx, i0, i1 + j, scratch);
        r += nr;
        i1 += nr;
        if (i1 == n1) { i1 = 0; i0++; }
    }
    free(mem);
}

/* Load a tile, take its max and the n_eq + rest sums of each lane's row with TwoSum-corrected
 * exponentials (as fl_rsumexp_t with precise set), storing them in t->yt if keep. Returns 0
 * when a row's max is not finite. */
static int fl_tile_sums(const fl_post_ctx *ctx, int64_t i0, int64_t i1, int64_t nr, const fl_post_tiles *t, int keep,
                        flv *m, float *n_eq, double *rest)
{
    const fl_arr *x = ctx->x;
    int64_t c = ctx->g.c;
    fl_tile_load((const float *)(void *)fl_row_ptr(x, i0, i1), x->s1, x->sc, c, nr,
                 nr == FL_W ? t->gidx : t->gidx_part, t->xt);
    *m = fl_tile_max(t->xt, c);
    if (!(flv_hmax(flv_abs(*m)) < INFINITY)) return 0; /* lanes past nr repeat row 0 or hold 0 */
    flv zero = flv_set1(0.0f), one = flv_set1(1.0f), cnt = zero, lo = fl_exp_floor(*m);
    fl_dacc acc = fl_dacc_zero();
    for (int64_t k = 0; k < c; k++) {
        flv d, e = fl_vexp_sub(flv_load(t->xt + k * FL_W), *m, lo, &d);
        if (keep) flv_store(t->yt + k * FL_W, e);
        acc = fl_dacc_add(acc, flv_sel_neg(d, e, zero));
        cnt = flv_add(cnt, flv_sel_neg(d, zero, one));
    }
    flv_store(n_eq, cnt);
    fl_dacc_store(rest, acc);
    return 1;
}

/* ---------------- softmax and log_softmax ---------------- */

/* fl_ahead_next_row for input rows that follow each other in memory (in place or converted
 * to a scratch row), none otherwise (the hint would fetch memory not needed) */
static fl_ahead fl_post_ahead(const fl_post_ctx *ctx, const char *xrow, fl_pend *pend)
{
    const fl_arr *x = ctx->x;
    if (x->sc != 1 || x->s1 != ctx->g.c) return fl_ahead_none();
    return fl_ahead_next_row(xrow, ctx->g.c, (int64_t)fl_esize(x->dtype), pend);
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
    /* the exponentials: in the output row itself when it is float32 and not left pending */
    float *ey = log_mode ? NULL : pend || ydt != FL_F32 ? be : (float *)y;
    double n_eq, rest = lo >= m + FL_EXPF_NORMAL_LO
                            ? fl_x_dispatch(x.dt, fl_rsumexp_t, x.p, c, m, ey, &n_eq, 1, ahead, 1)
                            : fl_x_dispatch(x.dt, fl_rsumexp_t, x.p, c, m, ey, &n_eq, 1, ahead, 0);
    fl_pend p = {y, log_mode ? x.p : ey, NULL, c, 0, -1, log_mode ? FL_PEND_SHIFT : FL_PEND_SCALE,
                 (float)(1.0 / (n_eq + rest)), 0.0f, 0.0f, (double)m, fl_log_sum(n_eq, rest), x.dt, ydt};
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

/* fl_softmax_row for a tile, with the same formulas: softmax e * (float)(1/S), log_softmax
 * ((x - m) - log S) in double rounded once. */
static int fl_softmax_tile(fl_post_ctx *ctx, int64_t i0, int64_t i1, int64_t nr, const fl_post_tiles *t, void *scratch)
{
    (void)scratch;
    int64_t c = ctx->g.c;
    int log_mode = ctx->op == FL_LOG_SOFTMAX;
    flv m;
    float n_eq[FL_W], f[FL_W];
    double rest[FL_W];
    if (!fl_tile_sums(ctx, i0, i1, nr, t, !log_mode, &m, n_eq, rest)) return 0;
    if (!log_mode) {
        for (int64_t j = 0; j < FL_W; j++) f[j] = (float)(1.0 / ((double)n_eq[j] + rest[j]));
        flv inv = flv_load(f);
        for (int64_t k = 0; k < c; k++) flv_store(t->yt + k * FL_W, flv_mul(flv_load(t->yt + k * FL_W), inv));
    } else {
        /* the row path's formula, (x - m) - log S in double rounded once, so that a result does
         * not depend on the layout that chose the path */
        double ls[FL_W];
        float mf[FL_W];
        flv_store(mf, m);
        for (int64_t j = 0; j < FL_W; j++) ls[j] = fl_log_sum((double)n_eq[j], rest[j]);
        for (int64_t k = 0; k < c; k++)
            for (int64_t j = 0; j < FL_W; j++)
                t->yt[k * FL_W + j] = (float)(((double)t->xt[k * FL_W + j] - (double)mf[j]) - ls[j]);
    }
    const fl_arr *y = ctx->y;
    fl_tile_store((float *)(void *)fl_row_ptr(y, i0, i1), y->s1, y->sc, c, nr,
                  y->s1 == c && y->sc == 1 ? t->oidx : NULL, t->yt);
    return 1;
}

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
        if (!s) { ctx->failed = 1; return; }
        fl_pend none = {NULL, NULL, NULL, 0, 0, -1, FL_PEND_SCALE, 0.0f, 0.0f, 0.0f, 0.0, 0.0, FL_F32, FL_F32};
        s->pend = none;
        fl_walk_rows(ctx, b0, b1, s, fl_softmax_stream_row);
        fl_pend_drain(&s->pend, ctx->g.c);
        fl_stream_fence();
        free(s);
    } else if (!ctx->f64 && fl_post_lanes_ok(ctx, ctx->y)) {
        fl_run_tiles(ctx, b0, b1, bytes, fl_softmax_row, fl_softmax_tile);
    } else {
        fl_run_rows(ctx, b0, b1, bytes, fl_softmax_row);
    }
}

int FL_FN(softmax)(const fl_arr *x, const fl_arr *y, fl_grid g, int mode)
{
    fl_post_ctx ctx = {x, y, NULL, g, mode, 0, 0.0, x->dtype == FL_F64 || y->dtype == FL_F64, 0, 0, 0};
    ctx.stream = !ctx.f64 && !fl_post_lanes_ok(&ctx, y) && fl_stream_ok(y, g.n0 * g.n1, g.c);
    return fl_drive(&ctx, fl_softmax_task);
}

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
            double n_eq, rest = lo >= m + FL_EXPF_NORMAL_LO
                                    ? fl_x_dispatch(x.dt, fl_rsumexp_t, x.p, c, m, e, &n_eq, 1, ahead, 1)
                                    : fl_x_dispatch(x.dt, fl_rsumexp_t, x.p, c, m, e, &n_eq, 1, ahead, 0);
            double dot = ent ? fl_x_dispatch(x.dt, fl_rdot_shift_t, x.p, bp, c, m) : 0.0;
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
    for (int64_t j = 0; j < nr; j++) {
        double v = (double)mv[j] + ls[j];
        fl_put_scalar(ctx->y, i0, i1 + j, redo[j] ? (double)mv[j] + pls[j] : v);
    }
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
        double h = v[j];
        if (h < 1e-30) {
            float *row = (float *)scratch;
            for (int64_t k = 0; k < c; k++) row[k] = t->xt[k * FL_W + j];
            h = fl_entropy_precise_t(row, c, mv[j], FL_F32);
        }
        fl_put_scalar(ctx->y, i0, i1 + j, h);
    }
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

/* ---------------- sigmoid and log_sigmoid ---------------- */

/* y = sigmoid(x) or log_sigmoid(x) over n contiguous elements, x and y both of dtype dt */
FL_ALWAYS_INLINE void fl_elementwise_span_t(const void *x, void *y, int64_t n, int logm, int32_t dt)
{
    int64_t k = 0;
    /* four independent vectors a step, side by side (see FL_UNROLL) */
    for (; k + 4 * FL_W <= n; k += 4 * FL_W) {
        flv v[4];
        FL_UNROLL(4)
        for (int j = 0; j < 4; j++) {
            flv xv = fl_xload(x, k + j * FL_W, dt);
            v[j] = logm ? fl_vlog_sigmoid(xv) : fl_vsigmoid(xv);
        }
        FL_UNROLL(4)
        for (int j = 0; j < 4; j++) fl_xstore_part(y, k + j * FL_W, v[j], FL_W, dt);
    }
    for (; k + FL_W <= n; k += FL_W) {
        flv v = fl_xload(x, k, dt);
        fl_xstore_part(y, k, logm ? fl_vlog_sigmoid(v) : fl_vsigmoid(v), FL_W, dt);
    }
    if (k < n) {
        flv v = fl_xload_part(x, k, n - k, 0.0f, dt);
        fl_xstore_part(y, k, logm ? fl_vlog_sigmoid(v) : fl_vsigmoid(v), n - k, dt);
    }
}

static void fl_elementwise_span(const void *x, void *y, int64_t n, int logm, int32_t dt)
{
    fl_x_dispatch(dt, fl_elementwise_span_t, x, y, n, logm);
}

/* Are x and y rows of contiguous elements of one dtype the float32 kernels read in place? */
static int fl_rows_same_x(const fl_arr *x, const fl_arr *y)
{
    return x->dtype == y->dtype && fl_row_is_x(x) && fl_row_is_x(y);
}

/* the float64 twin (the compiler vectorises the loops) */
static void fl_elementwise_span_f64(const double *x, double *y, int64_t n, int logm)
{
    if (logm)
        for (int64_t k = 0; k < n; k++) y[k] = fl_log_sigmoid_d(x[k]);
    else
        for (int64_t k = 0; k < n; k++) y[k] = fl_sigmoid_d(x[k]);
}

static void fl_elementwise_row(fl_post_ctx *ctx, int64_t i0, int64_t i1, void *scratch)
{
    int64_t c = ctx->g.c;
    const char *xrow = fl_row_ptr(ctx->x, i0, i1);
    char *yrow = fl_row_ptr(ctx->y, i0, i1);
    int logm = ctx->op == FL_LOG_SIGMOID;
    if (!ctx->f64 && fl_rows_same_x(ctx->x, ctx->y)) {
        fl_elementwise_span(xrow, yrow, c, logm, ctx->x->dtype);
    } else if (!ctx->f64) {
        float *bx = (float *)scratch, *by = bx + c;
        const float *x = fl_row_in_f32(ctx->x, xrow, c, bx);
        float *y = fl_row_dst_f32(ctx->y, yrow, by);
        fl_elementwise_span(x, y, c, logm, FL_F32);
        fl_row_out_f32(ctx->y, yrow, c, y);
    } else {
        double *bx = (double *)scratch, *by = bx + c;
        const double *x = fl_row_in_f64(ctx->x, xrow, c, bx);
        double *y = fl_row_dst_f64(ctx->y, yrow, by);
        fl_elementwise_span_f64(x, y, c, logm);
        fl_row_out_f64(ctx->y, yrow, c, y);
    }
}

/* Is the whole grid of a one run of contiguous elements (rows back to back)? Then it is one
 * span, cut into blocks of FL_BLOCK_ELEMS whatever the row length: short rows do not pay a
 * call each, and one long row (a 1-D input) is shared by the threads. */
static int fl_grid_flat(const fl_arr *a, fl_grid g)
{
    return a->sc == 1 && (g.n1 == 1 || a->s1 == g.c) && (g.n0 == 1 || a->s0 == g.n1 * g.c);
}

static void fl_elementwise_flat(const fl_post_ctx *ctx, int64_t b0, int64_t b1)
{
    int64_t k0 = b0 * FL_BLOCK_ELEMS, k1 = b1 * FL_BLOCK_ELEMS < ctx->flat_n ? b1 * FL_BLOCK_ELEMS : ctx->flat_n;
    int logm = ctx->op == FL_LOG_SIGMOID;
    if (ctx->f64)
        fl_elementwise_span_f64((const double *)ctx->x->data + k0, (double *)ctx->y->data + k0, k1 - k0, logm);
    else
        fl_elementwise_span((const char *)ctx->x->data + k0 * (int64_t)fl_xsize(ctx->x->dtype),
                            (char *)ctx->y->data + k0 * (int64_t)fl_xsize(ctx->x->dtype), k1 - k0, logm, ctx->x->dtype);
}

static void fl_elementwise_task(void *vctx, int64_t b0, int64_t b1)
{
    fl_post_ctx *ctx = (fl_post_ctx *)vctx;
    if (ctx->flat_n) fl_elementwise_flat(ctx, b0, b1);
    else fl_run_rows(ctx, b0, b1, fl_scratch2(ctx), fl_elementwise_row);
}

int FL_FN(elementwise)(const fl_arr *x, const fl_arr *y, fl_grid g, int op)
{
    fl_post_ctx ctx = {x, y, NULL, g, op, 0, 0.0, x->dtype == FL_F64 || y->dtype == FL_F64, 0, 0, 0};
    int64_t n = g.n0 * g.n1 * g.c;
    int same = ctx.f64 ? x->dtype == FL_F64 && y->dtype == FL_F64 : fl_rows_same_x(x, y);
    if (n > 0 && same && fl_grid_flat(x, g) && fl_grid_flat(y, g)) {
        ctx.flat_n = n;
        fl_parallel_for((n + FL_BLOCK_ELEMS - 1) / FL_BLOCK_ELEMS, fl_elementwise_task, &ctx);
        return ctx.failed ? FL_ENOMEM : FL_OK;
    }
    return fl_drive(&ctx, fl_elementwise_task);
}

/* ---------------- argmax, top-k, threshold ---------------- */

/* Order of candidates: NaN above everything, then by value, ties to the lower index. */
static inline int fl_better(double a, int64_t ia, double b, int64_t ib)
{
    int an = a != a, bn = b != b;
    if (an || bn) return an && (!bn || ia < ib);
    return a > b || (a == b && ia < ib);
}

/* First index of the max of a float32 row (NaN above everything). The row is taken in runs of
 * FL_ARGMAX_RUN elements with the vector max; only the run that holds the answer is scanned
 * element by element. */
#define FL_ARGMAX_RUN 256
FL_ALWAYS_INLINE int64_t fl_argmax_t(const void *x, int64_t c, int32_t dt)
{
    int64_t at = 0, esz = (int64_t)fl_xsize(dt);
    float bm = fl_rmax_t(x, c < FL_ARGMAX_RUN ? c : FL_ARGMAX_RUN, dt);
    for (int64_t k = FL_ARGMAX_RUN; k < c && bm == bm; k += FL_ARGMAX_RUN) {
        float r = fl_rmax_t((const char *)x + k * esz, c - k < FL_ARGMAX_RUN ? c - k : FL_ARGMAX_RUN, dt);
        if (r > bm || r != r) { bm = r; at = k; }
    }
    int64_t end = c - at < FL_ARGMAX_RUN ? c : at + FL_ARGMAX_RUN;
    for (int64_t k = at; k < end; k++) {
        float v = fl_xget(x, k, dt);
        if (v == bm || (bm != bm && v != v)) return k;
    }
    return at; /* not reached: the run holds its max */
}

static void fl_argmax_row(fl_post_ctx *ctx, int64_t i0, int64_t i1, void *scratch)
{
    int64_t c = ctx->g.c;
    const char *xrow = fl_row_ptr(ctx->x, i0, i1);
    int64_t best = 0;
    if (!ctx->f64) {
        fl_xrow x = fl_row_in_x(ctx->x, xrow, c, (float *)scratch);
        fl_prefetch_next_row(x.p, c * (int64_t)fl_xsize(x.dt));
        best = fl_x_dispatch(x.dt, fl_argmax_t, x.p, c);
    } else {
        const double *x = fl_row_in_f64(ctx->x, xrow, c, (double *)scratch);
        double bv = x[0];
        for (int64_t k = 1; k < c && bv == bv; k++) {
            double v = x[k];
            if (v > bv || v != v) { bv = v; best = k; }
        }
    }
    *(int64_t *)fl_row_ptr(ctx->y, i0, i1) = best;
}

/* argmax of FL_W rows in the lanes: a lane takes class k where it beats the best so far
 * (best - v < 0; ties keep the lower index). A NaN anywhere sends the rows one by one. */
static int fl_argmax_tile(fl_post_ctx *ctx, int64_t i0, int64_t i1, int64_t nr, const fl_post_tiles *t, void *scratch)
{
    (void)scratch;
    const fl_arr *x = ctx->x;
    int64_t c = ctx->g.c;
    fl_tile_load((const float *)(void *)fl_row_ptr(x, i0, i1), x->s1, x->sc, c, nr,
                 nr == FL_W ? t->gidx : t->gidx_part, t->xt);
    flv best = flv_load(t->xt), bi = flv_set1(0.0f), nan = best;
    for (int64_t k = 1; k < c; k++) {
        flv v = flv_load(t->xt + k * FL_W), d = flv_sub(best, v);
        best = flv_sel_neg(d, v, best);
        bi = flv_sel_neg(d, flv_set1((float)k), bi);
        nan = flv_max(v, nan);
    }
    if (flv_hmax(nan) != flv_hmax(nan)) return 0;
    flv_store(t->yt, bi);
    for (int64_t j = 0; j < nr; j++) *(int64_t *)fl_row_ptr(ctx->y, i0, i1 + j) = (int64_t)t->yt[j];
    return 1;
}

static void fl_argmax_task(void *vctx, int64_t b0, int64_t b1)
{
    fl_post_ctx *ctx = (fl_post_ctx *)vctx;
    if (!ctx->f64 && fl_post_lanes_ok(ctx, NULL))
        fl_run_tiles(ctx, b0, b1, fl_scratch2(ctx), fl_argmax_row, fl_argmax_tile);
    else
        fl_run_rows(ctx, b0, b1, fl_scratch2(ctx), fl_argmax_row);
}

int FL_FN(argmax)(const fl_arr *x, const fl_arr *out, fl_grid g)
{
    if (g.c <= 0) return FL_OK;
    fl_post_ctx ctx = {x, out, NULL, g, 0, 0, 0.0, x->dtype == FL_F64, 0, 0, 0};
    return fl_drive(&ctx, fl_argmax_task);
}

/* top-k keeps a min-heap (worst candidate at the root) of k (value, index) pairs */
typedef struct { double v; int64_t i; } fl_cand;

static void fl_heap_sift_down(fl_cand *h, int64_t n, int64_t p)
{
    for (;;) {
        int64_t l = 2 * p + 1, r = l + 1, w = p;
        if (l < n && fl_better(h[w].v, h[w].i, h[l].v, h[l].i)) w = l;
        if (r < n && fl_better(h[w].v, h[w].i, h[r].v, h[r].i)) w = r;
        if (w == p) return;
        fl_cand t = h[p]; h[p] = h[w]; h[w] = t;
        p = w;
    }
}

/* offer candidate (v, j) to the heap of the k best */
static inline void fl_heap_offer(fl_cand *h, int64_t k, double v, int64_t j)
{
    if (fl_better(v, j, h[0].v, h[0].i)) {
        h[0] = (fl_cand){v, j};
        fl_heap_sift_down(h, k, 0);
    }
}

static void fl_heap_init(fl_cand *h, int64_t k)
{
    for (int64_t p = k / 2 - 1; p >= 0; p--) fl_heap_sift_down(h, k, p);
}

/* The heap of the k best of a float32 row. Once the heap is full, a run of 4 vectors whose max
 * is not above the worst kept cannot change it (a tie loses to the earlier index), so most of
 * a long row is only read by the vector max. A NaN max compares false and is offered. */
/* Few candidates (k <= FL_TOPK_LIST) are kept in a list sorted best first: an insertion
 * moves at most k entries, cheaper than the heap's sifts and its final sort at that size. */
#define FL_TOPK_LIST 16

/* the worst candidate kept: the heap's root, or the list's last */
static inline const fl_cand *fl_topk_worst(const fl_cand *h, int64_t k)
{
    return k <= FL_TOPK_LIST ? &h[k - 1] : &h[0];
}

/* offer (v, j) to the k best so far (n of them kept, n < k only while the first k are read) */
static inline void fl_topk_offer(fl_cand *h, int64_t k, int64_t *n, double v, int64_t j)
{
    if (k > FL_TOPK_LIST) {
        fl_heap_offer(h, k, v, j);
        return;
    }
    if (*n == k && !fl_better(v, j, h[k - 1].v, h[k - 1].i)) return;
    int64_t p = *n < k ? (*n)++ : k - 1;
    for (; p > 0 && fl_better(v, j, h[p - 1].v, h[p - 1].i); p--) h[p] = h[p - 1];
    h[p] = (fl_cand){v, j};
}

/* the first k elements: the list by insertion, the heap by heapify */
static inline int64_t fl_topk_start(fl_cand *h, int64_t k, const float *xf, const double *xd)
{
    int64_t n = 0;
    for (int64_t j = 0; j < k; j++) {
        double v = xf ? (double)xf[j] : xd[j];
        if (k <= FL_TOPK_LIST) fl_topk_offer(h, k, &n, v, j);
        else h[j] = (fl_cand){v, j};
    }
    if (k > FL_TOPK_LIST) fl_heap_init(h, k);
    return k;
}

/* The k best of a float32 row. Once k are kept, a run of 4 vectors whose max is not above the
 * worst kept cannot change them (a tie loses to the earlier index), so most of a long row is
 * only read by the vector max. A NaN max compares false and is offered. */
static void fl_topk_scan_f32(const float *x, int64_t c, int64_t k, fl_cand *h)
{
    int64_t n = fl_topk_start(h, k, x, NULL), j = k;
    for (; j + 4 * FL_W <= c; j += 4 * FL_W) {
        flv m = flv_max(flv_max(flv_load(x + j), flv_load(x + j + FL_W)),
                        flv_max(flv_load(x + j + 2 * FL_W), flv_load(x + j + 3 * FL_W)));
        if ((double)flv_hmax(m) <= fl_topk_worst(h, k)->v) continue;
        for (int64_t q = j; q < j + 4 * FL_W; q++) fl_topk_offer(h, k, &n, x[q], q);
    }
    for (; j < c; j++) fl_topk_offer(h, k, &n, x[j], j);
}

static void fl_topk_row(fl_post_ctx *ctx, int64_t i0, int64_t i1, void *scratch)
{
    int64_t c = ctx->g.c, k = ctx->k;
    const char *xrow = fl_row_ptr(ctx->x, i0, i1);
    fl_cand *h = (fl_cand *)scratch;
    double *bx = (double *)(h + k);
    if (ctx->x->dtype != FL_F64) {
        fl_topk_scan_f32(fl_row_in_f32(ctx->x, xrow, c, (float *)bx), c, k, h);
    } else {
        const double *x = fl_row_in_f64(ctx->x, xrow, c, bx);
        int64_t n = fl_topk_start(h, k, NULL, x);
        for (int64_t j = k; j < c; j++) fl_topk_offer(h, k, &n, x[j], j);
    }
    /* the heap: pop the worst to the back, so the array ends sorted best first (the list is) */
    for (int64_t n = k > FL_TOPK_LIST ? k - 1 : 0; n > 0; n--) {
        fl_cand t = h[0]; h[0] = h[n]; h[n] = t;
        fl_heap_sift_down(h, n, 0);
    }
    char *vrow = fl_row_ptr(ctx->y, i0, i1);
    int64_t *irow = (int64_t *)fl_row_ptr(ctx->z, i0, i1);
    double *vals = bx; /* the row has been consumed: reuse its scratch for the values */
    for (int64_t j = 0; j < k; j++) {
        vals[j] = h[j].v;
        irow[j * ctx->z->sc] = h[j].i;
    }
    fl_row_out_f64(ctx->y, vrow, k, vals);
}

/* Top-k of FL_W rows in the lanes, for float32 rows of few classes and k <= FL_TOPK_LANES_K
 * (fl_topk_task): each lane keeps its k best (value, index) pairs sorted best first, and the
 * classes are inserted in index order, each by one compare-exchange pass down the list. The
 * order is fl_better's: the larger value first, a tie (-0 and +0 included) to the lower index.
 * A tile holding a NaN goes row by row (NaN ranks above everything, a rule of its own). */
#define FL_TOPK_LANES_K 8

/* per lane: -1 where (v, iv) ranks above (w, iw), +1 or iv - iw > 0 otherwise. b - a < 0
 * decides a > b for any values but NaN; equal infinities give NaN there, which selects the
 * next test, as equal finite values do. */
static inline flv fl_topk_rank(flv v, flv iv, flv w, flv iw)
{
    flv one = flv_set1(1.0f);
    return flv_sel_neg(flv_sub(w, v), flv_neg(one), flv_sel_neg(flv_sub(v, w), one, flv_sub(iv, iw)));
}

static int fl_topk_tile(fl_post_ctx *ctx, int64_t i0, int64_t i1, int64_t nr, const fl_post_tiles *t, void *scratch)
{
    (void)scratch;
    const fl_arr *x = ctx->x;
    int64_t c = ctx->g.c, k = ctx->k;
    fl_tile_load((const float *)(void *)fl_row_ptr(x, i0, i1), x->s1, x->sc, c, nr,
                 nr == FL_W ? t->gidx : t->gidx_part, t->xt);
    flv zero = flv_set1(0.0f), one = flv_set1(1.0f), nan = zero;
    for (int64_t j = 0; j < c; j++) {
        /* -|v| - 1 < 0 unless v is NaN */
        flv v = flv_load(t->xt + j * FL_W);
        nan = flv_add(nan, flv_sel_neg(flv_sub(flv_neg(flv_abs(v)), one), zero, flv_set1(INFINITY)));
    }
    if (!flv_all_finite(nan)) return 0;
    /* empty slots: -inf at an index past every class, below any candidate */
    flv V[FL_TOPK_LANES_K], I[FL_TOPK_LANES_K], jf = zero;
    for (int64_t s = 0; s < k; s++) {
        V[s] = flv_set1(-INFINITY);
        I[s] = flv_set1((float)FL_LANES_MAX_C);
    }
    for (int64_t j = 0; j < c; j++) {
        flv cv = flv_load(t->xt + j * FL_W), ci = jf;
        for (int64_t s = 0; s < k; s++) {
            flv r = fl_topk_rank(cv, ci, V[s], I[s]);
            flv v = flv_sel_neg(r, cv, V[s]), i = flv_sel_neg(r, ci, I[s]);
            cv = flv_sel_neg(r, V[s], cv);
            ci = flv_sel_neg(r, I[s], ci);
            V[s] = v;
            I[s] = i;
        }
        jf = flv_add(jf, one);
    }
    float idx[FL_TOPK_LANES_K * FL_W];
    for (int64_t s = 0; s < k; s++) {
        flv_store(t->yt + s * FL_W, V[s]);
        flv_store(idx + s * FL_W, I[s]);
    }
    const fl_arr *y = ctx->y, *z = ctx->z;
    fl_tile_store((float *)(void *)fl_row_ptr(y, i0, i1), y->s1, y->sc, k, nr, NULL, t->yt);
    for (int64_t j = 0; j < nr; j++) {
        int64_t *irow = (int64_t *)(void *)fl_row_ptr(z, i0, i1 + j);
        for (int64_t s = 0; s < k; s++) irow[s * z->sc] = (int64_t)idx[s * FL_W + j];
    }
    return 1;
}

static void fl_topk_task(void *vctx, int64_t b0, int64_t b1)
{
    fl_post_ctx *ctx = (fl_post_ctx *)vctx;
    size_t bytes = (size_t)ctx->k * sizeof(fl_cand) + (size_t)ctx->g.c * sizeof(double);
    if (ctx->k <= FL_TOPK_LANES_K && fl_post_lanes_ok(ctx, ctx->y))
        fl_run_tiles(ctx, b0, b1, bytes, fl_topk_row, fl_topk_tile);
    else
        fl_run_rows(ctx, b0, b1, bytes, fl_topk_row);
}

int FL_FN(topk)(const fl_arr *x, const fl_arr *values, const fl_arr *indices, fl_grid g, int64_t k)
{
    if (k <= 0 || k > g.c) return FL_OK;
    fl_post_ctx ctx = {x, values, indices, g, 0, k, 0.0, 1, 0, 0, 0};
    return fl_drive(&ctx, fl_topk_task);
}

static void fl_threshold_row(fl_post_ctx *ctx, int64_t i0, int64_t i1, void *scratch)
{
    int64_t c = ctx->g.c;
    const double *x = fl_row_in_f64(ctx->x, fl_row_ptr(ctx->x, i0, i1), c, (double *)scratch);
    uint8_t *out = (uint8_t *)fl_row_ptr(ctx->y, i0, i1);
    int64_t sc = ctx->y->sc;
    double t = ctx->threshold;
    for (int64_t k = 0; k < c; k++) out[k * sc] = x[k] > t; /* NaN compares false */
}

static void fl_threshold_task(void *vctx, int64_t b0, int64_t b1)
{
    fl_post_ctx *ctx = (fl_post_ctx *)vctx;
    fl_run_rows(ctx, b0, b1, (size_t)(ctx->g.c > 0 ? ctx->g.c : 1) * sizeof(double), fl_threshold_row);
}

int FL_FN(threshold)(const fl_arr *x, const fl_arr *out, fl_grid g, double threshold_logit)
{
    fl_post_ctx ctx = {x, out, NULL, g, 0, 0, threshold_logit, 1, 0, 0, 0};
    return fl_drive(&ctx, fl_threshold_task);
}
