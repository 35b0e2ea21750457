/* fl_rowmath.h: the arithmetic on one contiguous float32 (or float16/bfloat16) row, in FL_W
 * float32 lanes: max and min, exponentials of x - max, sums of exponentials, the entropy's dot
 * product. Float64 rows are in fl_rowmath_f64.h, tiles of small rows in fl_tile.h, the
 * prefetching and streamed output rows in fl_pend.h, sigmoids in fl_sigmoid_math.h.
 *
 * Accuracy design (see API.md, "Accuracy"): exp(x_i - max) must be right to about one ULP even
 * when x_i and the max differ in magnitude, where x - m rounds. Rows of moderate logits
 * (fl_shift_ok: |max| <= 64, none more than 86 below it) take exp(x_i) * 2^-sn with
 * sn = round(max * log2 e) instead (fl_rsumexp_shift_t): nothing is rounded before the
 * exponential's own reduction, and the factor exp(max - sn ln2) is divided out of the sums in
 * double. Other rows carry x - m with its rounding error e (TwoSum), folded into the
 * exponential as exp(s)*(1 + e). Sums of exponentials accumulate in float64 lanes. Everything
 * is compiled once per ISA, with FL_W lanes.
 */
#ifndef FL_ROWMATH_H
#define FL_ROWMATH_H

#include <float.h>
#include <math.h>
#include <stdint.h>
#include "fl_simd.h"
#include "fl_rowio.h"
#include "fl_dd.h"
#include "fl_scalar_math.h"

#include "fl_pend.h"
#include "fl_tile.h"

/* ---------- float32 rows ---------- */

/* max of a row; NaN anywhere gives NaN; an empty row gives -inf. The new element is the first
 * operand of flv_max, whose NaN test is then off the loop-carried chain, and four
 * accumulators hide the latency of what remains. */
FL_ALWAYS_INLINE float fl_rmax_t(const void *x, int64_t n, int32_t dt)
{
    flv a0 = flv_set1(-INFINITY), a1 = a0, a2 = a0, a3 = a0;
    int64_t k = 0;
    for (; k + 4 * FL_W <= n; k += 4 * FL_W) {
        a0 = flv_max(fl_xload(x, k, dt), a0);
        a1 = flv_max(fl_xload(x, k + FL_W, dt), a1);
        a2 = flv_max(fl_xload(x, k + 2 * FL_W, dt), a2);
        a3 = flv_max(fl_xload(x, k + 3 * FL_W, dt), a3);
    }
    for (; k + FL_W <= n; k += FL_W) a0 = flv_max(fl_xload(x, k, dt), a0);
    if (k < n) a0 = flv_max(fl_xload_part(x, k, n - k, -INFINITY, dt), a0);
    return flv_hmax(flv_max(flv_max(a0, a1), flv_max(a2, a3)));
}


/* fl_rmaxmin_t for the rows that hold a NaN: the max NaN-propagating throughout (flv_max, four
 * accumulators: the NaN returned does not change with the NaN-free path's structure) */
FL_ALWAYS_INLINE float fl_rmaxmin_nan_t(const void *x, int64_t n, float *mn, int32_t dt)
{
    flv a0 = flv_set1(-INFINITY), a1 = a0, a2 = a0, a3 = a0;
    flv b0 = flv_set1(INFINITY), b1 = b0, b2 = b0, b3 = b0;
    int64_t k = 0;
    for (; k + 4 * FL_W <= n; k += 4 * FL_W) {
        flv v0 = fl_xload(x, k, dt), v1 = fl_xload(x, k + FL_W, dt);
        flv v2 = fl_xload(x, k + 2 * FL_W, dt), v3 = fl_xload(x, k + 3 * FL_W, dt);
        a0 = flv_max(v0, a0);
        a1 = flv_max(v1, a1);
        a2 = flv_max(v2, a2);
        a3 = flv_max(v3, a3);
        b0 = flv_min_ord(v0, b0);
        b1 = flv_min_ord(v1, b1);
        b2 = flv_min_ord(v2, b2);
        b3 = flv_min_ord(v3, b3);
    }
    for (; k + FL_W <= n; k += FL_W) {
        flv v = fl_xload(x, k, dt);
        a0 = flv_max(v, a0);
        b0 = flv_min_ord(v, b0);
    }
    if (k < n) {
        a0 = flv_max(fl_xload_part(x, k, n - k, -INFINITY, dt), a0);
        b0 = flv_min_ord(fl_xload_part(x, k, n - k, INFINITY, dt), b0);
    }
    *mn = -flv_hmax(flv_neg(flv_min_ord(flv_min_ord(b0, b1), flv_min_ord(b2, b3))));
    return flv_hmax(flv_max(flv_max(a0, a1), flv_max(a2, a3)));
}

/* fl_rmax_t, and in *mn the row's min (NaN entries ignored: a NaN's max decides the row).
 *
 * AVX-512 keeps the NaN-propagating loop for every row: its NaN test is one masked move, and
 * the NaN flag below made logsumexp 64x32000 17-21% slower there (5.4 -> 4.5 Gelem/s, softmax
 * and entropy 11-13%; alternated builds, best of 8 processes), whatever the instruction count
 * says. Elsewhere the max and min ignore NaN (flv_max_ord, flv_min_ord with the new element
 * first) and one NaN flag per two vectors (flv_nan_mark) finds the rows that hold one, which
 * are taken again by fl_rmaxmin_nan_t: on AVX2 the NaN-propagating max cost two operations
 * more per vector, a quarter of the pass. Four accumulators hide the latency of the chains. */
#if FL_ISA == FL_ISA_AVX512
FL_ALWAYS_INLINE float fl_rmaxmin_t(const void *x, int64_t n, float *mn, int32_t dt)
{
    return fl_rmaxmin_nan_t(x, n, mn, dt);
}
#else
FL_ALWAYS_INLINE float fl_rmaxmin_t(const void *x, int64_t n, float *mn, int32_t dt)
{
    flv a0 = flv_set1(-INFINITY), a1 = a0, a2 = a0, a3 = a0;
    flv b0 = flv_set1(INFINITY), b1 = b0, b2 = b0, b3 = b0, nan = flv_set1(0.0f);
    int64_t k = 0;
    for (; k + 4 * FL_W <= n; k += 4 * FL_W) {
        flv v0 = fl_xload(x, k, dt), v1 = fl_xload(x, k + FL_W, dt);
        flv v2 = fl_xload(x, k + 2 * FL_W, dt), v3 = fl_xload(x, k + 3 * FL_W, dt);
        a0 = flv_max_ord(v0, a0);
        a1 = flv_max_ord(v1, a1);
        a2 = flv_max_ord(v2, a2);
        a3 = flv_max_ord(v3, a3);
        b0 = flv_min_ord(v0, b0);
        b1 = flv_min_ord(v1, b1);
        b2 = flv_min_ord(v2, b2);
        b3 = flv_min_ord(v3, b3);
        nan = flv_nan_mark(nan, v0, v1);
        nan = flv_nan_mark(nan, v2, v3);
    }
    for (; k + FL_W <= n; k += FL_W) {
        flv v = fl_xload(x, k, dt);
        a0 = flv_max_ord(v, a0);
        b0 = flv_min_ord(v, b0);
        nan = flv_nan_mark(nan, v, v);
    }
    if (k < n) {
        flv v = fl_xload_part(x, k, n - k, -INFINITY, dt);
        a0 = flv_max_ord(v, a0);
        b0 = flv_min_ord(fl_xload_part(x, k, n - k, INFINITY, dt), b0);
        nan = flv_nan_mark(nan, v, v);
    }
    float fl = flv_hmax(nan);
    if (fl != fl) return fl_rmaxmin_nan_t(x, n, mn, dt);
    *mn = -flv_hmax(flv_neg(flv_min_ord(flv_min_ord(b0, b1), flv_min_ord(b2, b3))));
    return flv_hmax(flv_max_ord(flv_max_ord(a0, a1), flv_max_ord(a2, a3)));
}
#endif

/* A floor for the logits of a row of finite max m: every x below it has exp(x - m) = 0 in
 * float32 (x - m < -224 however m rounds), and x raised to it keeps that, so -inf needs no NaN
 * test in fl_vexp_sub. For |m| >= 2^29 the 256 below m would round back to m; the floor is
 * then a few ULP below it. */
static inline flv fl_exp_floor(flv m)
{
    return flv_sub(m, flv_max_ord(flv_set1(256.0f), flv_mul(flv_abs(m), flv_set1(0x1p-21f))));
}

/* exp(x - m) for x <= m, m finite, with the rounding error of x - m folded in (TwoSum), as
 * exp(s)*(1 + e); lo = fl_exp_floor(m). *shift receives s, negative exactly where x < m.
 * normal: x >= m + FL_EXPF_NORMAL_LO is known (no floor needed; the same values, cheaper). */
FL_ALWAYS_INLINE flv fl_vexp_sub_n(flv x, flv m, flv lo, flv *shift, int normal)
{
    if (!normal) x = flv_max_ord(x, lo);
    flv s = flv_sub(x, m);
    flv bv = flv_sub(s, x);
    flv e = flv_add(flv_sub(x, flv_sub(s, bv)), flv_sub(flv_neg(m), bv));
    flv p = normal ? flv_exp_neg_normal(s) : flv_exp_neg(s);
    *shift = s;
    return flv_fma(p, e, p);
}

static inline flv fl_vexp_sub(flv x, flv m, flv lo, flv *shift) { return fl_vexp_sub_n(x, m, lo, shift, 0); }

/* the non-precise sums' exponential of d <= 0; normal: every d is known to be at least
 * FL_EXPF_NORMAL_LO (the same values, cheaper) */
FL_ALWAYS_INLINE flv fl_vexp_loss(flv d, int normal) { return normal ? flv_exp_neg_fast_normal(d) : flv_exp_neg_fast(d); }

/* Sum of exp(x_k - m) over the row, split as n_eq + rest: n_eq counts the entries equal to the
 * max (each contributes exactly 1) and rest sums the others, in float64 lanes. Keeping the ones
 * apart lets log(sum) = log1p((n_eq - 1) + rest) stay accurate for peaked rows, where rest is
 * tiny. When y is not NULL it also receives exp(x_k - m). m must be finite.
 * precise: carry the rounding error of x - m into the exponential (fl_vexp_sub), which every
 * ULP-bounded output needs; without it exp(x - m) is off by up to |x - m| * 2^-24 relative,
 * which is enough for losses held to a relative tolerance, the exponential is the shorter
 * flv_exp_neg_fast (2 ULP instead of 1), and the terms are first added in
 * float32 lanes, FL_SUM_CHUNK vectors at a time (a relative error below FL_SUM_CHUNK * 2^-24
 * = 2e-6 at worst), before joining the float64 lanes. normal: every x_k is known to be at
 * least m + FL_EXPF_NORMAL_LO, so the exponentials skip their floor, clamp and subnormal
 * handling (fl_vexp_sub_n, fl_vexp_loss; the same values). */
#define FL_SUM_CHUNK 32
FL_ALWAYS_INLINE double fl_rsumexp_t(const void *x, int64_t n, float m, float *y, double *n_eq, int precise,
                                     fl_ahead ahead, int normal, int32_t dt)
{
    flv vm = flv_set1(m), lo = fl_exp_floor(vm), zero = flv_set1(0.0f), one = flv_set1(1.0f), cnt = zero;
    fl_dacc acc = fl_dacc_zero();
    int64_t k = 0;
    if (precise) {
        /* four vectors a step, side by side: independent exponential chains */
        for (; k + 4 * FL_W <= n; k += 4 * FL_W) {
            fl_ahead_touch(ahead, k, 4 * FL_W);
            flv d[4], e[4];
            FL_UNROLL(4)
            for (int j = 0; j < 4; j++) {
                e[j] = fl_vexp_sub_n(fl_xload(x, k + j * FL_W, dt), vm, lo, &d[j], normal);
            }
            FL_UNROLL(4)
            for (int j = 0; j < 4; j++) {
                if (y) flv_store(y + k + j * FL_W, e[j]);
                acc = fl_dacc_add(acc, flv_sel_neg(d[j], e[j], zero));
                cnt = flv_add(cnt, flv_sel_neg(d[j], zero, one));
            }
        }
        for (; k + FL_W <= n; k += FL_W) {
            fl_ahead_touch(ahead, k, FL_W);
            flv d, e = fl_vexp_sub_n(fl_xload(x, k, dt), vm, lo, &d, normal);
            if (y) flv_store(y + k, e);
            acc = fl_dacc_add(acc, flv_sel_neg(d, e, zero));
            cnt = flv_add(cnt, flv_sel_neg(d, zero, one));
        }
    } else {
        /* four vectors a step, side by side (their exponentials are independent chains), into
         * four partial sums (the additions are the loop-carried chain) */
        while (k + FL_W <= n) {
            flv part[4] = {zero, zero, zero, zero}, cnt4[4] = {zero, zero, zero, zero};
            int64_t end = k + FL_SUM_CHUNK * FL_W < n ? k + FL_SUM_CHUNK * FL_W : n;
            for (; k + 4 * FL_W <= end; k += 4 * FL_W) {
                fl_ahead_touch(ahead, k, 4 * FL_W);
                flv d[4], e[4];
                FL_UNROLL(4)
                for (int j = 0; j < 4; j++) {
                    d[j] = flv_sub(fl_xload(x, k + j * FL_W, dt), vm);
                    e[j] = fl_vexp_loss(d[j], normal);
                }
                FL_UNROLL(4)
                for (int j = 0; j < 4; j++) {
                    if (y) flv_store(y + k + j * FL_W, e[j]);
                    part[j] = flv_add(part[j], flv_sel_neg(d[j], e[j], zero));
                    cnt4[j] = flv_add(cnt4[j], flv_sel_neg(d[j], zero, one));
                }
            }
            for (; k + FL_W <= end; k += FL_W) {
                fl_ahead_touch(ahead, k, FL_W);
                flv d = flv_sub(fl_xload(x, k, dt), vm);
                flv e = fl_vexp_loss(d, normal);
                if (y) flv_store(y + k, e);
                part[0] = flv_add(part[0], flv_sel_neg(d, e, zero));
                cnt4[0] = flv_add(cnt4[0], flv_sel_neg(d, zero, one));
            }
            acc = fl_dacc_add(acc, flv_add(flv_add(part[0], part[1]), flv_add(part[2], part[3])));
            cnt = flv_add(cnt, flv_add(flv_add(cnt4[0], cnt4[1]), flv_add(cnt4[2], cnt4[3])));
        }
    }
    if (k < n) {
        flv xv = fl_xload_part(x, k, n - k, -INFINITY, dt);
        flv d = flv_sub(xv, vm);
        flv e = precise ? fl_vexp_sub(xv, vm, lo, &d) : flv_exp_neg_fast(d);
        if (y) flv_store_part(y + k, e, n - k);
        acc = fl_dacc_add(acc, flv_sel_neg(d, e, zero));
        cnt = flv_add(cnt, flv_sel_neg(d, zero, one));
    }
    *n_eq = flv_hsum_d(cnt);
    return fl_dacc_sum(acc);
}

/* fl_rsumexp_t without precise, for a run of elements all below m (its own max is smaller,
 * so no NaN and no entry equal to m): every term goes to rest and there is nothing to count. */
FL_ALWAYS_INLINE double fl_rsumexp_below_t(const void *x, int64_t n, float m, float *y, fl_ahead ahead, int normal,
                                           int32_t dt)
{
    flv vm = flv_set1(m), zero = flv_set1(0.0f);
    fl_dacc acc = fl_dacc_zero();
    int64_t k = 0;
    while (k + FL_W <= n) {
        flv part[4] = {zero, zero, zero, zero};
        int64_t end = k + FL_SUM_CHUNK * FL_W < n ? k + FL_SUM_CHUNK * FL_W : n;
        for (; k + 4 * FL_W <= end; k += 4 * FL_W) {
            fl_ahead_touch(ahead, k, 4 * FL_W);
            flv e[4];
            FL_UNROLL(4)
            for (int j = 0; j < 4; j++) e[j] = fl_vexp_loss(flv_sub(fl_xload(x, k + j * FL_W, dt), vm), normal);
            FL_UNROLL(4)
            for (int j = 0; j < 4; j++) {
                if (y) flv_store(y + k + j * FL_W, e[j]);
                part[j] = flv_add(part[j], e[j]);
            }
        }
        for (; k + FL_W <= end; k += FL_W) {
            fl_ahead_touch(ahead, k, FL_W);
            flv e = fl_vexp_loss(flv_sub(fl_xload(x, k, dt), vm), normal);
            if (y) flv_store(y + k, e);
            part[0] = flv_add(part[0], e);
        }
        acc = fl_dacc_add(acc, flv_add(flv_add(part[0], part[1]), flv_add(part[2], part[3])));
    }
    if (k < n) {
        /* the fill lanes are -inf: exp gives 0 */
        flv e = flv_exp_neg_fast(flv_sub(fl_xload_part(x, k, n - k, -INFINITY, dt), vm));
        if (y) flv_store_part(y + k, e, n - k);
        acc = fl_dacc_add(acc, e);
    }
    return fl_dacc_sum(acc);
}

/* Can a row of c classes, max m and min lo take the exact-reduction exponentials of
 * fl_rsumexp_shift_t? Its logits then lie in [m - 86, m], within [-150, 64] where
 * flv_exp_shift_normal holds, and x * log2(e) - sn in [-125, 1]. Beyond 64 the float32
 * exponentials of x itself would leave the reduction's tested range; such rows take the TwoSum
 * path. So do rows of at most FL_LANES_MAX_C classes: the tiles (fl_tile.h) compute those with
 * the TwoSum formulas, and a row that a tile hands back (a tile holding a NaN row, say) must
 * come out with the same bits as in the tile, or a row's result would depend on its neighbours. */
#define FL_SHIFT_MMAX 64.0f
static inline int fl_shift_ok(float m, float lo, int64_t c)
{
    return c > FL_LANES_MAX_C && fabsf(m) <= FL_SHIFT_MMAX && lo >= m + FL_EXPF_NORMAL_LO;
}

/* the ties of a vector holding some x >= m (x == m: m is the row's max): counted, and their
 * exponentials taken out of e (they join the count, not the rest) */
static inline flv fl_take_ties(flv xv, flv m, flv e, int64_t *ties)
{
    float xs[FL_W], es[FL_W], mv = flv_hmax(m);
    flv_store(xs, xv);
    flv_store(es, e);
    for (int j = 0; j < FL_W; j++)
        if (xs[j] >= mv) { es[j] = 0.0f; (*ties)++; }
    return flv_load(es);
}

/* What fl_rsumexp_shift_t computes besides the sum, a constant at each call site:
 *   FL_SUM_STORE  y receives the exponentials
 *   FL_SUM_TIES   the entries equal to the max are counted apart (n_eq) and left out of the
 *                 rest, as fl_rsumexp_t does; without it *n_eq = 0 and the rest is the whole
 *                 sum, which is all the softmax needs (its maxima's exponentials are stored
 *                 and scaled like the others, so the sum that divides them holds them too)
 *   FL_SUM_DOT    *dot receives the entropy's sum_k exp(x_k - m) * (x_k - m), as
 *                 fl_rdot_shift_t (float64 lanes, each step rounded once) but in the same
 *                 pass, from the exponentials in registers: a second pass over the logits
 *                 and the stored exponentials was a quarter of the entropy's instructions */
enum { FL_SUM_STORE = 1, FL_SUM_TIES = 2, FL_SUM_DOT = 4 };

/* fl_take_ties for four vectors of a finite row: one comparison of their max finds the
 * (rare) step that holds ties; a comparison and a branch per vector were a sixth of
 * logsumexp's instructions. Inlined and unrolled so that xv and e stay in registers (a loop
 * over them kept both arrays on the stack: AVX-512 logsumexp ran 15% slower). */
FL_ALWAYS_INLINE void fl_take_ties4(const flv *xv, flv m, flv *e, int64_t *ties)
{
    if (!flv_any_ge(flv_max_ord(flv_max_ord(xv[0], xv[1]), flv_max_ord(xv[2], xv[3])), m)) return;
    FL_UNROLL(4)
    for (int j = 0; j < 4; j++)
        if (flv_any_ge(xv[j], m)) e[j] = fl_take_ties(xv[j], m, e[j], ties);
}

/* fl_rsumexp_t with precise set, for a row that fl_shift_ok admits: e_k = exp(x_k) * 2^-sn,
 * sn = round(m log2 e), by the exact reduction of flv_exp_shift_normal, and e_k = c *
 * exp(x_k - m) with c = exp(m - sn ln2) in [0.7, 1.42], returned in *scale. Returns the rest
 * and *n_eq as fl_rsumexp_t does (the rest divided by c in double); y receives the e_k, scaled
 * by c, and *dot the entropy's sum divided by c, as opts asks (FL_SUM_*). Per vector: the
 * exponential, with FL_SUM_TIES one comparison for ties (which only a vector holding the max
 * takes further, fl_take_ties), and the float64 sum: the TwoSum correction's seven vector
 * operations and the two selects of the counting are gone. */
FL_ALWAYS_INLINE double fl_rsumexp_shift_t(const void *x, int64_t n, float m, float *y, double *n_eq, double *scale,
                                           double *dot, int opts, fl_ahead ahead, int32_t dt)
{
    float sn = fl_rintf(m * FL_LOG2E_F);
    flv vm = flv_set1(m), vsn = flv_set1(sn);
    fl_dacc acc = fl_dacc_zero(), adot = acc;
    int64_t k = 0, ties = 0;
    for (; k + 4 * FL_W <= n; k += 4 * FL_W) {
        fl_ahead_touch(ahead, k, 4 * FL_W);
        flv xv[4], e[4];
        FL_UNROLL(4)
        for (int j = 0; j < 4; j++) {
            xv[j] = fl_xload(x, k + j * FL_W, dt);
            e[j] = flv_exp_shift_normal(xv[j], vsn);
        }
        if (opts & FL_SUM_STORE) {
            FL_UNROLL(4)
            for (int j = 0; j < 4; j++) flv_store(y + k + j * FL_W, e[j]);
        }
        if (opts & FL_SUM_TIES) fl_take_ties4(xv, vm, e, &ties);
        FL_UNROLL(4)
        for (int j = 0; j < 4; j++) {
            /* a tie's product is 0 (x - m = 0) with its exponential or without */
            if (opts & FL_SUM_DOT) adot = fl_dacc_add_prod(adot, e[j], xv[j], (double)m);
            acc = fl_dacc_add(acc, e[j]);
        }
    }
    for (; k < n; k += FL_W) {
        /* the last vectors, the final one partial: its fill lanes (m itself, a valid argument)
         * are taken out with the ties and not counted, or zeroed */
        int64_t len = n - k < FL_W ? n - k : FL_W;
        fl_ahead_touch(ahead, k, FL_W);
        flv xv = fl_xload_part(x, k, len, m, dt), e = flv_exp_shift_normal(xv, vsn);
        if (opts & FL_SUM_STORE) flv_store_part(y + k, e, len);
        if (opts & FL_SUM_DOT) adot = fl_dacc_add_prod(adot, e, xv, (double)m); /* the fill lanes add 0 */
        if (opts & FL_SUM_TIES) {
            if (flv_any_ge(xv, vm)) {
                ties -= FL_W - len;
                e = fl_take_ties(xv, vm, e, &ties);
            }
        } else if (len < FL_W) {
            float es[FL_W];
            flv_store(es, e);
            e = flv_load_part(es, len, 0.0f);
        }
        acc = fl_dacc_add(acc, e);
    }
    double c = fl_exp_d((double)m - (double)sn * 0.69314718055994530942);
    *scale = c;
    *n_eq = (double)ties;
    if (opts & FL_SUM_DOT) *dot = fl_dacc_sum(adot) / c;
    return fl_dacc_sum(acc) / c;
}

/* fl_rsumexp_shift_t's rest and *n_eq for logsumexp's first try: the degree-5 exponential
 * (flv_exp_fast_shift_normal, 1.95 ULP) and float32 partial sums, FL_SUM_CHUNK vectors at a time
 * in four partials before the float64 lanes, as the cross-entropy's sums (a vector goes
 * through at most 12 float32 roundings: 10 in its partial, 2 joining them), no y. The rest is
 * then within FL_FAST_REST_ERR * 2^-24 of its value, relatively, and logsumexp keeps it where
 * that error, carried into log S, is well inside its 4 ULP (fl_reduce_row). */
#define FL_FAST_REST_ERR 17.0
FL_ALWAYS_INLINE double fl_rsumexp_fast_shift_t(const void *x, int64_t n, float m, double *n_eq, fl_ahead ahead,
                                                int32_t dt)
{
    float sn = fl_rintf(m * FL_LOG2E_F);
    flv vm = flv_set1(m), vsn = flv_set1(sn), zero = flv_set1(0.0f);
    fl_dacc acc = fl_dacc_zero();
    int64_t k = 0, ties = 0;
    while (k + FL_W <= n) {
        flv part[4] = {zero, zero, zero, zero};
        int64_t end = k + FL_SUM_CHUNK * FL_W < n ? k + FL_SUM_CHUNK * FL_W : n;
        for (; k + 4 * FL_W <= end; k += 4 * FL_W) {
            fl_ahead_touch(ahead, k, 4 * FL_W);
            flv xv[4], e[4];
            FL_UNROLL(4)
            for (int j = 0; j < 4; j++) {
                xv[j] = fl_xload(x, k + j * FL_W, dt);
                e[j] = flv_exp_fast_shift_normal(xv[j], vsn);
            }
            fl_take_ties4(xv, vm, e, &ties);
            FL_UNROLL(4)
            for (int j = 0; j < 4; j++) part[j] = flv_add(part[j], e[j]);
        }
        for (; k + FL_W <= end; k += FL_W) {
            fl_ahead_touch(ahead, k, FL_W);
            flv xv = fl_xload(x, k, dt), e = flv_exp_fast_shift_normal(xv, vsn);
            if (flv_any_ge(xv, vm)) e = fl_take_ties(xv, vm, e, &ties);
            part[0] = flv_add(part[0], e);
        }
        acc = fl_dacc_add(acc, flv_add(flv_add(part[0], part[1]), flv_add(part[2], part[3])));
    }
    if (k < n) {
        /* the fill lanes (m itself) are taken out with the ties and not counted */
        flv xv = fl_xload_part(x, k, n - k, m, dt), e = flv_exp_fast_shift_normal(xv, vsn);
        ties -= FL_W - (n - k);
        acc = fl_dacc_add(acc, fl_take_ties(xv, vm, e, &ties));
    }
    *n_eq = (double)ties;
    return fl_dacc_sum(acc) / fl_exp_d((double)m - (double)sn * 0.69314718055994530942);
}

/* 1/s rounded to float32, for a softmax row's sum s (at least 0.7, far below 2^100): a float32
 * quotient refined by one Newton step in double (relative error below 2^-45 before the last
 * rounding, so within 0.5 + 2^-21 ULP; a double quotient gave 0.5 + 2^-29). The tiles' loop over their lanes
 * vectorises into one single-precision division a vector instead of two in double (those were
 * 30% of softmax 65536x2 on AVX-512); a row's scalar code takes the same steps, so a row gets
 * the same bits whichever path takes it. */
static inline float fl_recip_sum_f(double s)
{
    double y = (double)(1.0f / (float)s);
    return (float)fma(y, fma(-s, y, 1.0), y);
}

/* log of the row's sum of exponentials from its two parts, accurate when rest << 1 */
static inline double fl_log_sum(double n_eq, double rest)
{
    return fl_log1p_d((n_eq - 1.0) + rest);
}

static inline void fl_rscale_f32(float *y, int64_t n, float a)
{
    flv va = flv_set1(a);
    int64_t k = 0;
    for (; k + FL_W <= n; k += FL_W) flv_store(y + k, flv_mul(flv_load(y + k), va));
    if (k < n) flv_store_part(y + k, flv_mul(flv_load_part(y + k, n - k, 0.0f), va), n - k);
}


/* A shift x - m made finite: -inf (where exp(x - m) = 0) becomes -1e300, so p * shift is 0
 * without a select. (GCC 12's AVX2 vectorisation of the select form, p > 0 ? p * d : 0, gave
 * wrong sums when d was -inf.) */
static inline double fl_clamp_shift_d(double d) { return d < -1e300 ? -1e300 : d; }

/* sum over k of p_k * (x_k - m) with p_k = exp(x_k - m); -inf logits add 0. In float64 lanes,
 * four vectors a step into two accumulators (fl_dacc_add_prod): the per-element double loop
 * this replaces was not vectorised by GCC and ran at a third of the exponentials' rate. */
FL_ALWAYS_INLINE double fl_rdot_shift_t(const void *x, const float *p, int64_t n, double m, int32_t dt)
{
    fl_dacc a0 = fl_dacc_zero(), a1 = a0;
    int64_t k = 0;
    for (; k + 2 * FL_W <= n; k += 2 * FL_W) {
        a0 = fl_dacc_add_prod(a0, flv_load(p + k), fl_xload(x, k, dt), m);
        a1 = fl_dacc_add_prod(a1, flv_load(p + k + FL_W), fl_xload(x, k + FL_W, dt), m);
    }
    for (; k + FL_W <= n; k += FL_W) a0 = fl_dacc_add_prod(a0, flv_load(p + k), fl_xload(x, k, dt), m);
    /* the fill lanes: p = 0 and x = m add exactly 0 */
    if (k < n) a0 = fl_dacc_add_prod(a0, flv_load_part(p + k, n - k, 0.0f), fl_xload_part(x, k, n - k, (float)m, dt), m);
    return fl_dacc_sum(a0) + fl_dacc_sum(a1);
}

#endif
