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
 * Two modes:
 *   FL_SCORE_SOFTMAX  rows of C classes, target an int64 class index per row;
 *   FL_SCORE_SIGMOID  every element is a binary prediction (sigmoid), target a bool per element,
 *                     the row's sample weight applies to each element of the row.
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
#include "fl_rowmath.h"
#include "fl_rowmath_f64.h"
#include "fl_rsum.h"
#include "fl_stripes.h"

typedef struct {
    const fl_arr *x, *t, *w;   /* w may be NULL: every weight is 1 */
    fl_grid g;
    const fl_score_opts *o;
    int64_t nsums;             /* FL_SCORE_NSUMS + 3 * bins */
    int64_t rpb;               /* rows per block */
    fl_rsum *slot;             /* nsums partial states per stripe */
    int f64;
    fl_atomic_int failed;      /* set by a task that could not allocate (several may, at once) */
} fl_score_ctx;

/* ---------- per-row arithmetic ---------- */

/* everything a row (softmax) or an element (sigmoid) contributes, before weighting */
typedef struct { double nll, correct, hit, conf, brier, ent, gap; } fl_row_stats;

/* How many classes come before the target y in the order of predict/topk (NaN largest, then by
 * value, ties to the lower index): the target is the prediction iff the rank is 0 and in the
 * top k iff the rank is < k. */
#define FL_DEFINE_RANK(NAME, T)                                                   \
    static int64_t NAME(const T *x, int64_t c, int64_t y)                         \
    {                                                                             \
        T v = x[y];                                                               \
        int64_t r = 0;                                                            \
        if (v != v) {                                                             \
            for (int64_t k = 0; k < y; k++) r += x[k] != x[k];                    \
            return r;                                                             \
        }                                                                         \
        for (int64_t k = 0; k < y; k++) r += (x[k] >= v) | (x[k] != x[k]);        \
        for (int64_t k = y + 1; k < c; k++) r += (x[k] > v) | (x[k] != x[k]);     \
        return r;                                                                 \
    }
FL_DEFINE_RANK(fl_rank_f64, double)

/* the same for a row of dtype dt (float32, float16, bfloat16: fl_xrow) */
FL_ALWAYS_INLINE int64_t fl_rank_t(const void *x, int64_t c, int64_t y, int32_t dt)
{
    float v = fl_xget(x, y, dt);
    int64_t r = 0;
    if (v != v) {
        for (int64_t k = 0; k < y; k++) r += fl_xget(x, k, dt) != fl_xget(x, k, dt);
        return r;
    }
    for (int64_t k = 0; k < y; k++) {
        float xk = fl_xget(x, k, dt);
        r += (xk >= v) | (xk != xk);
    }
    for (int64_t k = y + 1; k < c; k++) {
        float xk = fl_xget(x, k, dt);
        r += (xk > v) | (xk != xk);
    }
    return r;
}

/* exp((x - m)/T) with both the rounding error e of x - m (TwoSum) and the remainder of the
 * division folded in: (s + e)/T = d + (r + e)/T with d = s/T rounded, r = s - d*T exact (fma). */
static inline flv fl_vexp_sub_t(flv x, flv m, flv vt)
{
    flv s = flv_sub(x, m);
    flv bv = flv_sub(s, x);
    flv e = flv_add(flv_sub(x, flv_sub(s, bv)), flv_sub(flv_neg(m), bv));
    flv d = flv_div(s, vt);
    flv r = flv_fma(flv_neg(d), vt, s);
    flv corr = flv_zero_nan(flv_div(flv_add(r, e), vt)); /* x = -inf: inf - inf */
    flv p = flv_exp(d);
    return flv_fma(p, corr, p);
}

/* Float32 rows accumulate in float lanes over groups of FL_GROUP vectors, each group then added
 * in double: a lane adds at most FL_GROUP terms in float (relative error <= FL_GROUP * 2^-24,
 * about the 2 ULP of the exponentials), while one horizontal double sum per group instead of per
 * vector keeps the pass at the speed of the exponentials. */
#define FL_GROUP 4

static inline flv fl_vexp_row(flv x, flv m, flv lo, flv vt, int unit)
{
    flv shift;
    return unit ? fl_vexp_sub(x, m, lo, &shift) : fl_vexp_sub_t(x, m, vt);
}

/* One pass over a row of dtype dt with max m: s = sum e_k, sq = sum e_k^2 and dot = sum e_k (x_k - m)
 * with e_k = exp((x_k - m)/T) (a term with e_k = 0 adds 0 to dot, so -inf logits are harmless);
 * returns e_y, the very value added into s, so that s - e_y is exact where it matters (p_y
 * close to 1). */
FL_ALWAYS_INLINE float fl_rstats_t(const void *x, int64_t n, float m, double t, int64_t y, double *s, double *sq,
                                   double *dot, int32_t dt)
{
    flv vm = flv_set1(m), lo = fl_exp_floor(vm), vt = flv_set1((float)t), zero = flv_set1(0.0f);
    int unit = t == 1.0;
    double s1 = 0.0, s2 = 0.0, d = 0.0;
    float lanes[FL_W] = {0};       /* the vector of exponentials holding e_y */
    int64_t k = 0, nfull = n - n % FL_W, k0 = y - y % FL_W;
    while (k < nfull) {
        int64_t end = k + FL_GROUP * FL_W < nfull ? k + FL_GROUP * FL_W : nfull;
        flv a = zero, b = zero, c = zero;
        for (; k < end; k += FL_W) {
            flv xv = fl_xload(x, k, dt);
            flv e = fl_vexp_row(xv, vm, lo, vt, unit);
            if (k == k0) flv_store(lanes, e);
            a = flv_add(a, e);
            b = flv_fma(e, e, b);
            c = flv_add(c, flv_zero_nan(flv_mul(e, flv_sub(xv, vm))));
        }
        s1 += flv_hsum_d(a);
        s2 += flv_hsum_d(b);
        d += flv_hsum_d(c);
    }
    if (k < n) {
        flv xv = fl_xload_part(x, k, n - k, -INFINITY, dt);
        flv e = fl_vexp_row(xv, vm, lo, vt, unit);
        if (k == k0) flv_store(lanes, e);
        s1 += flv_hsum_d(e);
        s2 += flv_hsum_d(flv_mul(e, e));
        d += flv_hsum_d(flv_zero_nan(flv_mul(e, flv_sub(xv, vm))));
    }
    *s = s1;
    *sq = s2;
    *dot = d;
    return lanes[y - k0];
}

static void fl_rsq_dot_f64(const double *x, const double *e, int64_t n, double m, double *sq, double *dot)
{
    double a[8] = {0, 0, 0, 0, 0, 0, 0, 0}, b[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t k = 0;
    for (; k + 8 <= n; k += 8)
        for (int j = 0; j < 8; j++) {
            a[j] += e[k + j] * e[k + j];
            b[j] += e[k + j] * fl_clamp_shift_d(x[k + j] - m);
        }
    for (; k < n; k++) {
        a[0] += e[k] * e[k];
        b[0] += e[k] * fl_clamp_shift_d(x[k] - m);
    }
    *sq = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
    *dot = ((b[0] + b[1]) + (b[2] + b[3])) + ((b[4] + b[5]) + (b[6] + b[7]));
}

/* sum of exp((x_k - m)/T) for a float64 row (rounding error of x - m folded in), stored in y */
static double fl_rsumexp_t_f64(const double *x, int64_t n, double m, double t, double *y)
{
    if (t == 1.0) {
        double n_eq, rest = fl_rsumexp_f64(x, n, m, y, &n_eq, NULL);
        return n_eq + rest;
    }
    double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t k = 0;
    for (; k + 8 <= n; k += 8)
        for (int j = 0; j < 8; j++) {
            double d = x[k + j] - m;
            double bv = d - x[k + j];
            double err = (x[k + j] - (d - bv)) + (-m - bv);
            err = err == err ? err / t : 0.0;
            double p = fl_exp_d(d / t);
            y[k + j] = p + p * err;
            s[j] += y[k + j];
        }
    for (; k < n; k++) {
        double d = x[k] - m;
        double bv = d - x[k];
        double err = (x[k] - (d - bv)) + (-m - bv);
        err = err == err ? err / t : 0.0;
        double p = fl_exp_d(d / t);
        y[k] = p + p * err;
        s[0] += y[k];
    }
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

/* The softmax statistics of a row from its max m (finite), the sum s of e_k = exp((x_k - m)/T),
 * sq = sum e_k^2, dot = sum e_k (x_k - m), e_y and x_y - m. */
static void fl_softmax_stats(double s, double sq, double dot, double ey, double xy_m, double t, fl_row_stats *st)
{
    double ls = fl_log_d(s);
    double zy = xy_m / t;              /* z_y - max z */
    double mean_z = dot / t / s;       /* E_p[z] - max z */
    double rest = (sq - ey * ey) / (s * s);
    double q = (s - ey) / s;           /* 1 - p_y, without cancelling */
    st->nll = ls - zy;
    st->conf = 1.0 / s;                /* the max logit has e = 1 */
    st->brier = (rest > 0.0 ? rest : 0.0) + q * q;
    st->ent = ls - mean_z;
    st->gap = mean_z - zy;
}

static void fl_special_stats(fl_row_stats *st)
{
    /* a row with NaN, +inf or only -inf: its softmax is NaN (PyTorch), and so is every
     * probability-based statistic; the prediction and the rank are still defined */
    st->nll = st->conf = st->brier = st->ent = st->gap = NAN;
}

/* a row of dtype dt, read in place (or gathered as float32: fl_row_in_x) */
FL_ALWAYS_INLINE void fl_softmax_row_t(const fl_score_ctx *ctx, const void *x, int64_t y, fl_row_stats *st,
                                       int32_t dt)
{
    int64_t c = ctx->g.c;
    double t = ctx->o->temperature;
    int64_t rank = ctx->o->want_rank ? fl_rank_t(x, c, y, dt) : 1;
    st->correct = rank == 0;
    st->hit = rank < ctx->o->k;
    float m = fl_rmax_t(x, c, dt);
    if (!isfinite(m)) { fl_special_stats(st); return; }
    double s, sq, dot;
    float ey = fl_rstats_t(x, c, m, t, y, &s, &sq, &dot, dt);
    fl_softmax_stats(s, sq, dot, (double)ey, (double)fl_xget(x, y, dt) - (double)m, t, st);
}

static void fl_softmax_row_f32(fl_score_ctx *ctx, const char *xrow, int64_t y, void *scratch, fl_row_stats *st)
{
    fl_xrow x = fl_row_in_x(ctx->x, xrow, ctx->g.c, (float *)scratch);
    fl_x_dispatch(x.dt, fl_softmax_row_t, ctx, x.p, y, st);
}

static void fl_softmax_row_f64(fl_score_ctx *ctx, const char *xrow, int64_t y, void *scratch, fl_row_stats *st)
{
    int64_t c = ctx->g.c;
    double t = ctx->o->temperature;
    double *bx = (double *)scratch, *e = bx + c;
    const double *x = fl_row_in_f64(ctx->x, xrow, c, bx);
    int64_t rank = ctx->o->want_rank ? fl_rank_f64(x, c, y) : 1;
    st->correct = rank == 0;
    st->hit = rank < ctx->o->k;
    double m = fl_rmax_f64(x, c);
    if (!isfinite(m)) { fl_special_stats(st); return; }
    double s = fl_rsumexp_t_f64(x, c, m, t, e);
    double sq, dot;
    fl_rsq_dot_f64(x, e, c, m, &sq, &dot);
    fl_softmax_stats(s, sq, dot, e[y], x[y] - m, t, st);
}

/* One binary prediction z = x/T against y in {0, 1}, with a = |z| and u = exp(-a):
 * sigmoid(a) = 1/(1+u), sigmoid(-a) = u/(1+u), softplus(+-z) = max(+-z, 0) + log1p(u). */
static void fl_sigmoid_stats(double z, int y, fl_row_stats *st)
{
    double a = fabs(z);
    double u = fl_exp_d(-a);
    double l1p = fl_log1p_d(u);
    double big = 1.0 / (1.0 + u), small = u * big;
    double zs = y ? -z : z;                     /* the logit of the wrong class */
    double pw = zs > 0.0 ? big : small;         /* |p - y| = sigmoid(zs) */
    if (z != z) pw = NAN;
    st->nll = (zs > 0.0 ? zs : 0.0) + l1p;      /* softplus(zs); NaN stays NaN through l1p */
    st->correct = (z > 0.0) == (y != 0);
    st->hit = 0.0;
    st->conf = big;
    st->brier = pw * pw;
    st->ent = a == INFINITY ? 0.0 : l1p + small * a;
    st->gap = pw == 0.0 ? 0.0 : (y ? -pw : pw) * z; /* (p - y) * z, 0 at the saturated limit */
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
 * weight * conf. */
static inline void fl_score_add(fl_score_acc *a, const fl_row_stats *st, double w)
{
    /* the sums that are 0/1 per row: counts when unweighted */
    static const int is_count[FL_SCORE_NSUMS] = {1, 0, 1, 1, 0, 0, 0};
    const double v[FL_SCORE_NSUMS] = {1.0, st->nll, st->correct, st->hit, st->brier, st->ent, st->gap};
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

static void fl_score_row(fl_score_ctx *ctx, int64_t i0, int64_t i1, void *scratch, fl_score_acc *acc)
{
    const char *xrow = fl_row_ptr(ctx->x, i0, i1);
    const char *trow = fl_row_ptr(ctx->t, i0, i1);
    double w = fl_row_weight(ctx, i0, i1);
    int64_t c = ctx->g.c;
    fl_row_stats st;
    if (ctx->o->mode == FL_SCORE_SOFTMAX) {
        int64_t y = *(const int64_t *)trow;
        if (ctx->f64)
            fl_softmax_row_f64(ctx, xrow, y, scratch, &st);
        else
            fl_softmax_row_f32(ctx, xrow, y, scratch, &st);
        fl_score_add(acc, &st, w);
        return;
    }
    double t = ctx->o->temperature;
    const double *x = fl_row_in_f64(ctx->x, xrow, c, (double *)scratch);
    const uint8_t *tb = (const uint8_t *)trow;
    for (int64_t k = 0; k < c; k++) {
        fl_sigmoid_stats(x[k] / t, tb[k * ctx->t->sc] != 0, &st);
        fl_score_add(acc, &st, w);
    }
}

/* Blocks [b0, b1) into the states of slot `slot`. */
static void fl_score_task(void *vctx, int64_t b0, int64_t b1, int64_t slot)
{
    fl_score_ctx *ctx = (fl_score_ctx *)vctx;
    int64_t c = ctx->g.c, n1 = ctx->g.n1, nrows = ctx->g.n0 * ctx->g.n1;
    int sigmoid = ctx->o->mode == FL_SCORE_SIGMOID;
    size_t esz = (ctx->f64 || sigmoid) ? sizeof(double) : sizeof(float);
    void *scratch = malloc(2 * (size_t)(c > 0 ? c : 1) * esz);
    fl_score_acc *acc = (fl_score_acc *)malloc(sizeof(fl_score_acc));
    if (!scratch || !acc || !fl_score_acc_init(acc, ctx)) {
        free(scratch);
        free(acc);
        fl_atomic_store(&ctx->failed, 1);
        return;
    }
    int64_t r0 = b0 * ctx->rpb, r1 = b1 * ctx->rpb < nrows ? b1 * ctx->rpb : nrows;
    int64_t i0 = r0 / n1, i1 = r0 % n1;
    for (int64_t r = r0; r < r1; r++) {
        fl_score_row(ctx, i0, i1, scratch, acc);
        if (++i1 == n1) { i1 = 0; i0++; }
    }
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

int FL_FN(score)(const fl_arr *x, const fl_arr *target, const fl_arr *weight, fl_grid g,
                 const fl_score_opts *o, fl_rsum *acc)
{
    int64_t nrows = g.n0 * g.n1;
    if (nrows <= 0 || g.c <= 0) return FL_OK;
    int64_t rpb = fl_rows_per_block(g.c), nb = (nrows + rpb - 1) / rpb, ns = fl_stripe_count(nb);
    int64_t nsums = FL_SCORE_NSUMS + 3 * o->bins;
    fl_rsum *slot = (fl_rsum *)malloc((size_t)(ns * nsums) * sizeof(fl_rsum));
    if (!slot) return FL_ENOMEM;
    for (int64_t j = 0; j < ns * nsums; j++) fl_rsum_init(&slot[j]);
    fl_score_ctx ctx = {x, target, weight, g, o, nsums, rpb, slot, fl_score_f64_rows(x, o->temperature), 0};
    fl_stripes_run(nb, ns, fl_score_task, &ctx);
    if (!fl_atomic_load(&ctx.failed))
        for (int64_t j = 0; j < ns * nsums; j++) fl_rsum_merge(&acc[j % nsums], &slot[j]);
    free(slot);
    return fl_atomic_load(&ctx.failed) ? FL_ENOMEM : FL_OK;
}
