/* fl_score.c: the fused offline-scoring kernel behind fl.score and fl.fit_temperature.
 * Compiled once per ISA; every exported symbol is FL_FN(name).
 *
 * One call scores a chunk of rows. Each row is read once (fl_rowio.h) and, with the logits
 * divided by the temperature inside the arithmetic, gives its NLL, whether it is predicted
 * correctly, whether the target is in the top k, its top-label confidence, its Brier term, its
 * entropy and the gap E_p[z] - z_y (the derivative of the NLL in 1/T, up to the factor T, for
 * fit_temperature). Each row's weighted values go into order-independent sums (fl_rsum.h)
 * through small row buffers (one per sum, and per ECE bin); without sample weights the
 * weight, accuracy and top-k sums are exact counts. Rows come in fixed blocks handed to
 * the threads in stripes (fl_stripes.h), one partial state per stripe, and the call merges its
 * states into the caller's (the running state of a streaming pass, or of a Dask task). So the
 * result is bitwise the same for every thread count and every split of the rows into calls,
 * whatever the order in which the states are merged.
 *
 * The per-row arithmetic (rank, max, the one pass of exponentials and what it gives) is in
 * fl_score_row.h, the per-class block (confusion matrix, classwise ECE, binned AUC) in
 * fl_score_pc.h; this file holds the accumulation and the parallel loop.
 *
 * Two modes:
 *   FL_SCORE_SOFTMAX  rows of C classes, target an int64 class index per row;
 *   FL_SCORE_SIGMOID  every element is a binary prediction (sigmoid), target a byte per element
 *                     (0 or 1; any other byte: the element is ignored, in no sum), the row's
 *                     sample weight applies to each element of the row.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fastlogits.h"
#include "fl_kernels.h"
#include "fl_atomic.h"
#include "fl_pool.h"
#include "fl_rowio.h"
#include "fl_rsum.h"
#include "fl_score_pc.h"
#include "fl_score_row.h"
#include "fl_stripes.h"

typedef struct {
    const fl_arr *x, *t, *w;   /* w may be NULL: every weight is 1 */
    fl_grid g;
    const fl_score_opts *o;
    int64_t nsums;             /* FL_SCORE_NSUMS + 3 * bins */
    int64_t rpb;               /* rows per block */
    fl_rsum *slot;             /* nsums partial states per stripe */
    fl_pc_acc *pc;             /* per-class sums per stripe (fl_score_pc.h) */
    const double *thr;         /* the binned AUC's thresholds */
    int f64;
    fl_atomic_int failed;      /* set by a task that could not allocate (several may, at once) */
} fl_score_ctx;

/* Does a call want the sums of e^2 and e (x - m) (the Brier score, the entropy, the gap)? */
static inline int fl_score_wants_moments(const fl_score_opts *o)
{
    return (o->sums & (((int64_t)1 << FL_SCORE_BRIER) | ((int64_t)1 << FL_SCORE_ENT) | ((int64_t)1 << FL_SCORE_GAP))) != 0;
}

/* A softmax row's per-class sums: the confusion cell, and every class's probability
 * p_c = e_c / s (NaN for a special row: s is NaN then) into the ECE bins and AUC levels. */
static inline void fl_softmax_pc(fl_pc_acc *a, int64_t y, int64_t pred, const float *e32, const double *e64,
                                 double s, double w)
{
    if (a->confusion) fl_pc_confusion(a, y, pred, w);
    if (!a->npc) return;
    double inv = 1.0 / s;
    if (!a->weighted) {
        if (e64) fl_pc_row_f64(a, e64, inv, y);
        else fl_pc_row_f32(a, e32, inv, y);
        return;
    }
    if (e64) fl_pc_wrow_f64(a, e64, inv, y, w);
    else fl_pc_wrow_f32(a, e32, inv, y, w);
}

/* ---------- rows ---------- */

/* a row of dtype dt, read in place (or gathered as float32: fl_row_in_x); with the per-class
 * block, its exponentials go into e (from the statistics' pass) */
FL_ALWAYS_INLINE void fl_softmax_row_t(const fl_score_ctx *ctx, const void *x, int64_t y, fl_row_stats *st,
                                       fl_pc_acc *pc, double w, float *e, fl_ahead ahead, int32_t dt)
{
    int64_t c = ctx->g.c;
    double t = ctx->o->temperature;
    int64_t rank = 1;
    float m, lo = -INFINITY;
    if (!ctx->o->want_rank) {
        m = fl_rmaxmin_t(x, c, &lo, dt);
    } else if (c <= ((int64_t)1 << 24)) {
        m = fl_rmax_rank_t(x, c, y, &rank, &lo, dt);
    } else {
        rank = fl_rank_t(x, c, y, dt);
        m = fl_rmaxmin_t(x, c, &lo, dt);
    }
    st->correct = rank == 0;
    st->hit = rank < ctx->o->k;
    int64_t pred = !pc->confusion ? 0 : rank == 0 ? y : fl_argmax_t(x, c, m, dt);
    double s = NAN;
    if (!isfinite(m)) {
        fl_special_stats(st);
    } else {
        double n_eq, rest, sq, dot, ey, gm = 1.0;  /* gm: the e of the max in e (1 but for the shift) */
        int mode = fl_exp_mode(m, lo), moments = fl_score_wants_moments(ctx->o);
        if (t == 1.0 && mode == FL_EXP_NORMAL && fabsf(m) <= FL_SHIFT_MMAX) {
            if (pc->npc)
                ey = moments ? fl_rstats_shift_t(x, c, m, y, &n_eq, &rest, &sq, &dot, e, 1, &gm, ahead, dt)
                             : fl_rstats_shift_t(x, c, m, y, &n_eq, &rest, &sq, &dot, e, 0, &gm, ahead, dt);
            else
                ey = moments ? fl_rstats_shift_t(x, c, m, y, &n_eq, &rest, &sq, &dot, NULL, 1, &gm, ahead, dt)
                             : fl_rstats_shift_t(x, c, m, y, &n_eq, &rest, &sq, &dot, NULL, 0, &gm, ahead, dt);
        } else if (t == 1.0 && mode == FL_EXP_NORMAL)
            ey = pc->npc ? fl_rstats_t(x, c, m, t, y, &n_eq, &rest, &sq, &dot, e, 1, ahead, dt)
                         : fl_rstats_t(x, c, m, t, y, &n_eq, &rest, &sq, &dot, NULL, 1, ahead, dt);
        else
            ey = pc->npc ? fl_rstats_t(x, c, m, t, y, &n_eq, &rest, &sq, &dot, e, 0, ahead, dt)
                         : fl_rstats_t(x, c, m, t, y, &n_eq, &rest, &sq, &dot, NULL, 0, ahead, dt);
        fl_softmax_stats(n_eq, rest, sq, dot, ey, (double)fl_xget(x, y, dt) - (double)m, t, st);
        s = gm * (n_eq + rest);
    }
    if (pc->npc && s != s)
        for (int64_t k = 0; k < c; k++) e[k] = NAN;
    fl_softmax_pc(pc, y, pred, e, NULL, s, w);
}

static void fl_softmax_row_f32(fl_score_ctx *ctx, const char *xrow, int64_t y, void *scratch, fl_row_stats *st,
                               fl_pc_acc *pc, double w)
{
    float *buf = (float *)scratch, *e = buf + ctx->g.c * (1 + fl_pc_slot(pc));
    fl_xrow x = fl_row_in_x(ctx->x, xrow, ctx->g.c, buf);
    /* the next row, where rows read in place follow each other */
    fl_ahead ahead = x.p == (const void *)xrow && ctx->x->s1 == ctx->g.c
                         ? fl_ahead_next_row(xrow, ctx->g.c, (int64_t)fl_esize(ctx->x->dtype), NULL)
                         : fl_ahead_none();
    fl_x_dispatch(x.dt, fl_softmax_row_t, ctx, x.p, y, st, pc, w, e, ahead);
}

static void fl_softmax_row_f64(fl_score_ctx *ctx, const char *xrow, int64_t y, void *scratch, fl_row_stats *st,
                               fl_pc_acc *pc, double w)
{
    int64_t c = ctx->g.c;
    double t = ctx->o->temperature;
    double *bx = (double *)scratch, *e = bx + c;
    const double *x = fl_row_in_f64(ctx->x, xrow, c, bx);
    int64_t rank = ctx->o->want_rank ? fl_rank_f64(x, c, y) : 1;
    int64_t pred = !pc->confusion ? 0 : rank == 0 ? y : fl_argmax_f64(x, c);
    st->correct = rank == 0;
    st->hit = rank < ctx->o->k;
    double m = fl_rmax_f64(x, c), s = NAN;
    if (!isfinite(m)) {
        fl_special_stats(st);
        for (int64_t k = 0; k < c && pc->npc; k++) e[k] = NAN;
    } else {
        s = fl_rsumexp_t_f64(x, c, m, t, e);
        double sq, dot;
        fl_rsq_dot_f64(x, e, c, m, &sq, &dot);
        fl_softmax_stats(0.0, s, sq, dot, e[y], x[y] - m, t, st);  /* float64 lanes: no ones apart */
    }
    fl_softmax_pc(pc, y, pred, NULL, e, s, w);
}

/* ---------- accumulation ---------- */

/* A task's sums: the values of each sum waiting for deposit, and per ECE bin those of the
 * weight, weight * correct and weight * conf. Without sample weights the weight, accuracy and
 * top-k sums are exact counts instead (count, and the bins' weight and accuracy in
 * bin_count), so only each bin's confidence needs a buffer. */
typedef struct {
    fl_rsum_buf sum[FL_SCORE_NSUMS];
    int64_t count[FL_SCORE_NSUMS];
    fl_rsum_buf *bin;          /* weighted: 3 * bins (weight, correct, conf); else bins (conf) */
    int64_t *bin_count;        /* unweighted: 2 * bins (weight, correct) */
    int64_t bins, want;
    int weighted;
} fl_score_acc;

static int fl_score_acc_init(fl_score_acc *a, const fl_score_ctx *ctx)
{
    int64_t bins = ctx->o->bins, nbuf;
    a->bins = bins;
    a->want = ctx->o->sums;
    a->weighted = ctx->w != NULL;
    nbuf = (a->weighted ? 3 : 1) * bins;
    a->bin = (fl_rsum_buf *)malloc((size_t)nbuf * sizeof(fl_rsum_buf));
    a->bin_count = (int64_t *)calloc((size_t)(2 * bins), sizeof(int64_t));
    if (!a->bin || !a->bin_count) {
        free(a->bin);
        free(a->bin_count);
        return 0;
    }
    for (int q = 0; q < FL_SCORE_NSUMS; q++) {
        fl_rsum_buf_init(&a->sum[q]);
        a->count[q] = 0;
    }
    for (int64_t q = 0; q < nbuf; q++) fl_rsum_buf_init(&a->bin[q]);
    return 1;
}

/* Add one weighted statistic set to the task's sums: W, the metric sums asked for, then per
 * ECE bin of conf (NaN conf goes to bin 0, as the oracle) the weight, weight * correct and
 * weight * conf. Always inlined: GCC's heuristics made it a call per element of a sigmoid
 * row once that loop could skip ignored elements (+7% instructions, callgrind). */
FL_ALWAYS_INLINE void fl_score_add(fl_score_acc *a, const fl_row_stats *st, double w)
{
    /* the sums that are 0/1 per row: counts when unweighted */
    static const int is_count[FL_SCORE_NSUMS] = {1, 0, 1, 1, 0, 0, 0, 1, 1, 1};
    const double v[FL_SCORE_NSUMS] = {1.0, st->nll, st->correct, st->hit, st->brier, st->ent, st->gap,
                                      st->tp, st->pp, st->ap};
    for (int q = 0; q < FL_SCORE_NSUMS; q++) {
        if (!(a->want & ((int64_t)1 << q))) continue;
        if (a->weighted) fl_rsum_buf_add(&a->sum[q], w * v[q]);
        else if (is_count[q]) a->count[q] += (int64_t)v[q];
        else fl_rsum_buf_add(&a->sum[q], v[q]);
    }
    if (!(a->want & FL_SCORE_WANT_BINS)) return;
    int64_t bins = a->bins, b = 0;
    if (st->conf == st->conf) {
        double f = st->conf * (double)bins;
        b = f >= (double)bins ? bins - 1 : (f > 0.0 ? (int64_t)f : 0);
    }
    if (a->weighted) {
        fl_rsum_buf_add(&a->bin[b], w);
        fl_rsum_buf_add(&a->bin[bins + b], w * st->correct);
        fl_rsum_buf_add(&a->bin[2 * bins + b], w * st->conf);
    } else {
        a->bin_count[b]++;
        a->bin_count[bins + b] += (int64_t)st->correct;
        fl_rsum_buf_add(&a->bin[b], st->conf);
    }
}

/* A count as a state of its own. */
static inline fl_rsum fl_score_count(int64_t n)
{
    fl_rsum s;
    fl_rsum_init(&s);
    fl_rsum_add(&s, (double)n);
    return s;
}

/* The task's sums into states out[nsums] (deposits what waits, then the counts); frees a. */
static void fl_score_acc_done(fl_score_acc *a, fl_rsum *out)
{
    int64_t bins = a->bins;
    for (int q = 0; q < FL_SCORE_NSUMS; q++) {
        fl_rsum_buf_done(&a->sum[q]);
        out[q] = a->sum[q].s;
        if (a->count[q]) {
            fl_rsum c = fl_score_count(a->count[q]);
            fl_rsum_merge(&out[q], &c);
        }
    }
    fl_rsum *bo = out + FL_SCORE_NSUMS;
    for (int64_t q = 0; q < (a->weighted ? 3 : 1) * bins; q++) fl_rsum_buf_done(&a->bin[q]);
    for (int64_t b = 0; b < bins; b++) {
        if (a->weighted) {
            bo[b] = a->bin[b].s;
            bo[bins + b] = a->bin[bins + b].s;
            bo[2 * bins + b] = a->bin[2 * bins + b].s;
        } else {
            bo[b] = fl_score_count(a->bin_count[b]);
            bo[bins + b] = fl_score_count(a->bin_count[bins + b]);
            bo[2 * bins + b] = a->bin[b].s;
        }
    }
    free(a->bin);
    free(a->bin_count);
}

static double fl_row_weight(const fl_score_ctx *ctx, int64_t i0, int64_t i1)
{
    if (!ctx->w) return 1.0;
    return *(const double *)fl_row_ptr(ctx->w, i0, i1);
}

static void fl_score_row(fl_score_ctx *ctx, int64_t i0, int64_t i1, void *scratch, fl_score_acc *acc,
                         fl_pc_acc *pc)
{
    const char *xrow = fl_row_ptr(ctx->x, i0, i1);
    const char *trow = fl_row_ptr(ctx->t, i0, i1);
    double w = fl_row_weight(ctx, i0, i1);
    int64_t c = ctx->g.c;
    fl_row_stats st;
    if (ctx->o->mode == FL_SCORE_SOFTMAX) {
        int64_t y = *(const int64_t *)trow;
        if (y == ctx->o->ignore_index) return;
        if (ctx->f64)
            fl_softmax_row_f64(ctx, xrow, y, scratch, &st, pc, w);
        else
            fl_softmax_row_f32(ctx, xrow, y, scratch, &st, pc, w);
        fl_score_add(acc, &st, w);
        return;
    }
    double t = ctx->o->temperature;
    const double *x = fl_row_in_f64(ctx->x, xrow, c, (double *)scratch);
    const uint8_t *tb = (const uint8_t *)trow;
    pc->nrows++;
    for (int64_t k = 0; k < c; k++) {
        int label = tb[k * ctx->t->sc];
        if (label > 1) {  /* an ignored element (ignore_index): in no sum */
            fl_pc_skip(pc, k);
            continue;
        }
        fl_sigmoid_stats(x[k] / t, label, &st);
        fl_score_add(acc, &st, w);
        if (pc->npc && pc->weighted) fl_pc_add_weighted(pc, k, st.p, label, w);
        else if (pc->npc) fl_pc_elem(pc, k, st.p, label);
    }
}

/* Blocks [b0, b1) into the states of slot `slot`. */
static void fl_score_task(void *vctx, int64_t b0, int64_t b1, int64_t slot)
{
    fl_score_ctx *ctx = (fl_score_ctx *)vctx;
    int64_t c = ctx->g.c, n1 = ctx->g.n1, nrows = ctx->g.n0 * ctx->g.n1;
    int sigmoid = ctx->o->mode == FL_SCORE_SIGMOID;
    size_t esz = (ctx->f64 || sigmoid) ? sizeof(double) : sizeof(float);
    /* a row gathered (fl_row_in_x), then the exponentials of FL_PC_BATCH rows (fl_pc_slot) */
    void *scratch = malloc((1 + FL_PC_BATCH) * (size_t)(c > 0 ? c : 1) * esz);
    fl_score_acc *acc = (fl_score_acc *)malloc(sizeof(fl_score_acc));
    int64_t r0 = b0 * ctx->rpb, r1 = b1 * ctx->rpb < nrows ? b1 * ctx->rpb : nrows;
    fl_pc_acc *pc = &ctx->pc[slot];
    if (!scratch || !acc || !fl_pc_init(pc, ctx->o, c, r1 - r0, ctx->w != NULL, ctx->thr) ||
        !fl_score_acc_init(acc, ctx)) {
        free(scratch);
        free(acc);
        fl_atomic_store(&ctx->failed, 1);
        return;
    }
    int64_t i0 = r0 / n1, i1 = r0 % n1;
    for (int64_t r = r0; r < r1; r++) {
        fl_score_row(ctx, i0, i1, scratch, acc, pc);
        if (++i1 == n1) { i1 = 0; i0++; }
    }
    fl_pc_settle(pc);
    fl_score_acc_done(acc, ctx->slot + slot * ctx->nsums);
    free(acc);
    free(scratch);
}

/* Rows narrower than float64 divide by the temperature in float32 lanes; a temperature outside
 * the normal float32 range (T > FLT_MAX rounds to inf, T < FLT_MIN is subnormal or 0) would make
 * (x - m)/T a NaN (0/0, inf*0), so such rows take the float64 path, widened on reading. */
static int fl_score_f64_rows(const fl_arr *x, double t)
{
    return x->dtype == FL_F64 || !(t >= (double)FLT_MIN && t <= (double)FLT_MAX);
}

void FL_FN(score_pc_fold)(const fl_score_opts *o, int64_t c)
{
    fl_pc_acc a;
    fl_pc_layout(&a, o, c);
    if (a.npc) fl_pc_deposit(&a, o->pcn, o->pcf, o->pc);
}

int FL_FN(score)(const fl_arr *x, const fl_arr *target, const fl_arr *weight, fl_grid g,
                 const fl_score_opts *o, fl_rsum *acc)
{
    int64_t nrows = g.n0 * g.n1;
    if (nrows <= 0 || g.c <= 0) return FL_OK;
    int64_t rpb = fl_rows_per_block(g.c), nb = (nrows + rpb - 1) / rpb, ns = fl_stripe_count(nb);
    int64_t nsums = FL_SCORE_NSUMS + 3 * o->bins;
    fl_rsum *slot = (fl_rsum *)malloc((size_t)(ns * nsums) * sizeof(fl_rsum));
    fl_pc_acc *pc = (fl_pc_acc *)calloc((size_t)ns, sizeof(fl_pc_acc));
    int64_t nthr = o->per_class & FL_PC_AUC ? o->auc_bins : 1;
    double *thr = (double *)malloc((size_t)nthr * sizeof(double));
    if (!slot || !pc || !thr) {
        free(slot);
        free(pc);
        free(thr);
        return FL_ENOMEM;
    }
    for (int64_t j = 0; j < nthr; j++) thr[j] = nthr > 1 ? (double)j / (double)(nthr - 1) : 0.0;
    for (int64_t j = 0; j < ns * nsums; j++) fl_rsum_init(&slot[j]);
    fl_score_ctx ctx = {x, target, weight, g, o, nsums, rpb, slot, pc, thr, fl_score_f64_rows(x, o->temperature), 0};
    fl_stripes_run(nb, ns, fl_score_task, &ctx);
    if (!fl_atomic_load(&ctx.failed)) {
        for (int64_t j = 0; j < ns * nsums; j++) fl_rsum_merge(&acc[j % nsums], &slot[j]);
        for (int64_t j = 1; j < ns; j++) fl_pc_absorb(&pc[0], &pc[j]);
        for (int64_t j = 0; j < ns; j++) fl_pc_merge_into(&pc[j], o, j == 0);
    }
    for (int64_t j = 0; j < ns; j++) fl_pc_free(&pc[j]);
    free(slot);
    free(pc);
    free(thr);
    return fl_atomic_load(&ctx.failed) ? FL_ENOMEM : FL_OK;
}
