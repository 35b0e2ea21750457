/* fl_logprobs.c: token_logprobs (API section 8): the log-probability of a chosen token, its
 * rank and the top-n alternatives, per row. Compiled once per ISA; every symbol is FL_FN(name).
 *
 * A row is read from memory once, in blocks of FL_LP_BLOCK elements that stay in L1: each
 * block's max and min, the count of values strictly above the chosen token's (its rank) and
 * the top-n candidates behind a rising threshold (fl_dlist, NaN ranking first as in topk),
 * then the block's exponentials against the running max (the n_eq + rest sums of the
 * cross-entropy kernel: the shorter exponential, float32 partial sums of FL_SUM_CHUNK vectors
 * joining float64 lanes, so a token's log-probability costs what its cross-entropy does; the
 * sums are rescaled in float64 when a later block raises the max: an online logsumexp).
 * log p = ((double)y - m) - log(sum), rounded once; the relative error of the sum stays below
 * about 2e-6 (a few ULP of log p on ordinary rows, see tests/test_decode.py). With a temperature
 * each block is first divided in L1 (y = x / T rounded to float32, as log_softmax(x / T) would
 * see it). float64 rows are computed in float64 throughout.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fastlogits.h"
#include "fl_decode_select.h"
#include "fl_kernels.h"
#include "fl_pool.h"
#include "fl_rowio.h"
#include "fl_rowmath.h"
#include "fl_rowmath_f64.h"

typedef struct {
    const fl_lp_args *a;
    fl_grid g;
    int64_t *bad;   /* per block: the first row (grid order) whose token is out of range, or -1 */
    int failed;
} fl_lp_ctx;

typedef struct {
    void *xbuf, *ybuf;   /* c float64 each: a gathered row, the tempered row */
    fl_dlist list;
    fl_dpos *top;        /* the top-n candidates in order */
} fl_lp_scratch;

/* element j of a per-row output whose entries lie along its class stride */
static void fl_lp_put(const fl_arr *a, int64_t i0, int64_t i1, int64_t j, double v)
{
    char *p = fl_row_ptr(a, i0, i1) + j * a->sc * (int64_t)fl_esize(a->dtype);
    if (a->dtype == FL_I64) *(int64_t *)(void *)p = (int64_t)v;
    else if (a->dtype == FL_F64) *(double *)(void *)p = v;
    else *(float *)(void *)p = (float)v;
}

/* The top-n candidates of a block in L1 (n elements at x, token ids base + k) offered to L:
 * a run of 4 vectors whose max is below the threshold is passed over with one compare. */
FL_ALWAYS_INLINE void fl_lp_offer_block_t(const void *x, int64_t n, int64_t base, int64_t want, fl_dlist *L,
                                          float *thr, uint64_t *theta, int32_t dt)
{
    int64_t k = 0;
    for (; k + 4 * FL_W <= n; k += 4 * FL_W) {
        flv m = flv_max(flv_max(fl_xload(x, k, dt), fl_xload(x, k + FL_W, dt)),
                        flv_max(fl_xload(x, k + 2 * FL_W, dt), fl_xload(x, k + 3 * FL_W, dt)));
        if (!(flv_hmax(m) < *thr)) fl_dlist_offer_t(x, k, 4 * FL_W, base, want, 1.0f, thr, theta, L, dt);
    }
    fl_dlist_offer_t(x, k, n - k, base, want, 1.0f, thr, theta, L, dt);
}

/* One block of a float row (n elements at x, token ids base + k), read once: its max, its
 * min (NaN ignored) and the number of values strictly above yt (NaN compares false); when
 * the block's max reaches the top-n threshold (want > 0), its candidates, from L1. */
FL_ALWAYS_INLINE float fl_lp_block_t(const void *x, int64_t n, int64_t base, float yt, int64_t want, fl_dlist *L,
                                     float *thr, uint64_t *theta, float *mn, int64_t *above, int32_t dt)
{
    flv amax = flv_set1(-INFINITY), amin = flv_set1(INFINITY), zero = flv_set1(0.0f), one = flv_set1(1.0f);
    flv vt = flv_set1(yt), cnt = zero;
    int64_t k = 0, esz = (int64_t)fl_xsize(dt);
    for (; k + 4 * FL_W <= n; k += 4 * FL_W) {
        for (int64_t j = 0; j < 4 * FL_W * esz; j += 64) FL_PREFETCH((const char *)x + k * esz + 4096 + j);
        flv v[4];
        FL_UNROLL(4)
        for (int j = 0; j < 4; j++) {
            v[j] = fl_xload(x, k + j * FL_W, dt);
            amin = flv_min_ord(v[j], amin);
            cnt = flv_add(cnt, flv_sel_neg(flv_sub(vt, v[j]), one, zero));
        }
        amax = flv_max(flv_max(flv_max(v[0], v[1]), flv_max(v[2], v[3])), amax);
    }
    int64_t n_above = (int64_t)flv_hsum_d(cnt);
    for (int64_t j = k; j < n; j++) {
        float v = fl_xget(x, j, dt);
        n_above += v > yt;
        amin = flv_min_ord(flv_set1(v), amin);
        amax = flv_max(flv_set1(v), amax);
    }
    float bm = flv_hmax(amax);
    if (want > 0 && !(bm < *thr)) fl_lp_offer_block_t(x, n, base, want, L, thr, theta, dt);
    *above += n_above;
    *mn = -flv_hmax(flv_neg(amin));
    return bm;
}

/* Elements per block of a row: read from memory once, the block stays in L1 for its sum. */
#define FL_LP_BLOCK 2048

/* The online logsumexp of a row (n_eq + rest kept apart) block by block, each block summed
 * from L1 against the running max and the sums rescaled in float64 when a block raises it;
 * with the rank count and top-n candidates of the same read. Returns log(sum) (NaN for a row
 * without softmax) and the max in *m. */
FL_ALWAYS_INLINE double fl_lp_row_t(const void *x, int64_t c, float t, float yt, int64_t want, fl_dlist *L,
                                    float *buf, float *m_out, int64_t *above, int32_t dt)
{
    float thr = -INFINITY, m = -INFINITY;
    uint64_t theta = 0;
    double n_eq = 0.0, rest = 0.0;
    int valid = 1;
    int64_t esz = (int64_t)fl_xsize(dt);
    L->n = 0;
    *above = 0;
    for (int64_t k0 = 0; k0 < c; k0 += FL_LP_BLOCK) {
        int64_t n = c - k0 < FL_LP_BLOCK ? c - k0 : FL_LP_BLOCK;
        const void *xb = (const char *)x + k0 * esz;
        float mn, bm;
        if (t != 1.0f) {
            /* the tempered block, x / t rounded to float32, in L1 */
            flv tv = flv_set1(t);
            int64_t k = 0;
            for (; k + FL_W <= n; k += FL_W) flv_store(buf + k, flv_div(fl_xload(xb, k, dt), tv));
            for (; k < n; k++) buf[k] = fl_xget(xb, k, dt) / t;
            bm = fl_lp_block_t(buf, n, k0, yt, want, L, &thr, &theta, &mn, above, FL_F32);
        } else {
            bm = fl_lp_block_t(xb, n, k0, yt, want, L, &thr, &theta, &mn, above, dt);
        }
        if (bm != bm || bm == INFINITY) valid = 0;
        if (!valid || bm == -INFINITY) continue;
        if (bm > m) {
            double f = m == -INFINITY ? 0.0 : fl_exp_d((double)m - (double)bm);
            rest = (rest + n_eq) * f;
            n_eq = 0.0;
            m = bm;
        }
        double ne, r;
        if (t != 1.0f)
            r = mn >= m + FL_EXPF_NORMAL_LO ? fl_rsumexp_t(buf, n, m, NULL, &ne, 0, fl_ahead_none(), 1, FL_F32)
                                            : fl_rsumexp_t(buf, n, m, NULL, &ne, 0, fl_ahead_none(), 0, FL_F32);
        else
            r = mn >= m + FL_EXPF_NORMAL_LO ? fl_rsumexp_t(xb, n, m, NULL, &ne, 0, fl_ahead_none(), 1, dt)
                                            : fl_rsumexp_t(xb, n, m, NULL, &ne, 0, fl_ahead_none(), 0, dt);
        rest += r;
        n_eq += ne;
    }
    if (want > 0 && L->n > want) fl_dlist_prune(L, want);
    *m_out = valid ? m : NAN;
    return valid && m > -INFINITY ? fl_log_sum(n_eq, rest) : NAN;
}

/* the top-n of the list (the top candidates and their ties, index order) in position order
 * into top: those above the n-th key sorted, then its ties by index */
static void fl_lp_order(const fl_dlist *L, int64_t n, fl_dpos *top)
{
    uint64_t theta = 0;
    if (L->n > n) {
        for (int64_t q = 0; q < L->n; q++) L->sel[q] = L->c[q].key;
        theta = fl_dec_kth_largest(L->sel, L->n, n);
    }
    int64_t g = 0;
    for (int64_t q = 0; q < L->n; q++)
        if (L->n <= n || L->c[q].key > theta) top[g++] = (fl_dpos){L->c[q].key, L->c[q].i, 0};
    qsort(top, (size_t)g, sizeof(fl_dpos), fl_dpos_cmp);
    for (int64_t q = 0; q < L->n && g < n; q++)
        if (L->c[q].key == theta) top[g++] = (fl_dpos){L->c[q].key, L->c[q].i, 0};
}

static double fl_lp_value(uint64_t key) { return key == UINT64_MAX ? NAN : fl_dkey_value(key); }

/* one float row (float32, float16, bfloat16: computed in float32) */
static void fl_lp_row_f32(const fl_lp_ctx *ctx, fl_lp_scratch *s, int64_t i0, int64_t i1, int64_t tok)
{
    const fl_lp_args *a = ctx->a;
    int64_t c = ctx->g.c, n = a->top_n;
    const char *xrow = fl_row_ptr(&a->x, i0, i1);
    fl_xrow x = fl_row_in_x(&a->x, xrow, c, (float *)s->xbuf);
    float t = (float)*(const double *)fl_row_ptr(&a->temperature, i0, i1);
    float yt = fl_xget(x.p, tok, x.dt) / t, m;
    int64_t above;
    double ls = fl_x_dispatch(x.dt, fl_lp_row_t, x.p, c, t, yt, n, &s->list, (float *)s->ybuf, &m, &above);
    fl_put_scalar(&a->logprob, i0, i1, (double)(float)(((double)yt - (double)m) - ls));
    if (a->rank.data) *(int64_t *)fl_row_ptr(&a->rank, i0, i1) = 1 + above;
    if (n > 0) {
        fl_lp_order(&s->list, n, s->top);
        for (int64_t j = 0; j < n; j++) {
            fl_lp_put(&a->top_token, i0, i1, j, (double)s->top[j].idx);
            fl_lp_put(&a->top_logprob, i0, i1, j, (double)(float)((fl_lp_value(s->top[j].key) - (double)m) - ls));
        }
    }
}

/* one float64 row */
static void fl_lp_row_f64(const fl_lp_ctx *ctx, fl_lp_scratch *s, int64_t i0, int64_t i1, int64_t tok)
{
    const fl_lp_args *a = ctx->a;
    int64_t c = ctx->g.c, n = a->top_n;
    const double *x = fl_row_in_f64(&a->x, fl_row_ptr(&a->x, i0, i1), c, (double *)s->xbuf);
    double t = *(const double *)fl_row_ptr(&a->temperature, i0, i1);
    if (t != 1.0) {
        double *y = (double *)s->ybuf;
        for (int64_t k = 0; k < c; k++) y[k] = x[k] / t;
        x = y;
    }
    double m = fl_rmax_f64(x, c), yt = x[tok], ls = NAN;
    int64_t above = 0;
    for (int64_t k = 0; k < c; k++) above += x[k] > yt;
    if (isfinite(m)) {
        double n_eq, rest = fl_rsumexp_f64(x, c, m, NULL, &n_eq, NULL);
        ls = fl_log_sum(n_eq, rest);
    }
    fl_put_scalar(&a->logprob, i0, i1, (yt - m) - ls);
    if (a->rank.data) *(int64_t *)fl_row_ptr(&a->rank, i0, i1) = 1 + above;
    if (n > 0) {
        /* the candidates by key: every element at or above the rising threshold */
        fl_dlist *L = &s->list;
        uint64_t theta = 0;
        L->n = 0;
        for (int64_t k = 0; k < c; k++) {
            uint64_t key = x[k] != x[k] ? UINT64_MAX : fl_dkey(x[k]);
            if (key < theta) continue;
            if (!fl_dlist_room(L, n, &theta)) return;
            L->c[L->n].key = key;
            L->c[L->n].i = k;
            L->n++;
        }
        if (L->n > n) fl_dlist_prune(L, n);
        fl_lp_order(L, n, s->top);
        for (int64_t j = 0; j < n; j++) {
            fl_lp_put(&a->top_token, i0, i1, j, (double)s->top[j].idx);
            fl_lp_put(&a->top_logprob, i0, i1, j, (x[s->top[j].idx] - m) - ls);
        }
    }
}

static int64_t fl_lp_token(const fl_arr *t, int64_t i0, int64_t i1)
{
    const char *p = fl_row_ptr(t, i0, i1);
    return t->dtype == FL_I32 ? (int64_t)*(const int32_t *)(const void *)p : *(const int64_t *)(const void *)p;
}

static void fl_lp_task(void *vctx, int64_t b0, int64_t b1)
{
    fl_lp_ctx *ctx = (fl_lp_ctx *)vctx;
    const fl_lp_args *a = ctx->a;
    int64_t c = ctx->g.c, n = a->top_n;
    fl_lp_scratch s;
    memset(&s, 0, sizeof(s));
    s.list.cap = 2 * n + 64;
    s.list.nan_top = 1;
    s.xbuf = malloc((size_t)c * sizeof(double));
    s.ybuf = malloc((size_t)c * sizeof(double));
    s.list.c = (fl_dcand *)malloc((size_t)s.list.cap * sizeof(fl_dcand));
    s.list.sel = (uint64_t *)malloc((size_t)s.list.cap * sizeof(uint64_t));
    s.top = (fl_dpos *)malloc((size_t)(n > 0 ? n : 1) * sizeof(fl_dpos));
    if (s.xbuf && s.ybuf && s.list.c && s.list.sel && s.top) {
        int64_t rpb = fl_rows_per_block(c), nrows = ctx->g.n0 * ctx->g.n1;
        for (int64_t b = b0; b < b1 && !s.list.failed; b++) {
            int64_t r0 = b * rpb, r1 = r0 + rpb < nrows ? r0 + rpb : nrows;
            ctx->bad[b] = -1;
            for (int64_t r = r0; r < r1 && !s.list.failed; r++) {
                int64_t i0 = r / ctx->g.n1, i1 = r % ctx->g.n1, tok = fl_lp_token(&a->tokens, i0, i1);
                if ((uint64_t)tok >= (uint64_t)c) {
                    if (ctx->bad[b] < 0) ctx->bad[b] = r;
                    continue;
                }
                if (a->x.dtype == FL_F64) fl_lp_row_f64(ctx, &s, i0, i1, tok);
                else fl_lp_row_f32(ctx, &s, i0, i1, tok);
            }
        }
    }
    if (!(s.xbuf && s.ybuf && s.list.c && s.list.sel && s.top) || s.list.failed) ctx->failed = 1;
    free(s.xbuf);
    free(s.ybuf);
    free(s.list.c);
    free(s.list.sel);
    free(s.top);
}

int FL_FN(token_logprobs)(const fl_lp_args *a, fl_grid g, int64_t *first_bad)
{
    *first_bad = -1;
    int64_t nrows = g.n0 * g.n1;
    if (nrows <= 0) return FL_OK;
    int64_t rpb = fl_rows_per_block(g.c), nb = (nrows + rpb - 1) / rpb;
    fl_lp_ctx ctx = {a, g, (int64_t *)malloc((size_t)nb * sizeof(int64_t)), 0};
    if (!ctx.bad) return FL_ENOMEM;
    fl_parallel_for(nb, fl_lp_task, &ctx);
    for (int64_t b = 0; b < nb; b++)
        if (ctx.bad[b] >= 0) { *first_bad = ctx.bad[b]; break; }
    free(ctx.bad);
    return ctx.failed ? FL_ENOMEM : FL_OK;
}
