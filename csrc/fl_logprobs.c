/* fl_logprobs.c: token_logprobs (API section 8): the log-probability of a chosen token, its
 * rank and the top-n alternatives, per row. Compiled once per ISA; every symbol is FL_FN(name).
 *
 * A row is read from memory once, in blocks of FL_LP_BLOCK elements that stay in L1: each
 * block's max and min, the count of values strictly above the chosen token's (its rank) and
 * the top-n candidates behind a rising threshold (fl_dlist, NaN ranking first as in topk),
 * then the block's exponentials against the running max (the n_eq + rest sums of the
 * cross-entropy kernel: the shorter exponential, float32 partial sums of FL_SUM_CHUNK vectors
 * joining float64 lanes, so a token's log-probability costs what its cross-entropy does; the
 * sums are rescaled in float64 when a later block raises the max: an online logsumexp; a
 * block below the running max takes the sum without the count of ties; the next block is
 * fetched during the sums). log p = ((double)y - m) - log(sum), rounded once, within the
 * cross-entropy's per-row bound (tests/test_decode_logprobs.py). With a temperature
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
    float *bmax;         /* c / FL_LP_BLOCK + 1 block maxima, and as many keys */
    uint64_t *bkey;
} fl_lp_scratch;

/* element j of a per-row output whose entries lie along its class stride */
static void fl_lp_put(const fl_arr *a, int64_t i0, int64_t i1, int64_t j, double v)
{
    char *p = fl_row_ptr(a, i0, i1) + j * a->sc * (int64_t)fl_esize(a->dtype);
    if (a->dtype == FL_I64) *(int64_t *)(void *)p = (int64_t)v;
    else if (a->dtype == FL_F64) *(double *)(void *)p = v;
    else *(float *)(void *)p = (float)v;
}

/* The top-n candidates of a block (n elements at x, tempered by t, token ids base + k) offered
 * to L: the lanes at or above the threshold (in logit space) are read off comparison masks,
 * and a run of four vectors below it costs one compare; a block holding NaN (nan: which ranks
 * first) has each vector's NaN lanes offered too, and a NaN threshold offers every element. */
FL_ALWAYS_INLINE void fl_lp_offer_block_t(const void *x, int64_t n, int64_t base, int64_t want, float t, fl_dlist *L,
                                          float *thr, uint64_t *theta, int nan, int32_t dt)
{
    const unsigned all = (1u << FL_W) - 1u;
    int64_t k = 0;
    for (; k + 4 * FL_W <= n && *thr == *thr; k += 4 * FL_W) {
        flv v[4];
        for (int j = 0; j < 4; j++) v[j] = fl_xload(x, k + j * FL_W, dt);
        if (!nan && !flv_any_ge(flv_max_ord(flv_max_ord(v[0], v[1]), flv_max_ord(v[2], v[3])), flv_set1(*thr))) continue;
        for (int j = 0; j < 4; j++) {
            unsigned msk = flv_mask_ge(v[j], flv_set1(*thr)) | (nan ? all & ~flv_mask_ge(v[j], v[j]) : 0u);
            for (; msk; msk &= msk - 1)
                fl_dlist_offer_t(x, k + j * FL_W + fl_ctz(msk), 1, base, want, t, thr, theta, L, dt);
        }
    }
    fl_dlist_offer_t(x, k, n - k, base, want, t, thr, theta, L, dt);
}

/* One block of a float row (n elements at x), read once: its max (NaN when it holds one), its
 * min (NaN ignored) and the number of values strictly above yt (NaN compares false). */
FL_ALWAYS_INLINE float fl_lp_block_t(const void *x, int64_t n, float yt, float *mn, int64_t *above, int32_t dt)
{
    flv zero = flv_set1(0.0f), one = flv_set1(1.0f), vt = flv_set1(yt);
    /* four independent chains of each (max, min, count): one would be latency-bound */
    flv amax[4], amins[4], cnt[4];
    for (int j = 0; j < 4; j++) {
        amax[j] = flv_set1(-INFINITY);
        amins[j] = flv_set1(INFINITY);
        cnt[j] = zero;
    }
    int64_t k = 0;
    for (; k + 4 * FL_W <= n; k += 4 * FL_W) {
        FL_UNROLL(4)
        for (int j = 0; j < 4; j++) {
            flv v = fl_xload(x, k + j * FL_W, dt);
            amax[j] = flv_max(v, amax[j]);
            amins[j] = flv_min_ord(v, amins[j]);
            cnt[j] = flv_add(cnt[j], flv_sel_neg(flv_sub(vt, v), one, zero));
        }
    }
    flv amx = flv_max(flv_max(amax[0], amax[1]), flv_max(amax[2], amax[3]));
    flv amin = flv_min_ord(flv_min_ord(amins[0], amins[1]), flv_min_ord(amins[2], amins[3]));
    int64_t n_above = (int64_t)flv_hsum_d(flv_add(flv_add(cnt[0], cnt[1]), flv_add(cnt[2], cnt[3])));
    for (int64_t j = k; j < n; j++) {
        float v = fl_xget(x, j, dt);
        n_above += v > yt;
        amin = flv_min_ord(flv_set1(v), amin);
        amx = flv_max(flv_set1(v), amx);
    }
    float bm = flv_hmax(amx);
    *above += n_above;
    *mn = -flv_hmax(flv_neg(amin));
    return bm;
}


/* Elements per block of a row: read from memory once, the block stays in L1 for its sum. */
#define FL_LP_BLOCK 2048

/* The top-n candidates of a row, after its pass (bmax: its blocks' maxima, tempered): the
 * want-th largest block maximum is at most the want-th largest value (the want largest maxima
 * are want distinct elements), so only the blocks whose maximum reaches it can hold a
 * candidate (about want of them, from cache), and there only the values above it. */
FL_ALWAYS_INLINE void fl_lp_top_t(const void *x, int64_t c, float t, int64_t want, const float *bmax, uint64_t *bkey,
                                  fl_dlist *L, int32_t dt)
{
    int64_t nb = (c + FL_LP_BLOCK - 1) / FL_LP_BLOCK, esz = (int64_t)fl_xsize(dt);
    uint64_t bound = 0, theta = 0;
    for (int64_t b = 0; b < nb; b++) bkey[b] = fl_rank_key(bmax[b]);
    if (nb > want) {
        bound = fl_dec_kth_largest(bkey, nb, want);
        for (int64_t b = 0; b < nb; b++) bkey[b] = fl_rank_key(bmax[b]); /* (reordered by the select) */
    }
    float thr = bound ? fl_dlist_thr(bound, t) : -INFINITY;
    L->n = 0;
    for (int64_t b = 0, k0 = 0; b < nb; b++, k0 += FL_LP_BLOCK) {
        if (bkey[b] < bound) continue;
        int64_t n = c - k0 < FL_LP_BLOCK ? c - k0 : FL_LP_BLOCK;
        fl_lp_offer_block_t((const char *)x + k0 * esz, n, k0, want, t, L, &thr, &theta, bmax[b] != bmax[b], dt);
    }
    if (L->n > want) fl_dlist_prune(L, want);
}

/* The online logsumexp of a row (n_eq + rest kept apart) block by block, each block summed
 * from L1 against the running max and the sums rescaled in float64 when a block raises it,
 * with the rank count of the same read; the blocks' maxima into bmax. Returns log(sum) (NaN
 * for a row without softmax) and the max in *m. */
FL_ALWAYS_INLINE double fl_lp_row_t(const void *x, int64_t c, float t, float yt, float *buf, float *bmax, float *m_out,
                                    int64_t *above, int32_t dt)
{
    float m = -INFINITY;
    double n_eq = 0.0, rest = 0.0;
    int valid = 1, gap = 0; /* gap: a block met a logit in the gap (fl_rsumexp_loss_t) */
    int64_t esz = (int64_t)fl_xsize(dt);
    *above = 0;
    for (int64_t k0 = 0, b = 0; k0 < c; k0 += FL_LP_BLOCK, b++) {
        int64_t n = c - k0 < FL_LP_BLOCK ? c - k0 : FL_LP_BLOCK;
        const void *xb = (const char *)x + k0 * esz;
        float mn, bm;
        if (t != 1.0f) {
            /* the tempered block, x / t rounded to float32, in L1 */
            flv tv = flv_set1(t);
            int64_t k = 0;
            for (; k + FL_W <= n; k += FL_W) flv_store(buf + k, flv_div(fl_xload(xb, k, dt), tv));
            for (; k < n; k++) buf[k] = fl_xget(xb, k, dt) / t;
            bm = fl_lp_block_t(buf, n, yt, &mn, above, FL_F32);
        } else {
            bm = fl_lp_block_t(xb, n, yt, &mn, above, dt);
        }
        bmax[b] = bm;
        if (bm != bm || bm == INFINITY) valid = 0;
        if (!valid || bm == -INFINITY) continue;
        if (bm > m) {
            double f = m == -INFINITY ? 0.0 : fl_exp_d((double)m - (double)bm);
            rest = (rest + n_eq) * f;
            n_eq = 0.0;
            m = bm;
        }
        /* the next block (after the last, the start of the next row when rows are contiguous)
         * is on another page, where the hardware prefetcher stops: fetched during the sums */
        int64_t after = c - k0 - n, fetch = after > FL_LP_BLOCK ? FL_LP_BLOCK : after > 0 ? after : n;
        fl_ahead ahead = {(const char *)xb + n * esz, fetch * esz, esz, NULL};
        double ne = 0.0;
        /* (cross-entropy's sums: a block below the running max has no entry equal to it, so
         * all of it is rest; the exponentials' mode from its min, fl_exp_mode) */
        int below = bm < m, mode = fl_exp_mode(m, mn);
        rest += t != 1.0f ? fl_rsumexp_loss_t(buf, n, m, NULL, &ne, below, ahead, mode, &gap, FL_F32)
                          : fl_rsumexp_loss_t(xb, n, m, NULL, &ne, below, ahead, mode, &gap, dt);
        n_eq += ne;
    }
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
    double ls = fl_x_dispatch(x.dt, fl_lp_row_t, x.p, c, t, yt, (float *)s->ybuf, s->bmax, &m, &above);
    fl_put_scalar(&a->logprob, i0, i1, (double)(float)(((double)yt - (double)m) - ls));
    if (a->rank.data) *(int64_t *)fl_row_ptr(&a->rank, i0, i1) = 1 + above;
    if (n > 0) {
        fl_x_dispatch(x.dt, fl_lp_top_t, x.p, c, t, n, s->bmax, s->bkey, &s->list);
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
    s.bmax = (float *)malloc((size_t)(c / FL_LP_BLOCK + 1) * sizeof(float));
    s.bkey = (uint64_t *)malloc((size_t)(c / FL_LP_BLOCK + 1) * sizeof(uint64_t));
    int ok = s.xbuf && s.ybuf && s.list.c && s.list.sel && s.top && s.bmax && s.bkey;
    if (ok) {
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
    if (!ok || s.list.failed) ctx->failed = 1;
    free(s.xbuf);
    free(s.ybuf);
    free(s.list.c);
    free(s.list.sel);
    free(s.top);
    free(s.bmax);
    free(s.bkey);
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
