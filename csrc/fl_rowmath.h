/* fl_rowmath.h: the arithmetic on one contiguous row, float32 (SIMD lanes) and float64.
 *
 * Accuracy design (see API.md, "Accuracy"): x - m is carried with its rounding error e
 * (TwoSum), folded into the exponential as exp(s)*(1 + e), so exp(x_i - max) is right to about
 * one ULP even when x_i and the max differ in magnitude; sums of exponentials accumulate in
 * float64 (float32 rows) or in eight compensated float64 lanes (float64 rows).
 * Everything is compiled once per ISA, with FL_W lanes.
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


/* fl_rmax_t, and in *mn the row's min (NaN entries ignored: a NaN's max decides the row) */
FL_ALWAYS_INLINE float fl_rmaxmin_t(const void *x, int64_t n, float *mn, int32_t dt)
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

/* Ask for the first 4 KB after a row of the given bytes: the next row when rows are
 * contiguous, on a page the hardware prefetcher will not enter by itself, brought in while
 * this row is computed. (Memory that is not the next row is a wasted hint, never a fault.) */
static inline void fl_prefetch_next_row(const void *x, int64_t bytes)
{
    int64_t n = bytes < 4096 ? bytes : 4096;
    for (int64_t j = 0; j < n; j += 64) FL_PREFETCH((const char *)x + bytes + j);
}

/* elements before the first one aligned to a vector of esz-byte elements at p (at most n):
 * the plain-store head */
static inline int64_t fl_stream_head(const void *p, int64_t n, int64_t esz)
{
    int64_t h = (int64_t)(((uintptr_t)0 - (uintptr_t)p) % (uintptr_t)(FL_W * esz)) / esz;
    return h < n ? h : n;
}

/* An output row written late, with non-temporal stores, its writing spread over the next
 * row's passes so that the stream to memory overlaps that row's reads and exponentials instead
 * of following them (y == NULL: nothing pending). What is written, by kind:
 *   FL_PEND_SCALE   y_k = alpha * src_k                          softmax (src: exponentials)
 *   FL_PEND_SHIFT   y_k = ((double)src_k - m) - ls, rounded once  log_softmax (src: logits of dtype sdt)
 *   FL_PEND_CE      y_k = alpha*src_k - beta*w_k (w NULL: 1)     CE gradient (src: exponentials)
 * and y_t = gy for t >= 0 (the CE target), each computed in float32 and narrowed to the
 * output's dtype ydt (float32, float16 or bfloat16). The elements before the first
 * vector-aligned one (the head) and after the last whole vector (the tail) take plain stores.
 * next: the first element not yet written (0, or the head's end plus a multiple of FL_W). The
 * source rows must stay untouched until the row is drained. */
enum { FL_PEND_SCALE, FL_PEND_SHIFT, FL_PEND_CE };
typedef struct {
    void *y;
    const void *src; /* float32 but for FL_PEND_SHIFT */
    const float *w;
    int64_t c, next, t;
    int kind;
    float alpha, beta, gy;
    double m, ls;
    int32_t sdt; /* FL_PEND_SHIFT: the dtype of src */
    int32_t ydt; /* the dtype of y */
} fl_pend;

/* the n <= FL_W elements of the pending row at k, of a constant kind (and source dtype sdt
 * for FL_PEND_SHIFT) */
FL_ALWAYS_INLINE flv fl_pend_vec(const fl_pend *p, int64_t k, int64_t n, int kind, int32_t sdt)
{
    if (kind == FL_PEND_SHIFT) {
        /* lanes past n hold garbage, which the callers do not store */
        float v[FL_W];
        double m = p->m, ls = p->ls;
        flv_store(v, n == FL_W ? fl_xload(p->src, k, sdt) : fl_xload_part(p->src, k, n, 0.0f, sdt));
        for (int64_t j = 0; j < FL_W; j++) v[j] = (float)(((double)v[j] - m) - ls);
        return flv_load(v);
    }
    const float *s = (const float *)p->src + k;
    flv sv = n == FL_W ? flv_load(s) : flv_load_part(s, n, 0.0f);
    if (kind == FL_PEND_SCALE) return flv_mul(sv, flv_set1(p->alpha));
    flv wv = !p->w ? flv_set1(1.0f) : n == FL_W ? flv_load(p->w + k) : flv_load_part(p->w + k, n, 0.0f);
    return flv_fma(sv, flv_set1(p->alpha), flv_mul(flv_set1(-p->beta), wv));
}

/* write the pending row's elements [next, k1) (see fl_pend), y of dtype ydt */
FL_ALWAYS_INLINE void fl_pend_write(fl_pend *p, int64_t k1, int kind, int32_t sdt, int32_t ydt)
{
    void *y = p->y;
    int64_t c = p->c, t = p->t;
    int64_t s0 = fl_stream_head(y, c, (int64_t)fl_xsize(ydt)), s1 = s0 + (c - s0) / FL_W * FL_W; /* streamed */
    int64_t k = p->next;
    if (k == 0) {
        if (s0 > 0) fl_xstore_part(y, 0, fl_pend_vec(p, 0, s0, kind, sdt), s0, ydt);
        if (t >= 0 && t < s0) fl_xput(y, t, p->gy, ydt);
        k = s0;
    }
    for (; k + FL_W <= k1 && k < s1; k += FL_W) {
        flv v = fl_pend_vec(p, k, FL_W, kind, sdt);
        if ((uint64_t)(t - k) < FL_W) {
            /* patch the target lane before the line leaves: a later plain store to a
             * streamed line would read it back from memory */
            float tmp[FL_W];
            flv_store(tmp, v);
            tmp[t - k] = p->gy;
            v = flv_load(tmp);
        }
        fl_xstream(y, k, v, ydt);
    }
    if (k1 == c && s1 < c) {
        fl_xstore_part(y, s1, fl_pend_vec(p, s1, c - s1, kind, sdt), c - s1, ydt);
        if (t >= s1) fl_xput(y, t, p->gy, ydt);
    }
    p->next = k1 == c ? c : k;
}

FL_ALWAYS_INLINE void fl_pend_write_shift(fl_pend *p, int64_t k1, int32_t sdt)
{
    fl_x_dispatch(p->ydt, fl_pend_write, p, k1, FL_PEND_SHIFT, sdt);
}

/* write about n more elements of the pending row (all of it when n >= what is left) */
static inline void fl_pend_drain(fl_pend *p, int64_t n)
{
    if (!p || !p->y) return;
    int64_t k1 = (p->next == 0 ? fl_stream_head(p->y, p->c, (int64_t)fl_xsize(p->ydt)) : p->next) + n;
    if (k1 >= p->c) k1 = p->c;
    switch (p->kind) {
    case FL_PEND_SCALE: fl_x_dispatch(p->ydt, fl_pend_write, p, k1, FL_PEND_SCALE, FL_F32); break;
    case FL_PEND_SHIFT: fl_x_dispatch(p->sdt, fl_pend_write_shift, p, k1); break;
    default: fl_x_dispatch(p->ydt, fl_pend_write, p, k1, FL_PEND_CE, FL_F32); break;
    }
    if (p->next == p->c) p->y = NULL;
}

/* the whole row of p at once with plain stores: an output that is not streamed */
FL_ALWAYS_INLINE void fl_pend_plain_k(const fl_pend *p, int kind, int32_t sdt, int32_t ydt)
{
    int64_t k = 0, c = p->c;
    for (; k + FL_W <= c; k += FL_W) fl_xstore_part(p->y, k, fl_pend_vec(p, k, FL_W, kind, sdt), FL_W, ydt);
    if (k < c) fl_xstore_part(p->y, k, fl_pend_vec(p, k, c - k, kind, sdt), c - k, ydt);
    if (p->t >= 0) fl_xput(p->y, p->t, p->gy, ydt);
}

FL_ALWAYS_INLINE void fl_pend_plain_shift(const fl_pend *p, int32_t sdt)
{
    fl_x_dispatch(p->ydt, fl_pend_plain_k, p, FL_PEND_SHIFT, sdt);
}

static inline void fl_pend_write_plain(const fl_pend *p)
{
    switch (p->kind) {
    case FL_PEND_SCALE: fl_x_dispatch(p->ydt, fl_pend_plain_k, p, FL_PEND_SCALE, FL_F32); break;
    case FL_PEND_SHIFT: fl_x_dispatch(p->sdt, fl_pend_plain_shift, p); break;
    default: fl_x_dispatch(p->ydt, fl_pend_plain_k, p, FL_PEND_CE, FL_F32); break;
    }
}

/* Elements of a pending row written per step of the next row's sum: as many as the step
 * sums, so the non-temporal stores are spread evenly among the exponentials. In bursts of 4 KB
 * they stalled the core on the write-combining buffers instead (log_softmax 4096x32000: a
 * third of the time in the writing). */
#define FL_PEND_STEP (4 * FL_W)

/* Memory to bring in while a row is summed (n bytes at p, esz bytes for each element the sum
 * walks; n = 0: none) and a pending row to write meanwhile (pend NULL: none). The sum loops ask
 * for both one step at a time, spread over the exponentials: a burst of prefetches ahead of the
 * loop stalls on the fill buffers (a fifth of the CE gradient's time). */
typedef struct { const char *p; int64_t n, esz; fl_pend *pend; } fl_ahead;

static inline fl_ahead fl_ahead_none(void) { fl_ahead a = {NULL, 0, 4, NULL}; return a; }

/* Rows of c elements of esz bytes each, row following row: the next row after row, all of it
 * up to 1 MB (memory that is not the next row is a wasted hint, never a fault). Summing a row
 * from L2 while the next one streams in overlaps the reads with the exponentials (logsumexp
 * 4096x32000 112 -> 82 ms); the sum walks a row of the same dtype (esz) or, for a gathered
 * row, its float32 copy, so the fetch keeps pace with it element by element. */
#define FL_AHEAD_MAX ((int64_t)1 << 20)
static inline fl_ahead fl_ahead_next_row(const char *row, int64_t c, int64_t esz, fl_pend *pend)
{
    int64_t n = c * esz;
    fl_ahead a = {row + n, n < FL_AHEAD_MAX ? n : FL_AHEAD_MAX, esz, pend};
    return a;
}

/* the steps [k, k + len) of the sum, in elements */
static inline void fl_ahead_touch(fl_ahead a, int64_t k, int64_t len)
{
    for (int64_t j = k * a.esz; j < (k + len) * a.esz && j < a.n; j += 64) FL_PREFETCH(a.p + j);
    if (a.pend && a.pend->y && k % FL_PEND_STEP == 0) fl_pend_drain(a.pend, FL_PEND_STEP);
}

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

/* sum over k of p_k * (x_k - m) with p_k = exp(x_k - m); -inf logits add 0 */
FL_ALWAYS_INLINE double fl_rdot_shift_t(const void *x, const float *p, int64_t n, double m, int32_t dt)
{
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t k = 0;
    for (; k + 8 <= n; k += 8)
        for (int j = 0; j < 8; j++) acc[j] += (double)p[k + j] * fl_clamp_shift_d((double)fl_xget(x, k + j, dt) - m);
    for (; k < n; k++) acc[0] += (double)p[k] * fl_clamp_shift_d((double)fl_xget(x, k, dt) - m);
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/* log1p(t) for 0 <= t <= 1 (or nan), the t = exp(-|x|) of softplus and log-sigmoid: fl_logf_core_s's
 * reduction and polynomial without its special cases, and without rounding 1 + t. Where
 * 1 + t < sqrt(2) the reduced argument f = m - 1 is t itself; above, m = (1 + t)/2 and
 * f = (t - 1)/2 = fma(t, 1/2, -1/2), exact for t in [sqrt(2) - 1, 1] (a multiple of ulp(t)/2
 * below 2^-1). So no correction term, and no division, is needed. */
static inline flv fl_vlog1p_unit(flv t)
{
    flv half = flv_set1(0.5f), zero = flv_set1(0.0f);
    flv d = flv_sub(t, flv_set1(2.0f * FL_SQRTH_F - 1.0f));
    flv f = flv_sel_neg(d, t, flv_fma(t, half, flv_neg(half)));
    flv fe = flv_sel_neg(d, zero, flv_set1(1.0f));
    flv z = flv_mul(f, f);
    flv p = flv_set1(FL_LOGF_P8);
    p = flv_fma(p, f, flv_set1(FL_LOGF_P7));
    p = flv_fma(p, f, flv_set1(FL_LOGF_P6));
    p = flv_fma(p, f, flv_set1(FL_LOGF_P5));
    p = flv_fma(p, f, flv_set1(FL_LOGF_P4));
    p = flv_fma(p, f, flv_set1(FL_LOGF_P3));
    p = flv_fma(p, f, flv_set1(FL_LOGF_P2));
    p = flv_fma(p, f, flv_set1(FL_LOGF_P1));
    p = flv_fma(p, f, flv_set1(FL_LOGF_P0));
    flv y = flv_fma(fe, flv_set1(FL_LN2_LO_F), flv_mul(flv_mul(p, f), z));
    y = flv_fma(flv_neg(half), z, y);
    y = flv_add(f, y);
    return flv_fma(fe, flv_set1(FL_LN2_HI_F), y);
}

/* exp(-|x|), in (0, 1] (nan for nan) */
static inline flv fl_vexp_mabs(flv x) { return flv_exp_neg(flv_neg(flv_abs(x))); }

/* sigmoid and log-sigmoid, elementwise, stable for any |x| */
static inline flv fl_vsigmoid(flv x)
{
    flv t = fl_vexp_mabs(x);
    flv r = flv_div(flv_set1(1.0f), flv_add(flv_set1(1.0f), t));
    return flv_sel_neg(x, flv_mul(t, r), r);           /* x < 0: t/(1+t) */
}

static inline flv fl_vlog_sigmoid(flv x)
{
    /* log sigmoid(x) = min(x, 0) - log1p(exp(-|x|)) */
    return flv_sub(flv_min(x, flv_set1(0.0f)), fl_vlog1p_unit(fl_vexp_mabs(x)));
}

/* ---------- small C: FL_W rows in the lanes ----------
 *
 * With few classes a row is shorter than a vector, and per-row overhead dominates. A tile
 * puts FL_W rows in the lanes instead: vector k of the tile holds class k of every row, so
 * max, exponentials and sums run lane-wise, one row per lane, with the same operations in the
 * same order as the row functions above apply to one row. Tile vectors live in an L1 scratch
 * of c * FL_W floats (xt[k * FL_W + j] = class k of row j). */
#define FL_LANES_MAX_C 64

/* Where a tile's rows are: row j at base + j*rs, its class k at + k*cs. rs == 1: a class of
 * the tile is one unit-stride load (class axis not last). Otherwise a gather with gidx[j] =
 * j*rs from base + k*cs (lanes at or past nr repeat row 0). nr <= FL_W rows; lanes past nr of
 * a unit-stride load hold 0. */
static inline void fl_tile_load(const float *base, int64_t rs, int64_t cs, int64_t c, int64_t nr,
                                const int32_t *gidx, float *xt)
{
    /* contiguous rows: the next tile follows this one; have it on its way to L1 now, or the
     * gathers of the next tile each wait on memory (a prefetch past the data is harmless) */
    if (cs == 1 && rs == c)
        for (int64_t off = 0; off < FL_W * c; off += 64 / (int64_t)sizeof(float)) FL_PREFETCH(base + FL_W * c + off);
    for (int64_t k = 0; k < c; k++) {
        flv v;
        if (rs == 1) v = nr == FL_W ? flv_load(base + k * cs) : flv_load_part(base + k * cs, nr, 0.0f);
        else v = flv_gather(base + k * cs, gidx);
        flv_store(xt + k * FL_W, v);
    }
}

/* The inverse of fl_tile_load for an output tile t. Rows contiguous (cs == 1, rs == c) with
 * oidx[p] = (p % c) * FL_W + p / c for p < c * FL_W: the tile's c * nr output floats are
 * written as vectors gathered from t; other layouts element by element. */
static inline void fl_tile_store(float *base, int64_t rs, int64_t cs, int64_t c, int64_t nr, const int32_t *oidx,
                                 const float *t)
{
    if (rs == 1) {
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
    for (int64_t j = 0; j < FL_W; j++) gidx[j] = (int32_t)(j * rs);
    for (int64_t p = 0; p < c * FL_W; p++) oidx[p] = (int32_t)((p % c) * FL_W + p / c);
}

/* Can rows of c classes with row stride rs (elements) be tiled? Any class stride can. */
static inline int fl_tile_layout_ok(int64_t rs, int64_t c)
{
    /* any strides: lanes load with unit stride or gather with int32 offsets j * rs, so every
     * layout of the same values takes the same arithmetic */
    int64_t lim = ((int64_t)1 << 31) / FL_W;
    return c >= 1 && c <= FL_LANES_MAX_C && rs > -lim && rs < lim;
}

/* per-lane max of a tile */
static inline flv fl_tile_max(const float *xt, int64_t c)
{
    flv m = flv_load(xt);
    for (int64_t k = 1; k < c; k++) m = flv_max(flv_load(xt + k * FL_W), m);
    return m;
}


/* ---------- float64 rows ---------- */

static inline double fl_rmax_f64(const double *x, int64_t n)
{
    double m = -INFINITY;
    int nan = 0;
    for (int64_t k = 0; k < n; k++) {
        m = x[k] > m ? x[k] : m;
        nan |= x[k] != x[k];
    }
    return nan ? NAN : m;
}

static inline double fl_exp_sub_d(double x, double m)
{
    double s = x - m;
    double bv = s - x;
    double e = (x - (s - bv)) + (-m - bv);
    e = e == e ? e : 0.0;
    return fl_exp_dx_d(s, e);
}

/* Compensated (Neumaier) accumulation in eight lanes, combined pairwise: the sums of double rows. */
typedef struct { double s[8], c[8]; } fl_csum8;

/* Neumaier's step: s += v, the rounding error exactly into c */
static inline void fl_neumaier(double *s, double *c, double v)
{
    double t = *s + v;
    *c += fabs(*s) >= fabs(v) ? (*s - t) + v : (v - t) + *s;
    *s = t;
}

static inline void fl_csum8_add(fl_csum8 *a, int j, double v) { fl_neumaier(&a->s[j], &a->c[j], v); }

/* The sixteen parts through one more compensated sum, rounded once: a pairwise sum of the
 * eight rounded lane totals was up to 1.5 ULP off, which took float64 softmax past its 4 ULP
 * bound (4.1 on a 615-class row, found by the fuzz harness). */
static inline double fl_csum8_total_plus(const fl_csum8 *a, double extra)
{
    double s = extra, c = 0.0;
    for (int j = 0; j < 8; j++) fl_neumaier(&s, &c, a->s[j]);
    for (int j = 0; j < 8; j++) c += a->c[j];
    return s + c;
}

static inline double fl_csum8_total(const fl_csum8 *a) { return fl_csum8_total_plus(a, 0.0); }

/* As fl_rsumexp_t, for double rows; *total (if not NULL) receives n_eq + rest rounded once. */
static inline double fl_rsumexp_f64(const double *x, int64_t n, double m, double *y, double *n_eq, double *total)
{
    fl_csum8 acc = {{0}, {0}};
    int64_t cnt = 0;
    for (int64_t k = 0; k < n; k++) {
        double xk = x[k]; /* read before y[k] is written: y may be x (in place) */
        double e = fl_exp_sub_d(xk, m);
        if (y) y[k] = e;
        cnt += xk >= m;
        fl_csum8_add(&acc, (int)(k & 7), xk < m ? e : 0.0);
    }
    *n_eq = (double)cnt;
    if (total) *total = fl_csum8_total_plus(&acc, *n_eq);
    return fl_csum8_total(&acc);
}

/* As fl_rsumexp_t with double-precision exponentials of the exact differences x_k - m: for
 * float32 rows whose logsumexp cancels (|m + log s| small against the float32 error of s). */
FL_ALWAYS_INLINE double fl_rsumexp_precise_t(const void *x, int64_t n, float m, double *n_eq, int32_t dt)
{
    fl_csum8 acc = {{0}, {0}};
    int64_t cnt = 0;
    for (int64_t k = 0; k < n; k++) {
        float xk = fl_xget(x, k, dt);
        cnt += xk >= m;
        fl_csum8_add(&acc, (int)(k & 7), xk < m ? fl_exp_d((double)xk - (double)m) : 0.0);
    }
    *n_eq = (double)cnt;
    return fl_csum8_total(&acc);
}

/* fl_rsumexp_precise_t for the FL_W rows of a tile at once (xt[k * FL_W + j], row maxima m),
 * lane by lane in double with one Neumaier-compensated sum per lane: the loops over the lanes
 * vectorise, where the row function would take the rows one by one. */
static inline void fl_tile_sumexp_precise(const float *xt, int64_t c, const float *m, double *n_eq, double *rest)
{
    double s[FL_W], comp[FL_W];
    for (int j = 0; j < FL_W; j++) s[j] = comp[j] = n_eq[j] = 0.0;
    for (int64_t k = 0; k < c; k++) {
        const float *xk = xt + k * FL_W;
        for (int j = 0; j < FL_W; j++) {
            double d = (double)xk[j] - (double)m[j];
            double v = d < 0.0 ? fl_exp_d(d) : 0.0;
            double t = s[j] + v;
            n_eq[j] += d < 0.0 ? 0.0 : 1.0;
            comp[j] += fabs(s[j]) >= fabs(v) ? (s[j] - t) + v : (v - t) + s[j];
            s[j] = t;
        }
    }
    for (int j = 0; j < FL_W; j++) rest[j] = s[j] + comp[j];
}

/* fl_rdot_shift_t for float64 rows, to the accuracy of the exponentials alone: the shift
 * x_k - m carried with its rounding error (TwoSum), each product with its own (Dekker's
 * product: no fma, which would be a libm call on the scalar path), all added
 * in compensated lanes. A plain sum of rounded products took the float64 entropy of a peaked
 * 200-class row to 4.16 ULP (found by the fuzz harness). Terms with p_k = 0 (-inf logits,
 * underflow) add nothing. */
static inline double fl_rdot_shift_f64(const double *x, const double *p, int64_t n, double m)
{
    fl_csum8 acc = {{0}, {0}};
    for (int64_t k = 0; k < n; k++) {
        if (!(p[k] > 0.0)) continue;
        fl_dd d = fl_dd_two_sum(x[k], -m), prod = fl_dd_two_prod(p[k], d.hi);
        fl_csum8_add(&acc, (int)(k & 7), prod.hi);
        fl_csum8_add(&acc, (int)(k & 7), prod.lo + p[k] * d.lo);
    }
    return fl_csum8_total(&acc);
}

static inline double fl_sigmoid_d(double x)
{
    double t = fl_exp_d(-fabs(x));
    double r = 1.0 / (1.0 + t);
    return x < 0.0 ? t * r : r;
}

static inline double fl_log_sigmoid_d(double x)
{
    double t = fl_exp_d(-fabs(x));
    return (x < 0.0 ? x : 0.0) - fl_log1p_d(t);
}

#endif
