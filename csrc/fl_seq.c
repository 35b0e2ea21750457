/* fl_seq.c: per-sequence scores of a language model (fl.sequence_scores): for each sequence b
 * the sum over its scored positions t of log softmax(x[b, t] / T)[y_bt], their number, and
 * whether every scored token is the argmax of its row (predict's order: NaN largest, ties to
 * the lowest index). Compiled once per ISA; every exported symbol is FL_FN(name).
 *
 * Rows: row (i0, i1) of the grid is position i1 of sequence i0 (fastlogits.h), so (B, T, V)
 * logits and the (B, V, T) layout (axis=1) both run in place. A row whose token is ignored is
 * not read. A scored row of float32, float16 or bfloat16 is read once, by the cross-entropy's
 * online logsumexp (fl_lse_row.h), which also counts the entries equal to the row's max m: the
 * token y is the argmax iff x_y == m and no entry before y equals m, so the row is looked at
 * again (its part before y, from cache) only when the max is tied at the token. With a
 * temperature T != 1 the max comes first, then the shifts (x - m) / T go to a scratch row and
 * their exponentials are summed from there (the argmax is that of x: dividing by T > 0 keeps
 * the order, and rounding could only create ties). Float64 rows take two passes from cache
 * (max, then exponentials carried with the rounding error of x - m, fl_rowmath_f64.h), as the
 * cross-entropy's. A row whose max is not finite (NaN, +inf, only -inf) has no defined softmax:
 * its log-probability is NaN, and its argmax is found by a scan in predict's order.
 *
 * Sums: a row's log-probability goes into its sequence's order-independent sum (fl_rsum.h).
 * Rows come in fixed blocks, blocks in one stripe per thread (fl_stripes.h); a stripe covers a
 * run of sequences, whose partial states (sum, count, greedy) its task keeps, and the call
 * merges them into the caller's. So the result is bitwise the same for every thread count and
 * every split of the positions into calls (Dask chunks along T).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fastlogits.h"
#include "fl_atomic.h"
#include "fl_kernels.h"
#include "fl_lse_row.h"
#include "fl_rowio.h"
#include "fl_rowmath.h"
#include "fl_rowmath_f64.h"
#include "fl_rsum.h"
#include "fl_stripes.h"

/* The partial result of one stripe: sequences first .. first + n - 1. */
typedef struct {
    int64_t first, n;
    fl_rsum *sum;
    int64_t *count;
    uint8_t *greedy;
    int64_t bad;      /* first row (grid order) with an out-of-range token, or -1 */
} fl_seq_part;

typedef struct {
    const fl_seq_args *a;
    fl_grid g;
    int64_t rpb;      /* rows per block */
    int f64;
    fl_seq_part *slot;
    fl_atomic_int failed;   /* set by a task that could not allocate (several may, at once) */
} fl_seq_ctx;

typedef struct { double logp; int greedy; } fl_seq_row;

/* the token of row (i0, i1) */
static inline int64_t fl_seq_token(const fl_arr *t, int64_t i0, int64_t i1)
{
    const char *p = fl_row_ptr(t, i0, i1);
    return t->dtype == FL_I32 ? (int64_t) * (const int32_t *)p : *(const int64_t *)p;
}

/* ---------- float32, float16 and bfloat16 rows ---------- */

/* Does an entry before y equal m? (the tie case of the greedy test) */
FL_ALWAYS_INLINE int fl_seq_tie_before_t(const void *x, int64_t y, float m, int32_t dt)
{
    for (int64_t k = 0; k < y; k++)
        if (fl_xget(x, k, dt) == m) return 1;
    return 0;
}

/* Is y the first entry of the row in predict's order (the first NaN if any, else the first
 * maximum)? For the rows whose max is not finite. */
FL_ALWAYS_INLINE int fl_seq_first_t(const void *x, int64_t c, int64_t y, int32_t dt)
{
    int64_t best = 0;
    float bv = fl_xget(x, 0, dt);
    for (int64_t k = 1; k < c && bv == bv; k++) {
        float v = fl_xget(x, k, dt);
        if (v > bv || v != v) { bv = v; best = k; }
    }
    return best == y;
}

/* (x_k - m) / T into d, the shifts of a tempered row, each rounded once from the exact
 * difference of two floats */
FL_ALWAYS_INLINE void fl_seq_shift_t(const void *x, int64_t c, float m, double t, float *d, int32_t dt)
{
    for (int64_t k = 0; k < c; k++) d[k] = (float)(((double)fl_xget(x, k, dt) - (double)m) / t);
}

FL_ALWAYS_INLINE fl_seq_row fl_seq_row_t(const fl_seq_ctx *ctx, const void *x, int64_t y, float *d, fl_pend *pend,
                                         int32_t dt)
{
    int64_t c = ctx->g.c;
    double t = ctx->a->temperature, n_max = 0.0, rest = 0.0;
    float m = t == 1.0 ? fl_ce_online_t(x, c, NULL, NULL, &n_max, &rest, NULL, pend, dt) : fl_rmax_t(x, c, dt);
    if (!isfinite(m)) return (fl_seq_row){NAN, fl_seq_first_t(x, c, y, dt)};
    float xy = fl_xget(x, y, dt);
    if (t != 1.0) {
        /* the tempered row: its max shift is 0, counted in n_max like the untempered one's */
        fl_seq_shift_t(x, c, m, t, d, dt);
        rest = fl_rsumexp_t(d, c, 0.0f, NULL, &n_max, 0, fl_ahead_none(), 0, FL_F32);
    }
    fl_ce_sum S = fl_ce_make_sum(n_max, rest);
    /* n_max counts the tempered row's ties, which rounding may have made: look back then */
    int greedy = xy == m && ((t == 1.0 && n_max == 1.0) || !fl_seq_tie_before_t(x, y, m, dt));
    return (fl_seq_row){((double)xy - (double)m) / t - S.logS, greedy};
}

/* ---------- float64 rows ---------- */

static int fl_seq_first_f64(const double *x, int64_t c, int64_t y)
{
    int64_t best = 0;
    double bv = x[0];
    for (int64_t k = 1; k < c && bv == bv; k++)
        if (x[k] > bv || x[k] != x[k]) { bv = x[k]; best = k; }
    return best == y;
}

static fl_seq_row fl_seq_row_f64(const fl_seq_ctx *ctx, const double *x, int64_t y, double *d)
{
    int64_t c = ctx->g.c;
    double t = ctx->a->temperature, m = fl_rmax_f64(x, c), n_max, rest;
    if (!isfinite(m)) return (fl_seq_row){NAN, fl_seq_first_f64(x, c, y)};
    double dy = x[y] - m;
    if (t == 1.0) {
        rest = fl_rsumexp_f64(x, c, m, NULL, &n_max, NULL);
    } else {
        /* the shifts carried with the rounding error of x - m (TwoSum), then divided */
        for (int64_t k = 0; k < c; k++) {
            fl_dd s = fl_dd_two_sum(x[k], -m);
            d[k] = s.hi / t + (s.lo == s.lo ? s.lo / t : 0.0);
        }
        dy = d[y];
        rest = fl_rsumexp_f64(d, c, 0.0, NULL, &n_max, NULL);
    }
    int greedy = x[y] == m;
    if (greedy && !(t == 1.0 && n_max == 1.0))
        for (int64_t k = 0; k < y && greedy; k++) greedy = x[k] != m;
    fl_ce_sum S = fl_ce_make_sum(n_max, rest);
    return (fl_seq_row){dy - S.logS, greedy};
}

/* ---------- the driver ---------- */

static fl_seq_row fl_seq_one_row(const fl_seq_ctx *ctx, int64_t i0, int64_t i1, int64_t y, void *scratch,
                                 fl_pend *pend)
{
    int64_t c = ctx->g.c;
    const char *row = fl_row_ptr(&ctx->a->x, i0, i1);
    if (ctx->f64) {
        double *buf = (double *)scratch;
        return fl_seq_row_f64(ctx, fl_row_in_f64(&ctx->a->x, row, c, buf), y, buf + c);
    }
    float *buf = (float *)scratch;
    fl_xrow x = fl_row_in_x(&ctx->a->x, row, c, buf);
    return fl_x_dispatch(x.dt, fl_seq_row_t, ctx, x.p, y, buf + c, pend);
}

/* Rows [r0, r1) into part p (its sequences r0 / n1 .. (r1 - 1) / n1). */
static void fl_seq_rows(const fl_seq_ctx *ctx, int64_t r0, int64_t r1, fl_seq_part *p, void *scratch)
{
    const fl_seq_args *a = ctx->a;
    int64_t n1 = ctx->g.n1, c = ctx->g.c;
    fl_pend pend = {NULL, NULL, NULL, 0, 0, -1, FL_PEND_CE, 0.0f, 0.0f, 0.0f, 0.0, 0.0, FL_F32, FL_F32};
    fl_rsum_buf buf;
    fl_rsum_buf_init(&buf);
    int64_t cur = r0 / n1;
    for (int64_t r = r0; r < r1; r++) {
        int64_t i0 = r / n1, i1 = r % n1;
        if (i0 != cur) {
            fl_rsum_buf_done(&buf);
            p->sum[cur - p->first] = buf.s;
            fl_rsum_buf_init(&buf);
            cur = i0;
        }
        int64_t y = fl_seq_token(&a->tokens, i0, i1);
        if (y == a->ignore_index) continue;
        if (y < 0 || y >= c) {
            if (p->bad < 0) p->bad = r;
            continue;
        }
        fl_seq_row lr = fl_seq_one_row(ctx, i0, i1, y, scratch, &pend);
        fl_rsum_buf_add(&buf, lr.logp);
        p->count[cur - p->first]++;
        p->greedy[cur - p->first] &= (uint8_t)lr.greedy;
    }
    fl_rsum_buf_done(&buf);
    p->sum[cur - p->first] = buf.s;
}

/* Blocks [b0, b1) into slot `slot`. */
static void fl_seq_task(void *vctx, int64_t b0, int64_t b1, int64_t slot)
{
    fl_seq_ctx *ctx = (fl_seq_ctx *)vctx;
    int64_t nrows = ctx->g.n0 * ctx->g.n1, n1 = ctx->g.n1;
    int64_t r0 = b0 * ctx->rpb, r1 = b1 * ctx->rpb < nrows ? b1 * ctx->rpb : nrows;
    fl_seq_part *p = &ctx->slot[slot];
    p->first = r0 / n1;
    p->n = (r1 - 1) / n1 - p->first + 1;
    size_t n = (size_t)p->n, c = (size_t)(ctx->g.c > 0 ? ctx->g.c : 1);
    /* the row gathered (strided layouts) and the tempered shifts */
    void *scratch = malloc(2 * c * (ctx->f64 ? sizeof(double) : sizeof(float)));
    p->sum = (fl_rsum *)malloc(n * sizeof(fl_rsum));
    p->count = (int64_t *)calloc(n, sizeof(int64_t));
    p->greedy = (uint8_t *)malloc(n);
    if (!scratch || !p->sum || !p->count || !p->greedy) {
        fl_atomic_store(&ctx->failed, 1);
        free(scratch);
        return;
    }
    for (size_t j = 0; j < n; j++) fl_rsum_init(&p->sum[j]);
    memset(p->greedy, 1, n);
    fl_seq_rows(ctx, r0, r1, p, scratch);
    free(scratch);
}

int FL_FN(sequence_scores)(const fl_seq_args *a, fl_grid g, fl_rsum *logprob, int64_t *count, uint8_t *greedy,
                           int64_t *first_bad)
{
    *first_bad = -1;
    int64_t nrows = g.n0 * g.n1;
    if (nrows <= 0) return FL_OK;
    fl_seq_ctx ctx;
    memset(&ctx, 0, sizeof(ctx));
    ctx.a = a;
    ctx.g = g;
    ctx.f64 = a->x.dtype == FL_F64;
    ctx.rpb = fl_rows_per_block(g.c);
    int64_t nb = (nrows + ctx.rpb - 1) / ctx.rpb, ns = fl_stripe_count(nb);
    ctx.slot = (fl_seq_part *)calloc((size_t)ns, sizeof(fl_seq_part));
    if (!ctx.slot) return FL_ENOMEM;
    for (int64_t i = 0; i < ns; i++) ctx.slot[i].bad = -1;
    fl_stripes_run(nb, ns, fl_seq_task, &ctx);
    for (int64_t i = 0; i < ns; i++) {
        fl_seq_part *p = &ctx.slot[i];
        if (!fl_atomic_load(&ctx.failed)) {
            for (int64_t j = 0; j < p->n; j++) {
                fl_rsum_merge(&logprob[p->first + j], &p->sum[j]);
                count[p->first + j] += p->count[j];
                greedy[p->first + j] &= p->greedy[j];
            }
            if (p->bad >= 0 && (*first_bad < 0 || p->bad < *first_bad)) *first_bad = p->bad;
        }
        free(p->sum);
        free(p->count);
        free(p->greedy);
    }
    free(ctx.slot);
    return fl_atomic_load(&ctx.failed) ? FL_ENOMEM : FL_OK;
}
