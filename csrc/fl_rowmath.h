/* fl_rowmath.h: the arithmetic on one contiguous float32 (or float16/bfloat16) row, in FL_W
 * float32 lanes: max and min, exponentials of x - max, sums of exponentials, the entropy's dot
 * product. The exact-reduction (shift) sums are in fl_rowmath_shift.h, included below. Float64
 * rows are in fl_rowmath_f64.h, tiles of small rows in fl_tile.h, the
 * prefetching and streamed output rows in fl_pend.h, sigmoids in fl_sigmoid_math.h.
 *
 * Accuracy design (see API.md, "Accuracy"): exp(x_i - max) must be right to about one ULP even
 * when x_i and the max differ in magnitude, where x - m rounds. Rows of moderate logits
 * (fl_shift_mode: |max| <= 64, none more than 86 below it but masked ones more than 104 below,
 * whose exponentials are 0) take exp(x_i) * 2^-sn with
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
    /* lo is -inf when m is within about 2^-21 |m| of -FLT_MAX (the floor overflows): a -inf x
     * then makes e = inf - inf, whose NaN would turn exp(s) = 0 into NaN */
    if (!normal) e = flv_zero_nan(e);
    *shift = s;
    /* outside the normal range p may be subnormal: flv_mul1p spares those vectors the assist */
    return normal ? flv_fma(p, e, p) : flv_mul1p(p, e);
}

static inline flv fl_vexp_sub(flv x, flv m, flv lo, flv *shift) { return fl_vexp_sub_n(x, m, lo, shift, 0); }

/* Which exponentials a run of logits of max m and min lo takes (the same values in each mode):
 *   FL_EXP_NORMAL   none is more than 86 below m: no clamp, no subnormal results
 *   FL_EXP_MASKED   the min is below the gap (FL_EXPF_GAP_MID): masked logits, -inf. The sums
 *                   take the masked exponentials, 0 below the gap, and return FL_SUM_GAP when a
 *                   logit lies in it after all (then the general ones redo the run)
 *   FL_EXP_GENERAL  the min itself is in the gap: the clamp and subnormal-safe scaling */
enum { FL_EXP_GENERAL, FL_EXP_NORMAL, FL_EXP_MASKED };
static inline int fl_exp_mode(float m, float lo)
{
    if (lo >= m + FL_EXPF_NORMAL_LO) return FL_EXP_NORMAL;
    return lo < m + (FL_EXPF_GAP_MID - FL_EXPF_GAP_HALF) ? FL_EXP_MASKED : FL_EXP_GENERAL;
}

/* What a masked sum returns for a run holding a logit in the gap (a sum is never negative) */
#define FL_SUM_GAP (-1.0)

/* Has a masked sum met a logit in the gap? (g: its one accumulator, from flv_set1(INFINITY);
 * one, not one per vector of a step: four on AVX2 were kept in memory, two operations more a
 * vector, and the chain of minima is far shorter than a step's exponentials) */
static inline int fl_gap_met(flv g)
{
    return flv_any_ge(flv_set1(FL_EXPF_GAP_HALF), g);
}

/* the non-precise sums' exponential of d <= 0 in the given mode (fl_exp_mode; gap: the masked
 * form's accumulator) */
FL_ALWAYS_INLINE flv fl_vexp_loss(flv d, int mode, flv *gap)
{
    if (mode == FL_EXP_MASKED) return flv_exp_neg_fast_masked(d, gap);
    return mode == FL_EXP_NORMAL ? flv_exp_neg_fast_normal(d) : flv_exp_neg_fast(d);
}

/* Sum of exp(x_k - m) over the row, split as n_eq + rest: n_eq counts the entries equal to the
 * max (each contributes exactly 1) and rest sums the others, in float64 lanes. Keeping the ones
 * apart lets log(sum) = log1p((n_eq - 1) + rest) stay accurate for peaked rows, where rest is
 * tiny. When y is not NULL it also receives exp(x_k - m). m must be finite.
 * precise: carry the rounding error of x - m into the exponential (fl_vexp_sub), which every
 * ULP-bounded output needs; without it exp(x - m) is off by up to |x - m| * 2^-24 relative,
 * which is enough for losses held to a relative tolerance, the exponential is the shorter
 * flv_exp_neg_fast (2 ULP instead of 1), and the terms are first added in
 * float32 lanes, FL_SUM_CHUNK vectors at a time (a relative error below FL_SUM_CHUNK * 2^-24
 * = 2e-6 at worst), before joining the float64 lanes. mode (fl_exp_mode): FL_EXP_NORMAL, every
 * x_k is known to be at least m + FL_EXPF_NORMAL_LO, so the exponentials skip their floor, clamp
 * and subnormal handling (fl_vexp_sub_n, fl_vexp_loss; the same values); FL_EXP_MASKED (without
 * precise only) takes the masked exponentials and returns FL_SUM_GAP for a row holding a logit
 * in the gap (fl_rsumexp_loss_t redoes it). */
#define FL_SUM_CHUNK 32
FL_ALWAYS_INLINE double fl_rsumexp_t(const void *x, int64_t n, float m, float *y, double *n_eq, int precise,
                                     fl_ahead ahead, int mode, int32_t dt)
{
    flv vm = flv_set1(m), lo = fl_exp_floor(vm), zero = flv_set1(0.0f), one = flv_set1(1.0f), cnt = zero, gap = flv_set1(INFINITY);
    fl_dacc acc = fl_dacc_zero();
    int64_t k = 0;
    int normal = mode == FL_EXP_NORMAL;
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
            if (mode == FL_EXP_MASKED && fl_gap_met(gap)) return FL_SUM_GAP;
            for (; k + 4 * FL_W <= end; k += 4 * FL_W) {
                fl_ahead_touch(ahead, k, 4 * FL_W);
                flv d[4], e[4];
                FL_UNROLL(4)
                for (int j = 0; j < 4; j++) {
                    d[j] = flv_sub(fl_xload(x, k + j * FL_W, dt), vm);
                    e[j] = fl_vexp_loss(d[j], mode, &gap);
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
                flv e = fl_vexp_loss(d, mode, &gap);
                if (y) flv_store(y + k, e);
                part[0] = flv_add(part[0], flv_sel_neg(d, e, zero));
                cnt4[0] = flv_add(cnt4[0], flv_sel_neg(d, zero, one));
            }
            acc = fl_dacc_add(acc, flv_add(flv_add(part[0], part[1]), flv_add(part[2], part[3])));
            cnt = flv_add(cnt, flv_add(flv_add(cnt4[0], cnt4[1]), flv_add(cnt4[2], cnt4[3])));
        }
        if (mode == FL_EXP_MASKED && fl_gap_met(gap)) return FL_SUM_GAP;
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
 * so no NaN and no entry equal to m): every term goes to rest and there is nothing to count.
 * mode as in fl_rsumexp_t (FL_EXP_MASKED: FL_SUM_GAP for a run holding a logit in the gap). */
FL_ALWAYS_INLINE double fl_rsumexp_below_t(const void *x, int64_t n, float m, float *y, fl_ahead ahead, int mode,
                                           int32_t dt)
{
    flv vm = flv_set1(m), zero = flv_set1(0.0f), gap = flv_set1(INFINITY);
    fl_dacc acc = fl_dacc_zero();
    int64_t k = 0;
        while (k + FL_W <= n) {
        flv part[4] = {zero, zero, zero, zero};
        int64_t end = k + FL_SUM_CHUNK * FL_W < n ? k + FL_SUM_CHUNK * FL_W : n;
        if (mode == FL_EXP_MASKED && fl_gap_met(gap)) return FL_SUM_GAP;
        for (; k + 4 * FL_W <= end; k += 4 * FL_W) {
            fl_ahead_touch(ahead, k, 4 * FL_W);
            flv e[4];
            FL_UNROLL(4)
            for (int j = 0; j < 4; j++) e[j] = fl_vexp_loss(flv_sub(fl_xload(x, k + j * FL_W, dt), vm), mode, &gap);
            FL_UNROLL(4)
            for (int j = 0; j < 4; j++) {
                if (y) flv_store(y + k + j * FL_W, e[j]);
                part[j] = flv_add(part[j], e[j]);
            }
        }
        for (; k + FL_W <= end; k += FL_W) {
            fl_ahead_touch(ahead, k, FL_W);
            flv e = fl_vexp_loss(flv_sub(fl_xload(x, k, dt), vm), mode, &gap);
            if (y) flv_store(y + k, e);
            part[0] = flv_add(part[0], e);
        }
        acc = fl_dacc_add(acc, flv_add(flv_add(part[0], part[1]), flv_add(part[2], part[3])));
    }
    if (mode == FL_EXP_MASKED && fl_gap_met(gap)) return FL_SUM_GAP;
    if (k < n) {
        /* the fill lanes are -inf: exp gives 0 */
        flv e = flv_exp_neg_fast(flv_sub(fl_xload_part(x, k, n - k, -INFINITY, dt), vm));
        if (y) flv_store_part(y + k, e, n - k);
        acc = fl_dacc_add(acc, e);
    }
    return fl_dacc_sum(acc);
}

/* fl_rsumexp_t without precise and fl_rsumexp_below_t (below: all of the run is below m) in the
 * mode of fl_exp_mode, a masked sum that met a logit in the gap redone with the general
 * exponentials (the same values in every mode). *gap is the row's: once one of its runs met
 * the gap, its later runs take the general exponentials at once (rows of wide logits, e.g.
 * randn * 30, have logits in the gap in most runs: trying the masked sum first cost each run
 * a wasted stretch, cross-entropy 4096x32000 +20%). */
FL_ALWAYS_INLINE double fl_rsumexp_loss_t(const void *x, int64_t n, float m, float *y, double *n_eq, int below,
                                          fl_ahead ahead, int mode, int *gap, int32_t dt)
{
    double r = FL_SUM_GAP;
    *n_eq = 0.0;
    if (mode == FL_EXP_NORMAL)
        return below ? fl_rsumexp_below_t(x, n, m, y, ahead, FL_EXP_NORMAL, dt)
                     : fl_rsumexp_t(x, n, m, y, n_eq, 0, ahead, FL_EXP_NORMAL, dt);
    if (mode == FL_EXP_MASKED && !*gap)
        r = below ? fl_rsumexp_below_t(x, n, m, y, ahead, FL_EXP_MASKED, dt)
                  : fl_rsumexp_t(x, n, m, y, n_eq, 0, ahead, FL_EXP_MASKED, dt);
    if (r != FL_SUM_GAP) return r;
    *gap |= mode == FL_EXP_MASKED;
    return below ? fl_rsumexp_below_t(x, n, m, y, ahead, FL_EXP_GENERAL, dt)
                 : fl_rsumexp_t(x, n, m, y, n_eq, 0, ahead, FL_EXP_GENERAL, dt);
}

#include "fl_rowmath_shift.h"

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
