/* fl_score.c: the fused offline-scoring kernel behind fl.score and fl.fit_temperature.
 * Compiled once per ISA; every exported symbol is FL_FN(name).
 *
 * One call scores a chunk of rows. Each row is read once (fl_rowio.h) and, with the logits
 * divided by the temperature inside the arithmetic, gives its NLL, whether it is predicted
 * correctly, whether the target is in the top k, its top-label confidence, its Brier term, its
 * entropy and the gap E_p[z] - z_y (the derivative of the NLL in 1/T, up to the factor T, for
 * fit_temperature). Rows are weighted and summed per FIXED block of rows (boundaries depend on
 * the shape only, see fl_score_block_range), block partials are stored in an array, and after
 * the parallel loop they are added in block order into running Neumaier-compensated sums that
 * the caller carries from chunk to chunk. So the result is bitwise the same for every thread
 * count and for every chunking whose boundaries fall on block boundaries.
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

typedef struct {
    const fl_arr *x, *t, *w;   /* w may be NULL: every weight is 1 */
    fl_grid g;
    const fl_score_opts *o;
    int64_t nsums;             /* FL_SCORE_NSUMS + 3 * bins */
    double *part;              /* nsums partial sums per block */
    int f64;
    fl_atomic_int failed;      /* set by a task that could not allocate (several may, at once) */
} fl_score_ctx;

/* ---------- the fixed block structure ---------- */

/* Rows come in periods of o->period rows (the last one may be short); each period is split into
 * blocks of o->block_rows rows (the last block of a period may be short). */
static int64_t fl_score_nblocks(int64_t nrows, const fl_score_opts *o)
{
    int64_t per = o->period, br = o->block_rows;
    int64_t bpp = (per + br - 1) / br, rem = nrows % per;
    return (nrows / per) * bpp + (rem + br - 1) / br;
}

static void fl_score_block_range(int64_t b, int64_t nrows, const fl_score_opts *o, int64_t *r0, int64_t *r1)
{
    int64_t per = o->period, br = o->block_rows;
    int64_t bpp = (per + br - 1) / br;
    int64_t q = b / bpp, j = b % bpp;
    int64_t start = q * per + j * br, end = start + br;
    int64_t pend = q * per + per;
    if (end > pend) end = pend;
    if (end > nrows) end = nrows;
    *r0 = start;
    *r1 = end;
}

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

/* Add one weighted statistic set to a block's partial sums: W, the metric sums, then per ECE
 * bin of conf (NaN conf goes to bin 0, as the oracle) weight * (correct - conf), the weight and
 * weight * conf (the last two draw the reliability diagram). */
static inline void fl_score_add(double *p, const fl_row_stats *st, double w, int64_t bins)
{
    p[FL_SCORE_W] += w;
    p[FL_SCORE_NLL] += w * st->nll;
    p[FL_SCORE_CORRECT] += w * st->correct;
    p[FL_SCORE_HIT] += w * st->hit;
    p[FL_SCORE_BRIER] += w * st->brier;
    p[FL_SCORE_ENT] += w * st->ent;
    p[FL_SCORE_GAP] += w * st->gap;
    int64_t b = 0;
    if (st->conf == st->conf) {
        double f = st->conf * (double)bins;
        b = f >= (double)bins ? bins - 1 : (f > 0.0 ? (int64_t)f : 0);
    }
    p[FL_SCORE_NSUMS + b] += w * (st->correct - st->conf);
    p[FL_SCORE_NSUMS + bins + b] += w;
    p[FL_SCORE_NSUMS + 2 * bins + b] += w * st->conf;
}

static double fl_row_weight(const fl_score_ctx *ctx, int64_t i0, int64_t i1)
{
    if (!ctx->w) return 1.0;
    return *(const double *)fl_row_ptr(ctx->w, i0, i1);
}

static void fl_score_row(fl_score_ctx *ctx, int64_t i0, int64_t i1, void *scratch, double *part)
{
    const char *xrow = fl_row_ptr(ctx->x, i0, i1);
    const char *trow = fl_row_ptr(ctx->t, i0, i1);
    double w = fl_row_weight(ctx, i0, i1);
    int64_t bins = ctx->o->bins, c = ctx->g.c;
    fl_row_stats st;
    if (ctx->o->mode == FL_SCORE_SOFTMAX) {
        int64_t y = *(const int64_t *)trow;
        if (ctx->f64)
            fl_softmax_row_f64(ctx, xrow, y, scratch, &st);
        else
            fl_softmax_row_f32(ctx, xrow, y, scratch, &st);
        fl_score_add(part, &st, w, bins);
        return;
    }
    double t = ctx->o->temperature;
    const double *x = fl_row_in_f64(ctx->x, xrow, c, (double *)scratch);
    const uint8_t *tb = (const uint8_t *)trow;
    for (int64_t k = 0; k < c; k++) {
        fl_sigmoid_stats(x[k] / t, tb[k * ctx->t->sc] != 0, &st);
        fl_score_add(part, &st, w, bins);
    }
}

static void fl_score_task(void *vctx, int64_t b0, int64_t b1)
{
    fl_score_ctx *ctx = (fl_score_ctx *)vctx;
    int64_t c = ctx->g.c, n1 = ctx->g.n1, nrows = ctx->g.n0 * ctx->g.n1;
    int sigmoid = ctx->o->mode == FL_SCORE_SIGMOID;
    size_t esz = (ctx->f64 || sigmoid) ? sizeof(double) : sizeof(float);
    void *scratch = malloc(2 * (size_t)(c > 0 ? c : 1) * esz);
    if (!scratch) { fl_atomic_store(&ctx->failed, 1); return; }
    for (int64_t b = b0; b < b1; b++) {
        double *part = ctx->part + b * ctx->nsums;
        int64_t r0, r1;
        fl_score_block_range(b, nrows, ctx->o, &r0, &r1);
        int64_t i0 = r0 / n1, i1 = r0 % n1;
        for (int64_t r = r0; r < r1; r++) {
            fl_score_row(ctx, i0, i1, scratch, part);
            if (++i1 == n1) { i1 = 0; i0++; }
        }
    }
    free(scratch);
}

/* s, comp += v (Neumaier); an infinite or NaN running sum is carried without compensation */
static void fl_neumaier_add(double *s, double *comp, double v)
{
    double t = *s + v;
    if (!isfinite(t)) { *s = t; return; }
    *comp += fabs(*s) >= fabs(v) ? (*s - t) + v : (v - t) + *s;
    *s = t;
}

/* Rows narrower than float64 divide by the temperature in float32 lanes; a temperature outside
 * the normal float32 range (T > FLT_MAX rounds to inf, T < FLT_MIN is subnormal or 0) would make
 * (x - m)/T a NaN (0/0, inf*0), so such rows take the float64 path, widened on reading. */
static int fl_score_f64_rows(const fl_arr *x, double t)
{
    return x->dtype == FL_F64 || !(t >= (double)FLT_MIN && t <= (double)FLT_MAX);
}

int FL_FN(score)(const fl_arr *x, const fl_arr *target, const fl_arr *weight, fl_grid g,
                 const fl_score_opts *o, double *acc)
{
    int64_t nrows = g.n0 * g.n1;
    if (nrows <= 0 || g.c <= 0) return FL_OK;
    int64_t nb = fl_score_nblocks(nrows, o);
    int64_t nsums = FL_SCORE_NSUMS + 3 * o->bins;
    double *part = (double *)calloc((size_t)nb * (size_t)nsums, sizeof(double));
    if (!part) return FL_ENOMEM;
    fl_score_ctx ctx = {x, target, weight, g, o, nsums, part, fl_score_f64_rows(x, o->temperature), 0};
    fl_parallel_for(nb, fl_score_task, &ctx);
    if (!fl_atomic_load(&ctx.failed))
        for (int64_t b = 0; b < nb; b++)
            for (int64_t j = 0; j < nsums; j++) fl_neumaier_add(&acc[2 * j], &acc[2 * j + 1], part[b * nsums + j]);
    free(part);
    return fl_atomic_load(&ctx.failed) ? FL_ENOMEM : FL_OK;
}
