/* fl_decode_select.h: which tokens a decoding filter keeps, found without sorting the row.
 *
 * The kept set of temperature + top-k + top-p + min-p (API section 8, the order of
 * transformers' warpers) is always a prefix of the row in the order (tempered value
 * descending, index ascending): top-k keeps whole classes of ties, top-p keeps the positions
 * whose mass above is below p, min-p a value range, and min_tokens_to_keep the first
 * positions. Position i is kept when
 *     i < keep_min  or  (c_>(i) < k'  and  S_i < p * Z1  [and y_i >= t_minp])
 * with c_>(i) the number of values strictly above y_i and S_i the mass of the positions before
 * it. So a filter is found as one boundary (key_b, idx_b): a token v is kept when its value's
 * key is above key_b, or equal to it and v <= idx_b. Two ways to the boundary:
 *   - the candidate list: one SIMD pass over the row keeps the N largest values (every tie
 *     of the N-th included) behind a rising threshold, so most of the row is only compared;
 *     top-k (N = k') and a speculative top-N for top-p/min-p are resolved on it;
 *   - the radix select (fl_dsel): candidates as (key, mass, index) arrays, a histogram of
 *     counts and masses on 11 key bits per level, walked from the top until the level's
 *     bucket that holds the boundary is small, then that bucket sorted: O(candidates).
 *
 * Determinism: every quantity that decides a token is computed with operations whose result
 * does not depend on the SIMD path or the thread count: comparisons, IEEE division, the
 * portable exponential of fl_scalar_math.h (no fused multiply-adds: this project builds with
 * -ffp-contract=off) and float64 sums in a fixed order. The SIMD paths do the exact work:
 * reading and widening the row, maxima, comparisons against the threshold.
 */
#ifndef FL_DECODE_SELECT_H
#define FL_DECODE_SELECT_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fl_rowio.h"
#include "fl_rowmath.h"
#include "fl_scalar_math.h"
#include "fl_simd.h"

/* ---------- order keys, tempering, thresholds ---------- */

/* An unsigned key in the order of the value (NaN excluded); -0 and +0 share the key of +0. */
static inline uint64_t fl_dkey(double v)
{
    uint64_t b = fl_d2u(v + 0.0);
    return (b >> 63) ? ~b : b | 0x8000000000000000ull;
}

static inline double fl_dkey_value(uint64_t k)
{
    return fl_u2d((k >> 63) ? k & 0x7fffffffffffffffull : ~k);
}

/* the tempered value of a float32 logit: x / t rounded once (t: the temperature in float32) */
static inline float fl_temper_f(float x, float t) { return x / t; }

/* The smallest float32 x whose tempered value is at least theta: x >= it exactly when
 * x / t >= theta (x / t rounds monotonically). A bisection over the float32 order. */
static inline float fl_xthresh_f(float theta, float t)
{
    if (t == 1.0f || theta == -INFINITY) return theta;
    uint32_t lo = 0x007fffffu, hi = 0xff800000u; /* the order keys of -inf and +inf */
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        float v = fl_u2f((mid >> 31) ? mid & 0x7fffffffu : ~mid);
        if (fl_temper_f(v, t) >= theta) hi = mid;
        else lo = mid + 1;
    }
    return fl_u2f((lo >> 31) ? lo & 0x7fffffffu : ~lo);
}

/* The smallest float32 y with (double)y - m >= l (the min-p bound: exp(y - m) >= min_p with
 * l = log(min_p)), by bisection over the float32 order. */
static inline float fl_minp_floor_f(double m, double l)
{
    uint32_t lo = 0x007fffffu, hi = 0xff800000u;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        float v = fl_u2f((mid >> 31) ? mid & 0x7fffffffu : ~mid);
        if ((double)v - m >= l) hi = mid;
        else lo = mid + 1;
    }
    return fl_u2f((lo >> 31) ? lo & 0x7fffffffu : ~lo);
}

/* the same for float64 values: the smallest y with y - m >= l */
static inline double fl_minp_floor_d(double m, double l)
{
    uint64_t lo = fl_dkey(-INFINITY), hi = fl_dkey(INFINITY);
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (fl_dkey_value(mid) - m >= l) hi = mid;
        else lo = mid + 1;
    }
    return fl_dkey_value(lo);
}

/* ---------- the probabilities that decide ---------- */

/* Masses below exp(FL_DEC_TINY) of the max's are taken as 0: they would be subnormal in
 * float32 (and cost a microcode assist per operation on some cores), and no draw can reach
 * them. */
#define FL_DEC_TINY (-86.0f)
#define FL_DEC_TINY_D (-700.0)

/* exp(y - m) for a float32 value y <= m (m finite): the portable exponential of the rounded
 * shift with its rounding error folded in (TwoSum, as fl_vexp_sub), bit for bit the same on
 * every SIMD path; 0 below FL_DEC_TINY. Branch-free, so loops over it vectorise. */
static inline float fl_dec_expf(float y, float m)
{
    float s = y - m;
    int tiny = !(s >= FL_DEC_TINY);
    float yc = tiny ? m : y;
    float sc = yc - m, bv = sc - yc;
    float err = (yc - (sc - bv)) + (-m - bv);
    float p = fl_expf_s(sc);
    float r = p + p * err;
    return tiny ? 0.0f : r;
}

/* exp(y - m) for float64 values, the shift's rounding error folded in; 0 below FL_DEC_TINY_D */
static inline double fl_dec_exp_d(double y, double m)
{
    double s = y - m;
    if (!(s >= FL_DEC_TINY_D)) return 0.0;
    double bv = s - y;
    return fl_exp_dx_d(s, (y - (s - bv)) + (-m - bv));
}

/* Sum of n <= FL_DEC_BLOCK float masses in a fixed order: sixteen float64 lanes (lane j takes
 * elements j, j + 16, ...) added pairwise. The order is fixed by the code, not the ISA. */
#define FL_DEC_BLOCK 256
static inline double fl_dec_sum16f(const float *e, int64_t n)
{
    double l[16] = {0};
    int64_t k = 0;
    for (; k + 16 <= n; k += 16)
        for (int j = 0; j < 16; j++) l[j] += (double)e[k + j];
    for (int j = 0; k + j < n; j++) l[j] += (double)e[k + j];
    for (int w = 8; w >= 1; w /= 2)
        for (int j = 0; j < w; j++) l[j] += l[j + w];
    return l[0];
}

/* ---------- the candidate list: the N largest values of a row in one pass ---------- */

/* the order key of a tempered value; NaN above everything (the order of topk and predict) */
static inline uint64_t fl_rank_key(float y) { return y != y ? UINT64_MAX : fl_dkey((double)y); }

/* a candidate: the order key of its tempered value, and its index */
typedef struct { uint64_t key; int64_t i; } fl_dcand;

typedef struct {
    fl_dcand *c;    /* the candidates, in index order */
    uint64_t *sel;  /* cap keys: quickselect's scratch */
    int64_t n, cap;
    int nan_top;    /* NaN and +inf are candidates (NaN the largest); else they end the scan */
    int failed;     /* could not grow */
} fl_dlist;

/* the k-th largest (k >= 1) of v[0..n) (v reordered): quickselect, middle-of-three pivot */
static inline uint64_t fl_dec_kth_largest(uint64_t *v, int64_t n, int64_t k)
{
    int64_t lo = 0, hi = n - 1, want = k - 1;
    while (lo < hi) {
        uint64_t a = v[lo], b = v[lo + (hi - lo) / 2], c = v[hi];
        uint64_t p = a > b ? (b > c ? b : (a > c ? c : a)) : (a > c ? a : (b > c ? c : b));
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (v[i] > p) i++;
            while (v[j] < p) j--;
            if (i <= j) {
                uint64_t t = v[i]; v[i] = v[j]; v[j] = t;
                i++;
                j--;
            }
        }
        if (want <= j) hi = j;
        else if (want >= i) lo = i;
        else return v[want];
    }
    return v[want];
}

/* Keep the candidates whose key is at least the want-th largest (ties all kept, index order
 * kept); returns that key. */
static inline uint64_t fl_dlist_prune(fl_dlist *L, int64_t want)
{
    for (int64_t q = 0; q < L->n; q++) L->sel[q] = L->c[q].key;
    uint64_t theta = fl_dec_kth_largest(L->sel, L->n, want);
    int64_t w = 0;
    for (int64_t q = 0; q < L->n; q++)
        if (L->c[q].key >= theta) L->c[w++] = L->c[q];
    L->n = w;
    return theta;
}

/* the logit threshold of a key: x >= it exactly when the tempered x has a key >= theta (NaN
 * when theta is NaN's key: every element must then be looked at) */
static inline float fl_dlist_thr(uint64_t theta, float t)
{
    return theta == UINT64_MAX ? NAN : fl_xthresh_f((float)fl_dkey_value(theta), t);
}

/* double the list's room (ties of the want-th value fill it) */
static inline int fl_dlist_grow(fl_dlist *L)
{
    int64_t cap = 2 * L->cap;
    fl_dcand *c = (fl_dcand *)realloc(L->c, (size_t)cap * sizeof(fl_dcand));
    if (c) L->c = c;
    uint64_t *s = c ? (uint64_t *)realloc(L->sel, (size_t)cap * sizeof(uint64_t)) : NULL;
    if (s) L->sel = s;
    if (!c || !s) { L->failed = 1; return 0; }
    L->cap = cap;
    return 1;
}

/* room for one more candidate: when full, prune (raising *theta) and grow if ties leave
 * little room. 0 when the list cannot grow. */
static inline int fl_dlist_room(fl_dlist *L, int64_t want, uint64_t *theta)
{
    if (L->n < L->cap) return 1;
    *theta = fl_dlist_prune(L, want);
    return L->n + L->n / 2 < L->cap || fl_dlist_grow(L);
}

/* offer x[k0 .. k0 + len) (token ids base + k) to the list, x >= *thr (the logit threshold
 * of *theta) or NaN; 1 when a NaN or +inf ends the scan */
FL_ALWAYS_INLINE int fl_dlist_offer_t(const void *x, int64_t k0, int64_t len, int64_t base, int64_t want, float t,
                                      float *thr, uint64_t *theta, fl_dlist *L, int32_t dt)
{
    for (int64_t k = k0; k < k0 + len; k++) {
        float v = fl_xget(x, k, dt);
        if ((v != v || v == INFINITY) && !L->nan_top) return 1;
        if (!(v >= *thr) && v == v && *thr == *thr) continue;
        if (L->n == L->cap) {
            if (!fl_dlist_room(L, want, theta)) return 0;
            *thr = fl_dlist_thr(*theta, t);
        }
        L->c[L->n].key = fl_rank_key(fl_temper_f(v, t));
        L->c[L->n].i = base + k;
        L->n++;
    }
    return 0;
}

/* Elements per block of the first pass: the pass keeps each block's max, the second looks
 * only at the blocks that can hold a candidate. */
#define FL_DLIST_BLK 128

/* the largest value of each block of FL_DLIST_BLK elements into bmax (NaN when the block holds
 * one); returns the number of blocks */
FL_ALWAYS_INLINE int64_t fl_dlist_block_max_t(const void *x, int64_t c, float *bmax, int32_t dt)
{
    int64_t b = 0, k = 0, esz = (int64_t)fl_xsize(dt);
    for (; k + FL_DLIST_BLK <= c; k += FL_DLIST_BLK, b++) {
        for (int64_t j = 0; j < FL_DLIST_BLK * esz; j += 64) FL_PREFETCH((const char *)x + k * esz + 4096 + j);
        flv m0 = fl_xload(x, k, dt), m1 = fl_xload(x, k + FL_W, dt);
        for (int64_t j = 2 * FL_W; j < FL_DLIST_BLK; j += 2 * FL_W) {
            m0 = flv_max(fl_xload(x, k + j, dt), m0);
            m1 = flv_max(fl_xload(x, k + j + FL_W, dt), m1);
        }
        bmax[b] = flv_hmax(flv_max(m0, m1));
    }
    if (k < c) bmax[b++] = fl_rmax_t((const char *)x + k * esz, c - k, dt);
    return b;
}

/* The list of the want largest tempered values of a float row and all their ties. Pass 1
 * reads the row from memory once for its blocks' maxima; the want-th largest block max is at
 * most the want-th largest value (the want largest maxima are want distinct elements), so pass
 * 2 only looks into the blocks whose max reaches it (about want of them), from cache, and
 * there one vector at a time. bmax: room for c / FL_DLIST_BLK + 1 floats, bkey as many keys.
 * Returns 1 when the row holds a NaN or +inf. */
FL_ALWAYS_INLINE int fl_dlist_scan_t(const void *x, int64_t c, int64_t want, float t, fl_dlist *L, float *bmax,
                                     uint64_t *bkey, int32_t dt)
{
    int64_t nb = fl_dlist_block_max_t(x, c, bmax, dt);
    for (int64_t b = 0; b < nb; b++) {
        if (bmax[b] != bmax[b] || bmax[b] == INFINITY) return 1;
        bkey[b] = fl_dkey((double)bmax[b]);
    }
    uint64_t theta = 0;
    float thr = -INFINITY;
    if (nb >= want) {
        /* in logit space: every x whose tempered value reaches that of the block max */
        float bx = (float)fl_dkey_value(fl_dec_kth_largest(bkey, nb, want));
        thr = fl_xthresh_f(fl_temper_f(bx, t), t);
    }
    L->n = 0;
    for (int64_t b = 0; b < nb; b++) {
        if (bmax[b] < thr) continue;
        int64_t k0 = b * FL_DLIST_BLK, k1 = k0 + FL_DLIST_BLK < c ? k0 + FL_DLIST_BLK : c, k = k0;
        for (; k + FL_W <= k1; k += FL_W)
            if (!(flv_hmax(fl_xload(x, k, dt)) < thr)) fl_dlist_offer_t(x, k, FL_W, 0, want, t, &thr, &theta, L, dt);
        fl_dlist_offer_t(x, k, k1 - k, 0, want, t, &thr, &theta, L, dt);
        if (L->failed) return 0;
    }
    if (L->n > want) fl_dlist_prune(L, want);
    return 0;
}

/* ---------- the radix select ---------- */

/* what is kept at position i (see the design note): i < keep_min, or c_>(i) < kprime and the
 * mass above it below mass_lim */
typedef struct { int64_t keep_min, kprime; double mass_lim; } fl_dkeep;

static inline int fl_dkeep_at(const fl_dkeep *q, int64_t i, int64_t cgt, double s)
{
    return i < q->keep_min || (cgt < q->kprime && s < q->mass_lim);
}

/* candidates as parallel arrays, in index order */
typedef struct { uint64_t *key; double *e; int64_t *idx; int64_t n; } fl_dset;

/* the boundary of a kept prefix: n positions, the last one (key_b, idx_b), their mass */
typedef struct { int64_t n; uint64_t key_b; int64_t idx_b; double mass; } fl_dcut;

/* scratch of the select: a histogram of 2^11 buckets */
#define FL_DSEL_BITS 11
typedef struct { int64_t cnt[1 << FL_DSEL_BITS]; double mass[1 << FL_DSEL_BITS]; } fl_dhist;

/* sort by key descending, index ascending: the order of positions */
typedef struct { uint64_t key; int64_t idx; int64_t at; } fl_dpos;
static inline int fl_dpos_cmp(const void *a, const void *b)
{
    const fl_dpos *pa = (const fl_dpos *)a, *pb = (const fl_dpos *)b;
    if (pa->key != pb->key) return pa->key > pb->key ? -1 : 1;
    return pa->idx < pb->idx ? -1 : pa->idx > pb->idx;
}

/* The last level: the n candidates of s (at most FL_DSEL_SMALL, or one class of ties, which is
 * in position order already), starting at position c with mass m above. Every earlier
 * position is kept, and so is the first of these. */
#define FL_DSEL_SMALL 64
static inline fl_dcut fl_dsel_finish(const fl_dset *s, int64_t c, double m, const fl_dkeep *q)
{
    fl_dpos pos[FL_DSEL_SMALL];
    int sorted = s->n <= FL_DSEL_SMALL;
    if (sorted) {
        for (int64_t j = 0; j < s->n; j++) {
            pos[j].key = s->key[j];
            pos[j].idx = s->idx[j];
            pos[j].at = j;
        }
        qsort(pos, (size_t)s->n, sizeof(fl_dpos), fl_dpos_cmp);
    }
    fl_dcut r = {c, 0, -1, m};
    int64_t cls = 0;
    uint64_t prev = 0;
    for (int64_t j = 0; j < s->n; j++) {
        int64_t o = sorted ? pos[j].at : j;
        if (j > 0 && s->key[o] != prev) cls = j;
        if (j > 0 && !fl_dkeep_at(q, c + j, c + cls, m)) break;
        prev = s->key[o];
        m += s->e[o];
        r.n = c + j + 1;
        r.key_b = s->key[o];
        r.idx_b = s->idx[o];
        r.mass = m;
    }
    return r;
}

/* the lowest and highest key of s */
static inline void fl_dset_range(const fl_dset *s, uint64_t *lo, uint64_t *hi)
{
    uint64_t a = s->key[0], b = s->key[0];
    for (int64_t j = 1; j < s->n; j++) {
        a = s->key[j] < a ? s->key[j] : a;
        b = s->key[j] > b ? s->key[j] : b;
    }
    *lo = a;
    *hi = b;
}

/* Where the kept prefix of the candidates in (n >= 1) ends, for the mass limits q->mass_lim
 * and hi >= it at once (hi == q->mass_lim: one limit): 1 and the cut when both give the same
 * one, 0 when they do not (their prefixes end in different buckets of a level, or at
 * different positions of the last). When every position is kept, the cut is at the last
 * candidate. in is left as it is; work (capacity in.n) holds the bucket that is narrowed
 * level by level. O(in.n) for the first level, then the size of one bucket. */
static inline int fl_dsel_band(fl_dset in, fl_dset work, const fl_dkeep *q, double hi, fl_dhist *h, fl_dcut *cut)
{
    fl_dkeep qh = *q;
    qh.mass_lim = hi;
    int64_t c = 0;
    double m = 0.0;
    fl_dset s = in;
    for (;;) {
        uint64_t lo, up;
        fl_dset_range(&s, &lo, &up);
        if (s.n <= FL_DSEL_SMALL || lo == up) {
            *cut = fl_dsel_finish(&s, c, m, q);
            return hi == q->mass_lim || fl_dsel_finish(&s, c, m, &qh).n == cut->n;
        }
        int top = 63;
        while (!(((lo ^ up) >> top) & 1)) top--;
        int shift = top >= FL_DSEL_BITS - 1 ? top - (FL_DSEL_BITS - 1) : 0;
        uint64_t mask = ((uint64_t)1 << FL_DSEL_BITS) - 1;
        memset(h, 0, sizeof(*h));
        for (int64_t j = 0; j < s.n; j++) {
            uint64_t b = (s.key[j] >> shift) & mask;
            h->cnt[b]++;
            h->mass[b] += s.e[j];
        }
        int64_t b = (int64_t)mask;
        for (; b >= 0; b--) {
            if (!h->cnt[b]) continue;
            int64_t nc = c + h->cnt[b];
            double nm = m + h->mass[b];
            if (!fl_dkeep_at(q, nc, nc, nm)) {
                /* the prefix of the lower limit ends in bucket b: so must the higher one's */
                if (fl_dkeep_at(&qh, nc, nc, nm)) return 0;
                break;
            }
            c = nc;
            m = nm;
        }
        if (b < 0) {
            /* every candidate is kept (only possible on the first level): the prefix ends at
             * the last one in position order */
            int64_t last = 0;
            for (int64_t j = 1; j < s.n; j++)
                if (s.key[j] < s.key[last] || (s.key[j] == s.key[last] && s.idx[j] > s.idx[last])) last = j;
            fl_dcut all = {c, s.key[last], s.idx[last], m};
            *cut = all;
            return 1;
        }
        int64_t w = 0;
        for (int64_t j = 0; j < s.n; j++) {
            if ((int64_t)((s.key[j] >> shift) & mask) != b) continue;
            work.key[w] = s.key[j];
            work.e[w] = s.e[j];
            work.idx[w] = s.idx[j];
            w++;
        }
        s = work;
        s.n = w;
    }
}

/* Where the kept prefix of the candidates in (n >= 1) ends (fl_dsel_band for one limit). */
static inline fl_dcut fl_dsel(fl_dset in, fl_dset work, const fl_dkeep *q, fl_dhist *h)
{
    fl_dcut cut;
    fl_dsel_band(in, work, q, q->mass_lim, h, &cut);
    return cut;
}

/* is token idx, of value key, kept by the prefix ending at cut? */
static inline int fl_dcut_keeps(const fl_dcut *cut, uint64_t key, int64_t idx)
{
    return key > cut->key_b || (key == cut->key_b && idx <= cut->idx_b);
}

#endif
