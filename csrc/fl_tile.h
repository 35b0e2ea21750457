/* fl_tile.h: small C, FL_W rows in the lanes.
 *
 * With few classes a row is shorter than a vector, and per-row overhead dominates. A tile
 * puts FL_W rows in the lanes instead: vector k of the tile holds class k of every row, so
 * max, exponentials and sums run lane-wise, one row per lane, with the same operations in the
 * same order as the row functions of fl_rowmath.h apply to one row (logsumexp has formulas of
 * its own, below, which every float32 row of few classes takes). Tile vectors live in an L1
 * scratch of c * FL_W floats (xt[k * FL_W + j] = class k of row j). */
#ifndef FL_TILE_H
#define FL_TILE_H

#include <math.h>
#include <stdint.h>
#include "fl_simd.h"
#include "fl_scalar_math.h"
#include "fl_rowmath_f64.h"

#define FL_LANES_MAX_C 64

/* Can the lanes of a tile with row stride rs (elements) be gathered with int32 offsets j * rs? */
static inline int fl_tile_gather_ok(int64_t rs)
{
    int64_t lim = ((int64_t)1 << 31) / FL_W;
    return rs > -lim && rs < lim;
}

/* fl_tile_load for rows too far apart for int32 gather offsets: element by element, lanes past
 * nr hold 0 (out of line: a rare layout, kept out of the hot loops' code) */
static FL_NOINLINE void fl_tile_load_far(const float *base, int64_t rs, int64_t cs, int64_t c, int64_t nr, float *xt)
{
    for (int64_t k = 0; k < c; k++)
        for (int64_t j = 0; j < FL_W; j++) xt[k * FL_W + j] = j < nr ? base[j * rs + k * cs] : 0.0f;
}

/* The contiguous tiles (cs == 1, rs == c, FL_W rows) that move by row loads and a
 * transposition instead of a gather a class, from the class count where the transposition's
 * fixed cost is below that of the gathers (AMD Zen 4, 10000000 logits, best of alternated
 * builds): on AVX-512 (64 shuffles for 16 x 16) from 9 classes (with 3 classes 10-15% slower,
 * at 4-8 as many cases slower as faster; 3-8 take flv_tile_from_rows' shuffles), on AVX2
 * (24 shuffles for 8 x 8) from 5 (at 4 softmax 5% slower; 3-4 take flv_tile_from_rows; at 5,
 * 7 and 8 every kernel 5-30% faster, at 6 five of eight, logsumexp, entropy and predict 4-15%
 * slower); stores up to 32 classes (at 48 and 64 the output's rows written block by block,
 * 16 rows apart, made softmax 7-20% slower than gathered vectors stored in order). */
#define FL_TILE_ROWS_MIN_C (FL_W == 8 ? 5 : 9)
#define FL_TILE_ROWS_STORE_MAX_C 32

/* FL_W contiguous rows of c classes (cs == 1, rs == c) into a tile: each block of up to FL_W
 * classes is FL_W row loads and one transposition (flv_transpose), where a gather a class
 * costs more (Zen 4: 47% of a 10-class softmax's samples, 36% of logsumexp's, were on the
 * gathers). A row's load runs on into the next row, whose values land in lanes that no class
 * of the block takes; a load that would pass the tile's end takes the block's classes only.
 * Out of line: inlined into every tile kernel it changed the compiler's code for the 2-class
 * softmax, which never calls it (5.1 -> 14.1 ms). */
static FL_NOINLINE void fl_tile_load_rows(const float *base, int64_t c, float *xt)
{
    for (int64_t k0 = 0; k0 < c; k0 += FL_W) {
        int64_t cb = c - k0 < FL_W ? c - k0 : FL_W;
        flv r[FL_W];
        for (int64_t j = 0; j < FL_W; j++) {
            const float *p = base + j * c + k0;
            r[j] = FL_W * c - (j * c + k0) >= FL_W ? flv_load(p) : flv_load_part(p, cb, 0.0f);
        }
        flv_transpose(r);
        /* all FL_W vectors, last first, those past the block's classes into its last class's
         * place before that class's own: a loop of a fixed count, unrolled with r in registers
         * (a loop to cb became a memcpy of r from the stack, rep movsq, slow to start) */
        for (int64_t k = FL_W - 1; k >= 0; k--) flv_store(xt + (k0 + (k < cb ? k : cb - 1)) * FL_W, r[k]);
    }
}

/* The inverse of fl_tile_load_rows for an output tile t. A row's store of a partial block
 * (fewer than FL_W classes) runs on into the next rows, so the partial block goes first, its
 * rows in order (each row's store then writes over what the row before left in it), and the
 * full blocks after it; a store that would pass the tile's end writes the block's classes
 * only. Nothing outside the tile is written. */
static FL_NOINLINE void fl_tile_store_rows(float *base, int64_t c, const float *t)
{
    for (int64_t k0 = (c - 1) / FL_W * FL_W; k0 >= 0; k0 -= FL_W) {
        int64_t cb = c - k0 < FL_W ? c - k0 : FL_W;
        flv r[FL_W];
        for (int64_t k = 0; k < FL_W; k++) r[k] = k < cb ? flv_load(t + (k0 + k) * FL_W) : flv_set1(0.0f);
        flv_transpose(r);
        for (int64_t j = 0; j < FL_W; j++) {
            float *p = base + j * c + k0;
            if (FL_W * c - (j * c + k0) >= FL_W) flv_store(p, r[j]);
            else flv_store_part(p, r[j], cb);
        }
    }
}

/* Where a tile's rows are: row j at base + j*rs, its class k at + k*cs. rs == 1: a class of
 * the tile is one unit-stride load (class axis not last). Rows of two contiguous classes (cs
 * == 1, rs == 2): two loads split into even and odd lanes. Otherwise a gather with gidx[j] =
 * j*rs from base + k*cs (lanes at or past nr repeat row 0), or, for strides beyond int32
 * offsets, element by element (lanes past nr hold 0). nr <= FL_W rows; lanes past nr of a
 * unit-stride load hold 0. Every way gives the same tile for the rows. */
static inline void fl_tile_load(const float *base, int64_t rs, int64_t cs, int64_t c, int64_t nr,
                                const int32_t *gidx, float *xt)
{
    /* contiguous rows: the next tile follows this one; have it on its way to L1 now, or the
     * gathers of the next tile each wait on memory (a prefetch past the data is harmless) */
    if (cs == 1 && rs == c)
        for (int64_t off = 0; off < FL_W * c; off += 64 / (int64_t)sizeof(float)) FL_PREFETCH(base + FL_W * c + off);
    if (c == 2 && cs == 1 && rs == 2 && nr == FL_W) {
        flv even, odd;
        flv_load_deint2(base, &even, &odd);
        flv_store(xt, even);
        flv_store(xt + FL_W, odd);
        return;
    }
    if (cs == 1 && rs == c && nr == FL_W && flv_tile_from_rows(base, c, xt)) return;
    if (cs == 1 && rs == c && c >= FL_TILE_ROWS_MIN_C && nr == FL_W) {
        fl_tile_load_rows(base, c, xt);
        return;
    }
    if (rs != 1 && !fl_tile_gather_ok(rs)) {
        fl_tile_load_far(base, rs, cs, c, nr, xt);
        return;
    }
    for (int64_t k = 0; k < c; k++) {
        flv v;
        if (rs == 1) v = nr == FL_W ? flv_load(base + k * cs) : flv_load_part(base + k * cs, nr, 0.0f);
        else v = flv_gather(base + k * cs, gidx);
        flv_store(xt + k * FL_W, v);
    }
}

/* The inverse of fl_tile_load for an output tile t. Rows contiguous (cs == 1, rs == c) with
 * oidx[p] = (p % c) * FL_W + p / c for p < c * FL_W: the tile's c * nr output floats are
 * written as vectors gathered from t (a full tile of two classes: interleaved by permutes, as
 * fl_tile_load reads it, not gathered); other layouts element by element. */
static inline void fl_tile_store(float *base, int64_t rs, int64_t cs, int64_t c, int64_t nr, const int32_t *oidx,
                                 const float *t)
{
    if (c == 2 && cs == 1 && rs == 2 && nr == FL_W) {
        flv_store_int2(base, flv_load(t), flv_load(t + FL_W));
    } else if (cs == 1 && rs == c && nr == FL_W && flv_tile_to_rows(base, c, t)) {
        return;
    } else if (cs == 1 && rs == c && c >= FL_TILE_ROWS_MIN_C && c <= FL_TILE_ROWS_STORE_MAX_C && nr == FL_W) {
        fl_tile_store_rows(base, c, t);
    } else if (rs == 1) {
        for (int64_t k = 0; k < c; k++) flv_store_part(base + k * cs, flv_load(t + k * FL_W), nr);
    } else if (oidx) {
        int64_t n = nr * c, p = 0;
        for (; p + FL_W <= n; p += FL_W) flv_store(base + p, flv_gather(t, oidx + p));
        if (p < n) flv_store_part(base + p, flv_gather(t, oidx + p), n - p);
    } else {
        for (int64_t j = 0; j < nr; j++)
            for (int64_t k = 0; k < c; k++) base[j * rs + k * cs] = t[k * FL_W + j];
    }
}

/* the index tables of a tile layout: gidx[j] = j*rs (fl_tile_load), oidx when rows are contiguous */
static inline void fl_tile_index(int64_t rs, int64_t c, int32_t *gidx, int32_t *oidx)
{
    for (int64_t j = 0; j < FL_W; j++) gidx[j] = fl_tile_gather_ok(rs) ? (int32_t)(j * rs) : 0;
    for (int64_t p = 0; p < c * FL_W; p++) oidx[p] = (int32_t)((p % c) * FL_W + p / c);
}

/* Can rows of c classes with row stride rs (elements) be tiled by a kernel whose tiles hold up
 * to max_c classes? Any strides can: lanes load with unit stride, by gathers or element by
 * element, so every layout of the same values takes the same arithmetic. */
static inline int fl_tile_layout_ok(int64_t rs, int64_t c, int64_t max_c)
{
    (void)rs;
    return c >= 1 && c <= max_c;
}

/* per-lane max of a tile */
static inline flv fl_tile_max(const float *xt, int64_t c)
{
    flv m = flv_load(xt);
    for (int64_t k = 1; k < c; k++) m = flv_max(flv_load(xt + k * FL_W), m);
    return m;
}

/* fl_rsumexp_precise_t for the FL_W rows of a tile at once (xt[k * FL_W + j], row maxima m),
 * lane by lane in double with one compensated sum per lane (fl_neumaier): the loops over the
 * lanes vectorise, where the row function would take the rows one by one. */
static inline void fl_tile_sumexp_precise(const float *xt, int64_t c, const float *m, double *n_eq, double *rest)
{
    double s[FL_W], comp[FL_W];
    for (int j = 0; j < FL_W; j++) s[j] = comp[j] = n_eq[j] = 0.0;
    for (int64_t k = 0; k < c; k++) {
        const float *xk = xt + k * FL_W;
        for (int j = 0; j < FL_W; j++) {
            double d = (double)xk[j] - (double)m[j];
            n_eq[j] += d < 0.0 ? 0.0 : 1.0;
            fl_neumaier(&s[j], &comp[j], d < 0.0 ? fl_exp_d(d) : 0.0);
        }
    }
    for (int j = 0; j < FL_W; j++) rest[j] = s[j] + comp[j];
}

/* ---------------- logsumexp in float32 lanes, with an error bound per lane ----------------
 *
 * v = m + log1p((n_eq - 1) + rest) in float32 throughout: the exponentials of the rounded
 * x - m by the degree-5 polynomial (flv_exp_neg_fast), rest in two float32 partials, the
 * logarithm by flv_log1p. Beside v each lane bounds its own error, in units of u = 2^-24:
 *   - each exponential is within 2 ULP (the limit csrc/tests/test_math.c holds every ISA's
 *     flv_exp_neg_fast and flv_log1p to, exhaustively), at most 4u relative, or 2^-148
 *     absolute below the normal range; the rounding of d = x - m (at most u|d|) moves it by a
 *     factor exp(u|d|), so sum_k e_k |d_k| (accumulated beside the sum) bounds that part;
 *   - rest is summed in nacc partials (2, 4 past FL_LSE_TILE_NACC4_C classes, 8 past
 *     FL_LSE_TILE_NACC8_C), class k into partial k mod nacc, joined pairwise: each rounding
 *     errs by at most u times its sum, at most rest, and a partial rounds ceil(c/nacc) - 1
 *     times, the joins log2(nacc) levels, so (ceil(c/nacc) - 1 + log2(nacc)) u rest in all;
 *     the join with n_eq - 1 once more (u * q);
 *   - an error dq in q moves log1p(q) by dq / (1 + q); log1p adds its 2 ULP of L;
 *   - the final m + L rounds by half an ULP of v.
 * A lane whose bound is within FL_LSE_LANE_ULP ULP of v (so under FL_LSE_LANE_ULP + 0.5 ULP of
 * the result, the bound's own float32 rounding included, inside logsumexp's 4) keeps its v;
 * the others are computed again in double (fl_tile_sumexp_precise). Everything is lane-wise, so
 * a row's result and whether it is redone depend on the row alone. A lane whose max is not
 * finite returns the max (the special values of fl_reduce_special) and is never redone. */
#define FL_LSE_LANE_ULP 3.2f

/* Rows of more classes sum rest in four partials: the bound's ceil(c/2) u rest of two partials
 * sends too many rows to the double path there (rows of randn * 3, estimated from the bound: 17%
 * of 48 classes and 36% of 64 with two partials, under 0.3% with four) */
#define FL_LSE_TILE_NACC4_C 32
#define FL_LSE_TILE_NACC8_C 64

/* logsumexp's tiles hold up to 128 classes, more than the other kernels' FL_LANES_MAX_C: its
 * tiles never hand a row back to the row path (a non-finite row is the tile's too), so its row
 * path need not share their formulas. From the bound, eight partials send 0.0% of the rows of
 * randn * 3 to the double path at 80 classes, 0.6% at 96 and 1.2% at 128. */
#define FL_LSE_TILE_MAX_C 128

/* v for the lanes and the mask of lanes (bit j) to redo, from the parts above: m the lanes'
 * max, rest, q = (n_eq - 1) + rest, err the bound on q's error (units of u) */
static inline unsigned fl_lse_lanes_finish(flv m, flv q, flv err, float *v)
{
    flv one = flv_set1(1.0f), L = flv_log1p(q), vv = flv_add(m, L);
    /* 2 ULP of L: 2 * 2^-23 * pow2_floor(L) = 4u * pow2_floor(L) (0 for a subnormal L, whose
     * 2 ULP are below err's floor) */
    err = flv_fma(flv_set1(4.0f), flv_pow2_floor(L), flv_div(err, flv_add(one, q)));
    /* ulp(v) at least 2u * pow2_floor(|v| (1 - 2^-20)): the exact result is that close to v,
     * and a v just above a power of two has it in the binade below */
    flv am = flv_abs(m), ulp = flv_mul(flv_set1(2.0f), flv_pow2_floor(flv_mul(flv_abs(vv), flv_set1(1.0f - 0x1p-20f))));
    unsigned fin = flv_mask_ge(flv_set1(3.40282347e38f), am);
    unsigned ok = flv_mask_ge(flv_mul(flv_set1(FL_LSE_LANE_ULP), ulp), err);
    flv_store(v, flv_sel_neg(flv_sub(am, flv_set1(INFINITY)), vv, m));
    return fin & ~ok;
}

/* the lanes' logsumexp of np tiles (np = 1 or 2, a constant where inlined: two tiles' chains
 * side by side, fl_tile_pair_fn) of c classes (any c <= FL_LSE_TILE_MAX_C), tile p at xt[p] with
 * max m[p], its results in v[p] and its lanes to redo in redo[p]; rest in nacc partials (2, 4
 * or 8, a constant); normal: every x - m of the tiles is known to be at least FL_EXPF_NORMAL_LO, so
 * the exponentials skip their floor and subnormal handling (the same values) */
FL_ALWAYS_INLINE void fl_tile_logsumexp_n(const float *const *xt, int np, int64_t c, const flv *m, float *const *v,
                                          unsigned *redo, int nacc, int normal)
{
    flv zero = flv_set1(0.0f), one = flv_set1(1.0f), floor_d = flv_set1(-104.0f);
    flv r[2][8], cnt[2] = {zero, zero}, dot[2] = {zero, zero};
    FL_UNROLL(2)
    for (int p = 0; p < np; p++) {
        FL_UNROLL(8)
        for (int h = 0; h < nacc; h++) r[p][h] = zero;
    }
    /* classes nacc at a time, class k into the partial r[p][k mod nacc] */
    for (int64_t k = 0; k < c; k += nacc) {
        FL_UNROLL(8)
        for (int h = 0; h < nacc; h++) {
            if (k + h == c) break;
            FL_UNROLL(2)
            for (int p = 0; p < np; p++) {
                /* d >= -104, where exp is 0 in float32: d * e stays finite for -inf logits */
                flv d = flv_sub(flv_load(xt[p] + (k + h) * FL_W), m[p]);
                if (!normal) d = flv_max_ord(d, floor_d);
                flv e = normal ? flv_exp_neg_fast_normal(d) : flv_exp_neg_fast(d);
                r[p][h] = flv_add(r[p][h], flv_sel_neg(d, e, zero));
                cnt[p] = flv_add(cnt[p], flv_sel_neg(d, zero, one));
                dot[p] = flv_fma(e, d, dot[p]); /* -sum e_k |d_k| */
            }
        }
    }
    /* (4 + ceil(c/nacc) - 1 + log2(nacc)) rest + sum e|d| + c 2^-124, and u q for the join */
    float rounds = (float)((c + nacc - 1) / nacc - 1 + (nacc == 8 ? 3 : nacc == 4 ? 2 : 1));
    FL_UNROLL(2)
    for (int p = 0; p < np; p++) {
        /* pairwise: the partials of 2 h and 2 h + 1, then of those, log2(nacc) levels */
        for (int w = nacc / 2; w >= 1; w /= 2) {
            FL_UNROLL(4)
            for (int h = 0; h < w; h++) r[p][h] = flv_add(r[p][2 * h], r[p][2 * h + 1]);
        }
        flv rest = r[p][0];
        flv q = flv_add(flv_sub(cnt[p], one), rest);
        flv err = flv_fma(flv_set1(4.0f + rounds), rest, flv_sub(flv_set1((float)c * 0x1p-124f), dot[p]));
        redo[p] = fl_lse_lanes_finish(m[p], q, flv_add(err, q), v[p]);
    }
}

#define FL_LANES_ALL ((unsigned)((1ull << FL_W) - 1u))

/* lane j holds j (a tile's row offsets) */
static const float fl_lane_index[16] = {0.0f, 1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f, 7.0f,
                                        8.0f, 9.0f, 10.0f, 11.0f, 12.0f, 13.0f, 14.0f, 15.0f};

/* Is x - m at least FL_EXPF_NORMAL_LO in every lane (lo: the lanes' min; a NaN lane is not)? */
static inline int fl_tile_normal(flv m, flv lo)
{
    return flv_mask_ge(flv_sub(lo, m), flv_set1(FL_EXPF_NORMAL_LO)) == FL_LANES_ALL;
}

/* the max m[p] and the least lo[p] (NaN ignored) of each lane of np tiles */
FL_ALWAYS_INLINE void fl_tile_max_min(const float *const *xt, int np, int64_t c, flv *m, flv *lo)
{
    FL_UNROLL(2)
    for (int p = 0; p < np; p++) m[p] = lo[p] = flv_load(xt[p]);
    for (int64_t k = 1; k < c; k++) {
        FL_UNROLL(2)
        for (int p = 0; p < np; p++) {
            flv xk = flv_load(xt[p] + k * FL_W);
            m[p] = flv_max(xk, m[p]);
            lo[p] = flv_min_ord(xk, lo[p]);
        }
    }
}

static inline unsigned fl_tile_logsumexp(const float *xt, int64_t c, float *v)
{
    flv m, lo;
    unsigned redo;
    fl_tile_max_min(&xt, 1, c, &m, &lo);
    int normal = fl_tile_normal(m, lo);
    if (c > FL_LSE_TILE_NACC8_C) {
        if (normal) fl_tile_logsumexp_n(&xt, 1, c, &m, &v, &redo, 8, 1);
        else fl_tile_logsumexp_n(&xt, 1, c, &m, &v, &redo, 8, 0);
    } else if (c > FL_LSE_TILE_NACC4_C) {
        if (normal) fl_tile_logsumexp_n(&xt, 1, c, &m, &v, &redo, 4, 1);
        else fl_tile_logsumexp_n(&xt, 1, c, &m, &v, &redo, 4, 0);
    } else {
        if (normal) fl_tile_logsumexp_n(&xt, 1, c, &m, &v, &redo, 2, 1);
        else fl_tile_logsumexp_n(&xt, 1, c, &m, &v, &redo, 2, 0);
    }
    return redo;
}

/* fl_tile_logsumexp for two classes: one exponential a row, t = exp(min - max), and
 * v = max + log1p(t) (the same bound; q = t is not rounded) */
static inline unsigned fl_tile_logsumexp2(const float *xt, float *v)
{
    flv a = flv_load(xt), b = flv_load(xt + FL_W);
    flv m = flv_max(a, b), lo = flv_min_ord(a, b), d = flv_sub(lo, m), t;
    if (fl_tile_normal(m, lo)) {
        t = flv_exp_neg_fast_normal(d);
    } else {
        d = flv_max_ord(d, flv_set1(-104.0f));
        t = flv_exp_neg_fast(d);
    }
    flv err = flv_fma(flv_sub(flv_set1(4.0f), d), t, flv_set1(0x1p-123f));
    return fl_lse_lanes_finish(m, t, err, v);
}

/* fl_tile_logsumexp of the two tiles xt[0], xt[1] (2 < c <= FL_LSE_TILE_NACC4_C) side by side
 * (fl_tile_pair_fn): the same operations a lane, so the same bits */
static inline void fl_tile_logsumexp_pair(const float *const *xt, int64_t c, float *const *v, unsigned *redo)
{
    flv m[2], lo[2];
    fl_tile_max_min(xt, 2, c, m, lo);
    if (fl_tile_normal(m[0], lo[0]) && fl_tile_normal(m[1], lo[1])) {
        fl_tile_logsumexp_n(xt, 2, c, m, v, redo, 2, 1);
    } else {
        redo[0] = fl_tile_logsumexp(xt[0], c, v[0]);
        redo[1] = fl_tile_logsumexp(xt[1], c, v[1]);
    }
}

#endif
