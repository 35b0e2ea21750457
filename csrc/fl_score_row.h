/* fl_score_row.h: what one row (softmax) or one element (sigmoid) contributes to fl_score,
 * before weighting. Included by fl_score.c only (static inline, one copy per ISA build).
 *
 * A softmax row is read in three passes, each over the row in place (fl_rowio.h): the rank
 * of the target (fl_rank_t: how many classes the order of predict/topk puts before it, so the
 * target is predicted iff the rank is 0 and in the top k iff it is < k), the max, and one pass
 * of exponentials e_k = exp((x_k - m)/T) (fl_rstats_t) giving s = sum e_k, sum e_k^2 and
 * sum e_k (x_k - m), from which fl_softmax_stats derives the NLL, the confidence 1/s, the
 * Brier term, the entropy and the temperature gap without a second pass. When the per-class
 * block wants the probabilities, the same pass stores the exponentials into a row buffer
 * (p_c = e_c / s once s is known): the row's exponentials are computed once. The predicted
 * class is needed only by the confusion matrix, and only when the rank is not 0 (else it is
 * the target): fl_argmax_t then scans for the first element equal to the max, four vectors
 * at a time, and stops there.
 *
 * Float32 (and half-precision) rows accumulate in float32 lanes over groups of FL_GROUP
 * vectors, each group then added in double (see FL_GROUP); float64 rows in double. At T = 1,
 * rows that the softmax family's exact reduction admits (|max| <= 64, no logit more than 86
 * below it) take exp(x_k) 2^-round(max log2 e) (fl_rstats_shift_t: x - m is never rounded
 * before its exponential); the others' exponential carries the rounding error of x - m and
 * of the division by T (fl_rstats_t).
 */
#ifndef FL_SCORE_ROW_H
#define FL_SCORE_ROW_H

#include <float.h>
#include <math.h>
#include <stdint.h>

#include "fl_rowio.h"
#include "fl_rowmath.h"
#include "fl_rowmath_f64.h"
#include "fl_scalar_math.h"
#include "fl_simd.h"

/* everything a row (softmax) or an element (sigmoid) contributes, before weighting */
typedef struct { double nll, correct, hit, conf, brier, ent, gap, tp, pp, ap, p; } fl_row_stats;

/* How many classes come before the target y in the order of predict/topk (NaN largest, then by
 * value, ties to the lower index): the target is the prediction iff the rank is 0 and in the
 * top k iff the rank is < k. */
static int64_t fl_rank_f64(const double *x, int64_t c, int64_t y)
{
    double v = x[y];
    int64_t r = 0;
    if (v != v) {
        for (int64_t k = 0; k < y; k++) r += x[k] != x[k];
        return r;
    }
    for (int64_t k = 0; k < y; k++) r += (x[k] >= v) | (x[k] != x[k]);
    for (int64_t k = y + 1; k < c; k++) r += (x[k] > v) | (x[k] != x[k]);
    return r;
}

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

/* the number of lanes of x that precede the target's value v in the rank's order: x >= v when
 * before (the element comes earlier), x > v when after; each test a subtraction and a select
 * (x != v gives x - v != 0 exactly; inf - inf is NaN: the select's "no" lane, which is the
 * right answer for x = v = +-inf after, and is turned into "yes" before). NaN-free rows only. */
static inline flv fl_rank_lanes(flv xv, flv vv, int before, flv one, flv zero)
{
    return before ? flv_sel_neg(flv_sub(xv, vv), zero, one) : flv_sel_neg(flv_sub(vv, xv), one, zero);
}

/* the max and the rank counts of the full vectors of x from k to end (before: all of them
 * come before the target's vector), two vectors a step into two maxima and two counts */
FL_ALWAYS_INLINE void fl_rmax_rank_run(const void *x, int64_t k, int64_t end, flv vv, int before, flv *a,
                                       flv *b, flv *n, int32_t dt)
{
    flv one = flv_set1(1.0f), zero = flv_set1(0.0f);
    for (; k + 2 * FL_W <= end; k += 2 * FL_W) {
        flv x0 = fl_xload(x, k, dt), x1 = fl_xload(x, k + FL_W, dt);
        a[0] = flv_max(x0, a[0]);
        a[1] = flv_max(x1, a[1]);
        b[0] = flv_min_ord(x0, b[0]);
        b[1] = flv_min_ord(x1, b[1]);
        n[0] = flv_add(n[0], fl_rank_lanes(x0, vv, before, one, zero));
        n[1] = flv_add(n[1], fl_rank_lanes(x1, vv, before, one, zero));
    }
    for (; k < end; k += FL_W) {
        flv x0 = fl_xload(x, k, dt);
        a[0] = flv_max(x0, a[0]);
        b[0] = flv_min_ord(x0, b[0]);
        n[0] = flv_add(n[0], fl_rank_lanes(x0, vv, before, one, zero));
    }
}

/* The row's max (as fl_rmax_t: NaN when the row holds one), its min in *mn (for the mode of its
 * exponentials, fl_exp_mode; not set for a row holding a NaN) and, in *rank, fl_rank_t's rank
 * of the target y, in one pass: the elements before y's vector are counted with >=, those after
 * it with >, y's own vector element by element. The counts are float lanes, exact while a lane
 * counts at most 2^24 (c <= 2^24, else the caller takes fl_rank_t); a row holding a NaN is
 * ranked again by fl_rank_t (rare: its softmax is NaN). */
FL_ALWAYS_INLINE float fl_rmax_rank_t(const void *x, int64_t c, int64_t y, int64_t *rank, float *mn, int32_t dt)
{
    float v = fl_xget(x, y, dt);
    flv vv = flv_set1(v), zero = flv_set1(0.0f);
    flv a[2] = {flv_set1(-INFINITY), flv_set1(-INFINITY)}, n[2] = {zero, zero};
    flv b[2] = {flv_set1(INFINITY), flv_set1(INFINITY)};
    int64_t k0 = y - y % FL_W, nfull = c - c % FL_W;
    fl_rmax_rank_run(x, 0, k0, vv, 1, a, b, n, dt);
    int64_t r = 0, kend = k0 + FL_W < c ? k0 + FL_W : c;
    for (int64_t j = k0; j < kend; j++) {
        float xj = fl_xget(x, j, dt);
        r += j < y ? xj >= v : j > y && xj > v;
    }
    int full = kend - k0 == FL_W;
    a[1] = flv_max(full ? fl_xload(x, k0, dt) : fl_xload_part(x, k0, kend - k0, -INFINITY, dt), a[1]);
    b[1] = flv_min_ord(full ? fl_xload(x, k0, dt) : fl_xload_part(x, k0, kend - k0, INFINITY, dt), b[1]);
    fl_rmax_rank_run(x, kend, nfull, vv, 0, a, b, n, dt);
    int64_t tail = kend > nfull ? kend : nfull; /* the partial last vector, unless it was y's */
    if (tail < c) {
        flv x0 = fl_xload_part(x, tail, c - tail, -INFINITY, dt);
        a[0] = flv_max(x0, a[0]);
        b[0] = flv_min_ord(fl_xload_part(x, tail, c - tail, INFINITY, dt), b[0]);
        n[0] = flv_add(n[0], fl_rank_lanes(x0, vv, 0, flv_set1(1.0f), zero));
    }
    float m = flv_hmax(flv_max(a[0], a[1]));
    if (m != m) {
        *rank = fl_rank_t(x, c, y, dt);
        return fl_rmax_t(x, c, dt);
    }
    *mn = -flv_hmax(flv_neg(flv_min_ord(b[0], b[1])));
    *rank = r + (int64_t)flv_hsum_d(flv_add(n[0], n[1]));
    return m;
}

/* The predicted class, as predict: the first NaN, else the first maximum; m is the row's max
 * from fl_rmax_t (NaN when the row holds one). A row without NaN is scanned four vectors at a
 * time for a lane >= m (= m: it is the max); the first such lane is then read from the four
 * vectors' masks (an element-by-element scan from the group's start cost ~30 elements a row). */
FL_ALWAYS_INLINE int64_t fl_argmax_t(const void *x, int64_t c, float m, int32_t dt)
{
    int64_t k = 0;
    if (m != m) {
        while (k < c && fl_xget(x, k, dt) == fl_xget(x, k, dt)) k++;
        return k < c ? k : 0;
    }
    flv vm = flv_set1(m);
    for (; k + 4 * FL_W <= c; k += 4 * FL_W) {  /* four vectors a test: the max of their maxima */
        flv a = flv_max_ord(fl_xload(x, k, dt), fl_xload(x, k + FL_W, dt));
        flv b = flv_max_ord(fl_xload(x, k + 2 * FL_W, dt), fl_xload(x, k + 3 * FL_W, dt));
        if (!flv_any_ge(flv_max_ord(a, b), vm)) continue;
        uint64_t msk = 0;
        for (int j = 0; j < 4; j++) msk |= (uint64_t)flv_mask_ge(fl_xload(x, k + j * FL_W, dt), vm) << (j * FL_W);
        return k + fl_ctz64(msk);
    }
    for (; k + FL_W <= c; k += FL_W) {
        unsigned msk = flv_mask_ge(fl_xload(x, k, dt), vm);
        if (msk) return k + fl_ctz(msk);
    }
    while (k < c && fl_xget(x, k, dt) != m) k++;
    return k < c ? k : 0;
}

static int64_t fl_argmax_f64(const double *x, int64_t c)
{
    double best = x[0];
    int64_t arg = 0;
    if (best != best) return 0;
    for (int64_t k = 1; k < c; k++) {
        if (x[k] != x[k]) return k;
        if (x[k] > best) { best = x[k]; arg = k; }
    }
    return arg;
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
 * to float64 lanes (fl_dacc): a lane adds at most FL_GROUP terms in float (relative error <=
 * FL_GROUP * 2^-24, about the 2 ULP of the exponentials), while one conversion per group instead
 * of per vector keeps the pass at the speed of the exponentials (a horizontal sum per group
 * cost 16 instructions a vector: AVX2, callgrind). */
#define FL_GROUP 4

/* normal: T = 1 and no logit of the row more than 86 below its max (fl_exp_mode), so the
 * exponentials need neither the floor nor the subnormal-safe product (the same values) */
FL_ALWAYS_INLINE flv fl_vexp_row(flv x, flv m, flv lo, flv vt, int unit, int normal)
{
    flv shift;
    return unit ? fl_vexp_sub_n(x, m, lo, &shift, normal) : fl_vexp_sub_t(x, m, vt);
}

/* One pass over a row of dtype dt with max m: with e_k = exp((x_k - m)/T), n_eq counts the
 * entries equal to m (each e_k = 1 exactly) and s, sq the sums of e_k and e_k^2 over the others;
 * dot = sum e_k (x_k - m) (a term with e_k = 0 adds 0, so -inf logits are harmless). The max's
 * ones are kept apart because the float lanes add FL_GROUP terms before going to double: a
 * lane holding a 1 lost the small terms added to it (rows whose other classes are 20 or more
 * below the max: nll 3e-3 relative off, Brier 1%), where now the rest is summed alone and
 * 1 - p_y = ((n_eq - 1) + s) / (n_eq + s) has no cancellation. Returns e_y, the very value
 * summed. When ebuf is not NULL (a constant at each call: the function is inlined) the
 * exponentials are also stored there, for the per-class block. normal (a constant too): T = 1
 * and the row's min within 86 of m (fl_vexp_row); its logits are then finite, so are the
 * products e_k (x_k - m). */
FL_ALWAYS_INLINE void fl_rstats_vec(const void *x, int64_t k, flv vm, flv lo, flv vt, int unit, int normal,
                                    float *ebuf, flv *a, flv *b, flv *c, flv *cnt, int32_t dt)
{
    flv zero = flv_set1(0.0f);
    flv xv = fl_xload(x, k, dt), dv = flv_sub(xv, vm);
    flv e = fl_vexp_row(xv, vm, lo, vt, unit, normal);
    flv er = flv_sel_neg(dv, e, zero);     /* the max's ones counted apart */
    if (ebuf) flv_store(ebuf + k, e);
    *a = flv_add(*a, er);
    *cnt = flv_add(*cnt, flv_sel_neg(dv, zero, flv_set1(1.0f)));
    if (normal) {
        *b = flv_fma(er, er, *b);
        *c = flv_add(*c, flv_mul(e, dv));
        return;
    }
    /* A row of a wide spread: the terms whose product would be subnormal are left out, so that
     * no product has a subnormal operand or result (x86 computes those by a microcode assist:
     * 256x32000 randn * 20 took 8x the FTZ/DAZ time). e_k^2 for e_k < 2^-63 (each below
     * 2^-126, against sq + n_eq >= 1 where it is used) and e_k (x_k - m) for subnormal e_k (each
     * below 2^-119 in size: x_k - m < -86 there, and e_k = 0 below -104); the others are
     * normal. A row's dot product moves by less than C * 2^-119, its sq by C * 2^-126. */
    flv ers = flv_sel_neg(flv_sub(er, flv_set1(0x1p-63f)), zero, er);
    flv en = flv_sel_neg(flv_sub(e, flv_set1(FLT_MIN)), zero, e);
    *b = flv_fma(ers, ers, *b);
    *c = flv_add(*c, flv_zero_nan(flv_mul(en, dv)));  /* NaN: e_k = 0 at a -inf logit */
}

#define FL_COUNT_GROUPS 4096 /* groups between flushes of the float count: exact below 2^24 a lane */
/* ahead: the next row, fetched a group at a time among the exponentials (fl_ahead_touch_l2), so
 * the first pass over it (max and rank) finds it in cache: the hardware prefetcher stops at
 * each page, and that pass alone could not keep enough reads in flight (AVX2, 100000 x 1000
 * from memory: the rank pass cost 0.33 ns an element, 0.06 from cache) */
FL_ALWAYS_INLINE float fl_rstats_t(const void *x, int64_t n, float m, double t, int64_t y, double *n_eq, double *s,
                                   double *sq, double *dot, float *ebuf, int normal, fl_ahead ahead, int32_t dt)
{
    flv vm = flv_set1(m), lo = fl_exp_floor(vm), vt = flv_set1((float)t), zero = flv_set1(0.0f);
    flv one = flv_set1(1.0f), cnt = zero;
    int unit = t == 1.0;
    fl_dacc s1 = fl_dacc_zero(), s2 = s1, d = s1;
    double ne = 0.0;
    float lanes[FL_W] = {0};       /* the vector of exponentials holding e_y */
    int64_t k = 0, nfull = n - n % FL_W, k0 = y - y % FL_W, groups = 0;
    while (k < nfull) {
        /* a full group as a fixed count (unrolled: its constants stay in registers), the last
         * one as it comes */
        int64_t end = k + FL_GROUP * FL_W <= nfull ? k + FL_GROUP * FL_W : nfull;
        flv a = zero, b = zero, c = zero;
        fl_ahead_touch_l2(ahead, k, FL_GROUP * FL_W);
        if (end - k == FL_GROUP * FL_W)
            for (int j = 0; j < FL_GROUP; j++, k += FL_W)
                fl_rstats_vec(x, k, vm, lo, vt, unit, normal, ebuf, &a, &b, &c, &cnt, dt);
        else
            for (; k < end; k += FL_W) fl_rstats_vec(x, k, vm, lo, vt, unit, normal, ebuf, &a, &b, &c, &cnt, dt);
        s1 = fl_dacc_add(s1, a);
        s2 = fl_dacc_add(s2, b);
        d = fl_dacc_add(d, c);
        if (++groups == FL_COUNT_GROUPS) {
            ne += flv_hsum_d(cnt);
            cnt = zero;
            groups = 0;
        }
    }
    if (k < n) {
        /* the general exponential: the vector's lanes past the row are -inf */
        flv xv = fl_xload_part(x, k, n - k, -INFINITY, dt), dv = flv_sub(xv, vm);
        flv e = fl_vexp_row(xv, vm, lo, vt, unit, 0);
        flv er = flv_sel_neg(dv, e, zero);
        if (ebuf) flv_store_part(ebuf + k, e, n - k);
        else if (k == k0) flv_store(lanes, e);
        s1 = fl_dacc_add(s1, er);
        s2 = fl_dacc_add(s2, flv_mul(er, er));
        cnt = flv_add(cnt, flv_sel_neg(dv, zero, one));
        d = fl_dacc_add(d, flv_zero_nan(flv_mul(e, dv)));
    }
    /* e_y's vector taken again, not kept in the loop (a test a vector): the same value */
    if (!ebuf && k0 < nfull) flv_store(lanes, fl_vexp_row(fl_xload(x, k0, dt), vm, lo, vt, unit, normal));
    *n_eq = ne + flv_hsum_d(cnt);
    *s = fl_dacc_sum(s1);
    *sq = fl_dacc_sum(s2);
    *dot = fl_dacc_sum(d);
    return ebuf ? ebuf[y] : lanes[y - k0];
}

/* The four vectors of a step: e_k and, with moments, their squares and e_k (x_k - m) into the
 * float lanes (the ties' e_k are 0 by then: fl_take_ties4), then into the float64 lanes, a
 * group as fl_rstats_t */
FL_ALWAYS_INLINE void fl_rstats_shift_step(const flv *xv, const flv *e, flv vm, int moments, fl_dacc *s1,
                                           fl_dacc *s2, fl_dacc *d)
{
    flv a = flv_add(flv_add(e[0], e[1]), flv_add(e[2], e[3]));
    *s1 = fl_dacc_add(*s1, a);
    if (!moments) return;
    flv b = flv_fma(e[1], e[1], flv_mul(e[0], e[0]));
    flv c = flv_fma(e[1], flv_sub(xv[1], vm), flv_mul(e[0], flv_sub(xv[0], vm)));
    b = flv_fma(e[3], e[3], flv_fma(e[2], e[2], b));
    c = flv_fma(e[3], flv_sub(xv[3], vm), flv_fma(e[2], flv_sub(xv[2], vm), c));
    *s2 = fl_dacc_add(*s2, b);
    *d = fl_dacc_add(*d, c);
}

/* fl_rstats_t (T = 1, normal) for a float32 row that fl_shift_mode admits, by the exact
 * reduction of fl_rsumexp_shift_t: e'_k = exp(x_k) 2^-sn = g exp(x_k - m), g = exp(m - sn ln 2)
 * in [0.7, 1.42], so that x_k - m is never rounded before its exponential; the ties with the
 * max counted apart by fl_take_ties4 (a test for four vectors). Against fl_rstats_t, the TwoSum
 * correction (six vector operations) and the two selects of the ties go, and the products
 * e (x - m) fuse into their sum: about nine operations a vector fewer. The sums are divided by
 * g (sq by g^2) in double at the end, so the results mean what fl_rstats_t's mean; e_y is
 * returned as e'_y / g. ebuf (when not NULL) receives the e'_k unscaled and *gm the e' of the
 * max itself (the value its ties hold in ebuf): the per-class block takes p_c = e'_c / (gm s),
 * whose largest is gm / (gm s) <= 1 + 2^-52 (fl_score_pc.h's fixed point needs that bound).
 * moments (a constant at each call, as ebuf): 0 when no metric asked wants sq and dot (the
 * Brier score, the entropy, the temperature gap), which are then 0: their products and
 * conversions were a sixth of the pass (AVX-512, `metrics=["nll"]`: 0.50 -> 0.42 ns an
 * element from L3). */
FL_ALWAYS_INLINE double fl_rstats_shift_t(const void *x, int64_t n, float m, int64_t y, double *n_eq, double *s,
                                          double *sq, double *dot, float *ebuf, int moments, double *gm,
                                          fl_ahead ahead, int32_t dt)
{
    float sn = fl_rintf(m * FL_LOG2E_F), ms[FL_W];
    flv vm = flv_set1(m), vsn = flv_set1(sn);
    /* the scale and the max's own e' first: out of the row's critical path (at its end, the
     * scalar exponential's latency was a few % of the call) */
    double g = fl_exp_d((double)m - (double)sn * 0.69314718055994530942);
    flv_store(ms, flv_exp_shift_normal(vm, vsn));
    fl_dacc s1 = fl_dacc_zero(), s2 = s1, d = s1;
    int64_t k = 0, ties = 0;
    for (; k + 4 * FL_W <= n; k += 4 * FL_W) {
        fl_ahead_touch_l2(ahead, k, 4 * FL_W);
        flv xv[4], e[4];
        FL_UNROLL(4)
        for (int j = 0; j < 4; j++) {
            xv[j] = fl_xload(x, k + j * FL_W, dt);
            e[j] = flv_exp_shift_normal(xv[j], vsn);
        }
        if (ebuf) {
            FL_UNROLL(4)
            for (int j = 0; j < 4; j++) flv_store(ebuf + k + j * FL_W, e[j]);
        }
        fl_take_ties4(xv, vm, e, &ties);
        fl_rstats_shift_step(xv, e, vm, moments, &s1, &s2, &d);
    }
    if (k < n) {
        /* the last vectors as one step, the missing ones and the partial one's fill lanes at m
         * (ties, then not counted: e = 0 and x - m = 0 there) */
        flv xv[4], e[4];
        int64_t fill = 0;
        for (int j = 0; j < 4; j++) {
            int64_t at = k + j * FL_W, len = n - at < FL_W ? (n - at > 0 ? n - at : 0) : FL_W;
            xv[j] = len ? fl_xload_part(x, at, len, m, dt) : vm;
            e[j] = flv_exp_shift_normal(xv[j], vsn);
            if (ebuf && len) flv_store_part(ebuf + at, e[j], len);
            fill += FL_W - len;
        }
        fl_take_ties4(xv, vm, e, &ties);
        ties -= fill;
        fl_rstats_shift_step(xv, e, vm, moments, &s1, &s2, &d);
    }
    /* e'_y again (the same value as in the sums), unless the buffer holds it */
    float ey;
    if (ebuf) {
        ey = ebuf[y];
    } else {
        float lanes[FL_W];
        int64_t k0 = y - y % FL_W, len = n - k0 < FL_W ? n - k0 : FL_W;
        flv_store(lanes, flv_exp_shift_normal(fl_xload_part(x, k0, len, m, dt), vsn));
        ey = lanes[y - k0];
    }
    *gm = (double)ms[0];
    *n_eq = (double)ties;
    *s = fl_dacc_sum(s1) / g;
    *sq = fl_dacc_sum(s2) / (g * g);
    *dot = fl_dacc_sum(d) / g;
    return (double)ey / g;
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

/* The softmax statistics of a row from its max m (finite): n_eq entries equal to m (e = 1),
 * the sums s and sq of e_k = exp((x_k - m)/T) and of e_k^2 over the others, dot = sum e_k
 * (x_k - m), e_y and x_y - m. With the max's ones apart, a peaked row keeps its rest: the log
 * of the whole sum is log1p(rest) for one max, and 1 - p_y and the Brier terms of the other
 * classes come without cancellation when the target is a max. */
static void fl_softmax_stats(double n_eq, double s, double sq, double dot, double ey, double xy_m, double t,
                             fl_row_stats *st)
{
    double total = n_eq + s;
    double ls = n_eq == 1.0 ? fl_log1p_d(s) : fl_log_d(total);
    double zy = xy_m / t;              /* z_y - max z */
    double mean_z = dot / t / total;   /* E_p[z] - max z */
    int top = xy_m == 0.0;             /* the target is a max: e_y = 1, one of the n_eq */
    double others = top ? (n_eq - 1.0) + s : total - ey;                /* sum of e over k != y */
    double others_sq = top ? (n_eq - 1.0) + sq : (n_eq + sq) - ey * ey;  /* and of e^2 */
    double rest = others_sq / (total * total);
    double q = others / total;         /* 1 - p_y, without cancelling */
    st->nll = ls - zy;
    st->conf = 1.0 / total;            /* the max logit has e = 1 */
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
    st->pp = z > 0.0;
    st->ap = y != 0;
    st->tp = st->pp * st->ap;
    st->p = z > 0.0 ? big : small;              /* sigmoid(z); NaN stays NaN */
}

#endif
