/* fl_select.c: selection along the class axis: argmax (predict), top-k and the binary threshold
 * (predict_binary). Compiled once per ISA; every exported symbol is FL_FN(name).
 *
 * Order of candidates everywhere: NaN above everything, then by value, ties to the lower
 * index. argmax takes a row in runs, comparing a run's max with the best so far before looking
 * for its index; top-k keeps the k best in a sorted list (small k) or a min-heap and skips runs
 * of 4 vectors whose max does not beat the worst kept; float16/bfloat16 rows are compared by
 * int16 order keys in both, widened only where a candidate is offered; rows of few classes go
 * FL_W at a time in the lanes (fl_tile.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fastlogits.h"
#include "fl_kernels.h"
#include "fl_postdrv.h"

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

/* ---------------- float16/bfloat16 rows in the integer domain ----------------
 * A half's bits map to an int16 key ordered like its value: the magnitude bits, negated when
 * the sign bit is set (so -0 and +0 both key 0, equal as the values are). A NaN is found by its
 * magnitude bits, above inf's. argmax and top-k compare keys, FL_KW = 2 FL_W halves a vector
 * with no widening: a half row is read at half the bytes of a float32 one and with fewer
 * operations. */
static inline int fl_hkey(uint16_t h) { int m = h & 0x7fff; return (h & 0x8000) ? -m : m; }
static inline int fl_hinf(int32_t dt) { return dt == FL_F16 ? 0x7c00 : 0x7f80; }

/* the largest key of the n >= 1 halves at x, and in *mag their largest magnitude bits */
static inline int fl_hkey_max(const uint16_t *x, int64_t n, int *mag)
{
    flk km = flk_set1(-0x7fff), am = flk_set1(0), km1 = km, am1 = am;
    int64_t k = 0;
    for (; k + 4 * FL_KW <= n; k += 4 * FL_KW) { /* unrolled: the loop's overhead was a third */
        flk h0 = flk_load(x + k), h1 = flk_load(x + k + FL_KW);
        flk h2 = flk_load(x + k + 2 * FL_KW), h3 = flk_load(x + k + 3 * FL_KW);
        flk a0 = flk_mag(h0), a1 = flk_mag(h1), a2 = flk_mag(h2), a3 = flk_mag(h3);
        km = flk_max(km, flk_max(flk_key(h0, a0), flk_key(h1, a1)));
        km1 = flk_max(km1, flk_max(flk_key(h2, a2), flk_key(h3, a3)));
        am = flk_max(am, flk_max(a0, a1));
        am1 = flk_max(am1, flk_max(a2, a3));
    }
    km = flk_max(km, km1);
    am = flk_max(am, am1);
    for (; k + FL_KW <= n; k += FL_KW) {
        flk h = flk_load(x + k), a = flk_mag(h);
        km = flk_max(km, flk_key(h, a));
        am = flk_max(am, a);
    }
    int kmax = flk_hmax(km), amax = flk_hmax(am);
    for (; k < n; k++) {
        int key = fl_hkey(x[k]), a = x[k] & 0x7fff;
        kmax = key > kmax ? key : kmax;
        amax = a > amax ? a : amax;
    }
    *mag = amax;
    return kmax;
}

/* fl_argmax_t for a float16 (dt FL_F16) or bfloat16 row, by keys: the same runs, the first NaN
 * or else the first of the largest keys */
#define FL_ARGMAX_RUN_H 512
static int64_t fl_argmax_h(const uint16_t *x, int64_t c, int32_t dt)
{
    int inf = fl_hinf(dt), best = 0, nan = 0;
    int64_t at = 0;
    for (int64_t k = 0; k < c; k += FL_ARGMAX_RUN_H) {
        int mag, m = fl_hkey_max(x + k, c - k < FL_ARGMAX_RUN_H ? c - k : FL_ARGMAX_RUN_H, &mag);
        if (mag > inf) {
            at = k;
            nan = 1;
            break;
        }
        if (k == 0 || m > best) { best = m; at = k; }
    }
    int64_t end = c - at < FL_ARGMAX_RUN_H ? c : at + FL_ARGMAX_RUN_H;
    for (int64_t k = at; k < end; k++)
        if (nan ? (x[k] & 0x7fff) > inf : fl_hkey(x[k]) == best) return k;
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
        best = x.dt == FL_F32 ? fl_argmax_t(x.p, c, FL_F32) : fl_argmax_h((const uint16_t *)x.p, c, x.dt);
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

/* The widest rows of argmax's and top-k's tiles, past FL_LANES_MAX_C: their results are exact,
 * so a row a tile hands back (a NaN in the tile) comes out of the row path the same. Measured
 * (Zen 4, 10,000,000 logits, row path -> tiles, ms): argmax 65 classes 8.1 -> 3.5, 96: 6.6 ->
 * 5.3, 128: 5.5 -> 6.5 on AVX-512 (3.6 on AVX2, against 5.1), 192: 4.9 -> 7.5; top-3 65
 * classes 45 -> 8.6, 256: 24 -> 10.6, top-8 256: 42 -> 21. */
#define FL_ARGMAX_TILE_MAX_C 96
#define FL_TOPK_TILE_MAX_C 256

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
    if (!ctx->f64 && fl_post_lanes_ok(ctx, NULL, FL_ARGMAX_TILE_MAX_C))
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

/* the first k elements of x (of dtype dt: float64, or float32 / float16 / bfloat16 widened):
 * the list by insertion, the heap by heapify */
static inline int64_t fl_topk_start(fl_cand *h, int64_t k, const void *x, int32_t dt)
{
    int64_t n = 0;
    for (int64_t j = 0; j < k; j++) {
        double v = dt == FL_F64 ? ((const double *)x)[j] : (double)fl_xget(x, j, dt);
        if (k <= FL_TOPK_LIST) fl_topk_offer(h, k, &n, v, j);
        else h[j] = (fl_cand){v, j};
    }
    if (k > FL_TOPK_LIST) fl_heap_init(h, k);
    return k;
}

/* The k best of a float32 row. Once k are kept, a run of 4 vectors whose max is not above the
 * worst kept cannot change them (a tie loses to the earlier index), so most of a long row is
 * only read by the vector max. A NaN max compares false and is offered. In a run that may
 * change them, only the elements above the worst kept when their vector is reached (or NaN)
 * are offered, in index order: the worst kept only rises, so the others cannot beat it (an
 * element at a time, the early runs of a row of 1000 classes cost about 2 microseconds). */
static void fl_topk_scan_f32(const float *x, int64_t c, int64_t k, fl_cand *h)
{
    int64_t n = fl_topk_start(h, k, x, FL_F32), j = k;
    for (; j + 4 * FL_W <= c; j += 4 * FL_W) {
        flv m = flv_max(flv_max(flv_load(x + j), flv_load(x + j + FL_W)),
                        flv_max(flv_load(x + j + 2 * FL_W), flv_load(x + j + 3 * FL_W)));
        if ((double)flv_hmax(m) <= fl_topk_worst(h, k)->v) continue;
        for (int64_t q0 = j; q0 < j + 4 * FL_W; q0 += FL_W) {
            /* not (worst >= x): x above the worst, or either NaN (a kept NaN: fl_topk_offer
             * refuses) */
            flv w = flv_set1((float)fl_topk_worst(h, k)->v);
            for (unsigned msk = ~flv_mask_ge(w, flv_load(x + q0)) & FL_LANES_ALL; msk; msk &= msk - 1) {
                int64_t q = q0 + fl_ctz(msk);
                fl_topk_offer(h, k, &n, x[q], q);
            }
        }
    }
    for (; j < c; j++) fl_topk_offer(h, k, &n, x[j], j);
}

/* The k best of a float16 (dt FL_F16) or bfloat16 row by order keys (fl_hkey), no widening
 * but of the candidates. Once k are kept, a run of FL_TOPK_RUN_H halves whose keys are all at
 * most the worst kept's key and which holds no NaN cannot change them (a tie loses to the
 * earlier index): two vector compares and one branch a run. A run that may is offered element
 * by element, only the halves above the worst key (or NaN) at that moment, widened. */
#define FL_TOPK_RUN_H (2 * FL_KW)

/* the key that a run must beat, and the magnitude above which a half is NaN (none can beat a
 * kept NaN: the worst kept being NaN, every half of a later index loses) */
static inline void fl_topk_bar_h(const fl_cand *h, int64_t k, int32_t dt, int *key, int *mag)
{
    double w = fl_topk_worst(h, k)->v;
    if (w != w) {
        *key = *mag = 0x7fff;
        return;
    }
    *key = fl_hkey(dt == FL_F16 ? fl_f32_to_f16((float)w) : fl_f32_to_bf16((float)w)); /* exact */
    *mag = fl_hinf(dt);
}

/* offer the halves of x[j0, j1) that may beat the worst kept */
static inline void fl_topk_offer_h(const uint16_t *x, int64_t j0, int64_t j1, int64_t k, int64_t *n, fl_cand *h,
                                   int32_t dt)
{
    int bar, inf;
    fl_topk_bar_h(h, k, dt, &bar, &inf);
    for (int64_t q = j0; q < j1; q++) {
        if (fl_hkey(x[q]) <= bar && (x[q] & 0x7fff) <= inf) continue;
        fl_topk_offer(h, k, n, (double)fl_xget(x, q, dt), q);
        fl_topk_bar_h(h, k, dt, &bar, &inf);
    }
}

static void fl_topk_scan_h(const uint16_t *x, int64_t c, int64_t k, fl_cand *h, int32_t dt)
{
    int64_t n = fl_topk_start(h, k, x, dt), j = k;
    int bar, inf;
    fl_topk_bar_h(h, k, dt, &bar, &inf);
    flk vbar = flk_set1(bar), vinf = flk_set1(inf);
    for (; j + FL_TOPK_RUN_H <= c; j += FL_TOPK_RUN_H) {
        flk h0 = flk_load(x + j), h1 = flk_load(x + j + FL_KW);
        flk a0 = flk_mag(h0), a1 = flk_mag(h1);
        flk km = flk_max(flk_key(h0, a0), flk_key(h1, a1));
        if (!(flk_any_gt(km, vbar) | flk_any_gt(flk_max(a0, a1), vinf))) continue;
        fl_topk_offer_h(x, j, j + FL_TOPK_RUN_H, k, &n, h, dt);
        fl_topk_bar_h(h, k, dt, &bar, &inf);
        vbar = flk_set1(bar);
        vinf = flk_set1(inf);
    }
    fl_topk_offer_h(x, j, c, k, &n, h, dt);
}

static void fl_topk_row(fl_post_ctx *ctx, int64_t i0, int64_t i1, void *scratch)
{
    int64_t c = ctx->g.c, k = ctx->k;
    const char *xrow = fl_row_ptr(ctx->x, i0, i1);
    fl_cand *h = (fl_cand *)scratch;
    double *bx = (double *)(h + k);
    if (ctx->x->dtype != FL_F64) {
        fl_xrow x = fl_row_in_x(ctx->x, xrow, c, (float *)bx); /* a strided row comes back float32 */
        if (x.dt == FL_F32) fl_topk_scan_f32((const float *)x.p, c, k, h);
        else fl_topk_scan_h((const uint16_t *)x.p, c, k, h, x.dt);
    } else {
        const double *x = fl_row_in_f64(ctx->x, xrow, c, bx);
        int64_t n = fl_topk_start(h, k, x, FL_F64);
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
        I[s] = flv_set1((float)FL_TOPK_TILE_MAX_C);
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
    if (ctx->k <= FL_TOPK_LANES_K && fl_post_lanes_ok(ctx, ctx->y, FL_TOPK_TILE_MAX_C))
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
