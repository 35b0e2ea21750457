/* fl_pend.h: memory traffic around a row computation: prefetching the rows to come and the
 * pending-row writer that streams an output row to memory while the next row is computed.
 *
 * A kernel that reads a row from DRAM and writes a row of the same size would otherwise stall
 * twice: on the reads of the next row (the hardware prefetcher does not cross into a new
 * page) and on the burst of stores at the end of each row. fl_ahead spreads prefetches of the
 * next row over the steps of the current row's sum; fl_pend spreads the previous row's
 * non-temporal stores over the same steps, so reads, stores and exponentials overlap.
 * Compiled once per ISA, with FL_W lanes. */
#ifndef FL_PEND_H
#define FL_PEND_H

#include <float.h>
#include <stdint.h>
#include "fl_simd.h"
#include "fl_rowio.h"

/* Ask for the first 4 KB after a row of the given bytes: the next row when rows are
 * contiguous, on a page the hardware prefetcher will not enter by itself, brought in while
 * this row is computed. (Memory that is not the next row is a wasted hint, never a fault.) */
static inline void fl_prefetch_next_row(const void *x, int64_t bytes)
{
    int64_t n = bytes < 4096 ? bytes : 4096;
    for (int64_t j = 0; j < n; j += 64) FL_PREFETCH((const char *)x + bytes + j);
}

/* The streamed part [s0, s1) of an output row; the rest takes plain stores. Streamed stores
 * are whole vectors, and no cache line is written partly by plain stores and partly by
 * non-temporal ones: such a line leaves its write-combining buffer half full and is read for
 * ownership. (AVX2, whose vector is half a line: softmax(out=) 8192 x 1000 into rows 16 bytes
 * off 32-byte alignment took 7.8 ms against 5.6 ms aligned, log_softmax 8.7 against 6.6.) So a
 * row that starts on a vector boundary is streamed from its start, one that does not takes
 * plain stores up to the next line boundary; likewise at its end. Contiguous rows agree at
 * their common line: one ends on a vector boundary exactly when the next starts on one. */
#define FL_LINE 64
/* The line rule where a vector of floats is less than a line (AVX2, NEON, scalar). On AVX-512
 * a float vector is a line; its half-precision rows keep the vector rule: the line rule's code
 * there (the halves' head and tail loops, the writers split) cost the float32 softmax 6-9%
 * through GCC's code layout, for 17% on half-precision outputs. */
#define FL_STREAM_LINES (FL_W * 4 < FL_LINE)

/* s0: the plain-store head of a row of n elements of esz bytes at p (esz-aligned) */
FL_ALWAYS_INLINE int64_t fl_stream_head(const void *p, int64_t n, int64_t esz)
{
    uintptr_t a = (uintptr_t)p, v = (uintptr_t)(FL_W * esz);
    int64_t h = !FL_STREAM_LINES || v >= FL_LINE ? (int64_t)((0 - a) % v) / esz /* the vector rule */
              : a % v == 0   ? 0
                             : (int64_t)((0 - a) % FL_LINE) / esz;
    return h < n ? h : n;
}

/* s1: where the plain-store tail of that row begins (s0 <= s1 <= n; s1 - s0 whole vectors) */
FL_ALWAYS_INLINE int64_t fl_stream_tail(const void *p, int64_t n, int64_t esz, int64_t s0)
{
    uintptr_t e = (uintptr_t)p + (uintptr_t)(n * esz);
    if (!FL_STREAM_LINES || FL_W * esz >= FL_LINE) return s0 + (n - s0) / FL_W * FL_W; /* the vector rule */
    if (e % (uintptr_t)(FL_W * esz) == 0) return n;
    int64_t s1 = n - (int64_t)(e % FL_LINE) / esz;
    return s1 > s0 ? s1 : s0;
}

/* An output row written late, with non-temporal stores, its writing spread over the next
 * row's passes so that the stream to memory overlaps that row's reads and exponentials instead
 * of following them (y == NULL: nothing pending). What is written, by kind:
 *   FL_PEND_SCALE   y_k = alpha * src_k                          softmax (src: exponentials)
 *   FL_PEND_SCALE_TINY  the same, for a row where src_k or y_k may be subnormal: flv_mul_tiny
 *                   (the same bits without x86's microcode assist, a test more a vector)
 *   FL_PEND_SHIFT   y_k = (src_k - m) - ls in float32 (fl_log_shift)  log_softmax (src: logits of dtype sdt)
 *   FL_PEND_CE      y_k = alpha*src_k - beta*w_k (w NULL: 1)     CE gradient (src: exponentials)
 *   FL_PEND_CE_TINY the same for beta = 0, w NULL and alpha > 0, where the fused form is alpha *
 *                   src_k rounded once: flv_mul_tiny (subnormal exponentials without the assist)
 *   FL_PEND_CE_FLOOR the same for w NULL, beta >= 2^-70 and alpha > 0 (label smoothing), the
 *                   src_k with alpha * src_k < 2^-100 taken as 0: that product is below a
 *                   quarter ULP of beta, so the fused form rounds to -beta anyway (the same
 *                   bits); the zero spares the FMA a subnormal operand or product (x86's assist:
 *                   a cut at FLT_MIN left products of 2^-126..2^-150 and half the assists' time)
 * and y_t = gy for t >= 0 (the CE target), each computed in float32 and narrowed to the
 * output's dtype ydt (float32, float16 or bfloat16). The elements before the streamed part
 * (the head) and after it (the tail) take plain stores (fl_stream_head, fl_stream_tail).
 * next: the first element not yet written (0, or the head's end plus a multiple of FL_W). The
 * source rows must stay untouched until the row is drained. */
enum { FL_PEND_SCALE, FL_PEND_SHIFT, FL_PEND_CE, FL_PEND_SCALE_TINY, FL_PEND_CE_TINY, FL_PEND_CE_FLOOR };
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

/* log_softmax's y = (x - m) - log S in float32, m the row's max and ls = log S (>= 0: S counts
 * the max) rounded to float32, in the rows (FL_PEND_SHIFT) and the tiles alike. Both terms are
 * <= 0, so nothing cancels: x - m, ls and the difference each round by at most half an ULP of
 * the result (no smaller than either term), within 1.5 ULP of (x - m) - log S in all. In
 * double and rounded once (0.5 ULP) it took two conversions each way a vector: log_softmax
 * 64 x 32000 1.08 -> 0.89 ms, bfloat16 4096 x 32000 90 -> 69 ms (AVX-512, AMD Zen 4). */
static inline flv fl_log_shift(flv x, flv m, flv ls) { return flv_sub(flv_sub(x, m), ls); }

/* the n <= FL_W elements of the pending row at k, of a constant kind (and source dtype sdt
 * for FL_PEND_SHIFT) */
FL_ALWAYS_INLINE flv fl_pend_vec(const fl_pend *p, int64_t k, int64_t n, int kind, int32_t sdt)
{
    if (kind == FL_PEND_SHIFT) {
        /* lanes past n hold garbage, which the callers do not store */
        flv x = n == FL_W ? fl_xload(p->src, k, sdt) : fl_xload_part(p->src, k, n, 0.0f, sdt);
        return fl_log_shift(x, flv_set1((float)p->m), flv_set1((float)p->ls));
    }
    const float *s = (const float *)p->src + k;
    flv sv = n == FL_W ? flv_load(s) : flv_load_part(s, n, 0.0f);
    if (kind == FL_PEND_SCALE) return flv_mul(sv, flv_set1(p->alpha));
    if (kind == FL_PEND_SCALE_TINY || kind == FL_PEND_CE_TINY) return flv_mul_tiny(sv, flv_set1(p->alpha));
    if (kind == FL_PEND_CE_FLOOR) /* a subtraction and a select: neither takes the assist */
        sv = flv_sel_neg(flv_sub(sv, flv_set1(0x1p-100f / p->alpha)), flv_set1(0.0f), sv);
    flv wv = !p->w ? flv_set1(1.0f) : n == FL_W ? flv_load(p->w + k) : flv_load_part(p->w + k, n, 0.0f);
    return flv_fma(sv, flv_set1(p->alpha), flv_mul(flv_set1(-p->beta), wv));
}

/* the pending row's elements [k0, k1) (the head or the tail: less than a line) with plain
 * stores, a vector at a time: out of line, twice a row at most. The row comes by value: the
 * address of the caller's local copy must not escape (fl_pend_write). */
static FL_NOINLINE void fl_pend_plain_run(fl_pend q, int64_t k0, int64_t k1, int kind, int32_t sdt, int32_t ydt)
{
    for (int64_t k = k0; k < k1; k += FL_W) {
        int64_t n = k1 - k < FL_W ? k1 - k : FL_W;
        fl_xstore_part(q.y, k, fl_pend_vec(&q, k, n, kind, sdt), n, ydt);
    }
}

/* the same, one partial store where a line is one vector */
FL_ALWAYS_INLINE void fl_pend_plain(const fl_pend *p, void *y, int64_t k0, int64_t k1, int kind, int32_t sdt,
                                    int32_t ydt)
{
    if (FL_STREAM_LINES && FL_LINE / (int64_t)fl_xsize(ydt) > FL_W) fl_pend_plain_run(*p, k0, k1, kind, sdt, ydt);
    else if (k1 > k0) fl_xstore_part(y, k0, fl_pend_vec(p, k0, k1 - k0, kind, sdt), k1 - k0, ydt);
}

/* write the pending row's elements [next, k1) (see fl_pend), y of dtype ydt. The row's fields
 * are read from a local copy: through p, every store to y (which may alias *p for all the
 * compiler knows) made the loop reload its source, factors and shift. */
FL_ALWAYS_INLINE void fl_pend_write(fl_pend *pp, int64_t k1, int kind, int32_t sdt, int32_t ydt)
{
    fl_pend q = *pp, *p = &q;
    void *y = p->y;
    int64_t c = p->c, t = p->t;
    int64_t esz = (int64_t)fl_xsize(ydt);
    int64_t s0 = fl_stream_head(y, c, esz), s1 = fl_stream_tail(y, c, esz, s0); /* streamed */
    int64_t k = p->next;
    if (k == 0) {
        fl_pend_plain(p, y, 0, s0, kind, sdt, ydt);
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
        fl_pend_plain(p, y, s1, c, kind, sdt, ydt);
        if (t >= s1) fl_xput(y, t, p->gy, ydt);
    }
    pp->next = k1 == c ? c : k;
}

FL_ALWAYS_INLINE void fl_pend_write_shift(fl_pend *p, int64_t k1, int32_t sdt)
{
    fl_x_dispatch(p->ydt, fl_pend_write, p, k1, FL_PEND_SHIFT, sdt);
}

FL_ALWAYS_INLINE void fl_pend_write_shift_f32(fl_pend *p, int64_t k1, int32_t sdt)
{
    fl_pend_write(p, k1, FL_PEND_SHIFT, sdt, FL_F32);
}

/* fl_pend_drain's writers, every kind and output dtype (fl_pend_drain_all), or with the line
 * rule float32 and half-precision outputs compiled apart: in one function GCC's inlining of
 * the halves' head and tail changed the float32 loops' code (AVX-512 cross-entropy gradient
 * 8192 x 1000: 4.0 -> 4.5 ms) */
static inline void fl_pend_drain_all(fl_pend *p, int64_t k1)
{
    switch (p->kind) {
    case FL_PEND_SCALE: fl_x_dispatch(p->ydt, fl_pend_write, p, k1, FL_PEND_SCALE, FL_F32); break;
    case FL_PEND_SCALE_TINY: fl_x_dispatch(p->ydt, fl_pend_write, p, k1, FL_PEND_SCALE_TINY, FL_F32); break;
    case FL_PEND_CE_TINY: fl_x_dispatch(p->ydt, fl_pend_write, p, k1, FL_PEND_CE_TINY, FL_F32); break;
    case FL_PEND_CE_FLOOR: fl_x_dispatch(p->ydt, fl_pend_write, p, k1, FL_PEND_CE_FLOOR, FL_F32); break;
    case FL_PEND_SHIFT: fl_x_dispatch(p->sdt, fl_pend_write_shift, p, k1); break;
    default: fl_x_dispatch(p->ydt, fl_pend_write, p, k1, FL_PEND_CE, FL_F32); break;
    }
}

static FL_NOINLINE void fl_pend_drain_half(fl_pend *p, int64_t k1) { fl_pend_drain_all(p, k1); }

static FL_NOINLINE void fl_pend_drain_f32(fl_pend *p, int64_t k1)
{
    switch (p->kind) {
    case FL_PEND_SCALE: fl_pend_write(p, k1, FL_PEND_SCALE, FL_F32, FL_F32); break;
    case FL_PEND_SCALE_TINY: fl_pend_write(p, k1, FL_PEND_SCALE_TINY, FL_F32, FL_F32); break;
    case FL_PEND_CE_TINY: fl_pend_write(p, k1, FL_PEND_CE_TINY, FL_F32, FL_F32); break;
    case FL_PEND_CE_FLOOR: fl_pend_write(p, k1, FL_PEND_CE_FLOOR, FL_F32, FL_F32); break;
    case FL_PEND_SHIFT: fl_x_dispatch(p->sdt, fl_pend_write_shift_f32, p, k1); break;
    default: fl_pend_write(p, k1, FL_PEND_CE, FL_F32, FL_F32); break;
    }
}

/* write about n more elements of the pending row (all of it when n >= what is left) */
#if FL_STREAM_LINES
FL_ALWAYS_INLINE void fl_pend_drain(fl_pend *p, int64_t n)
#else
static inline void fl_pend_drain(fl_pend *p, int64_t n)
#endif
{
    if (!p || !p->y) return;
    int64_t k1 = (p->next == 0 ? fl_stream_head(p->y, p->c, (int64_t)fl_xsize(p->ydt)) : p->next) + n;
    if (k1 >= p->c) k1 = p->c;
    if (!FL_STREAM_LINES) fl_pend_drain_all(p, k1);
    else if (p->ydt == FL_F32) fl_pend_drain_f32(p, k1);
    else fl_pend_drain_half(p, k1);
    if (p->next == p->c) p->y = NULL;
}

/* the whole row of p at once with plain stores: an output that is not streamed (fields read
 * from a local copy, as in fl_pend_write) */
FL_ALWAYS_INLINE void fl_pend_plain_k(const fl_pend *pp, int kind, int32_t sdt, int32_t ydt)
{
    fl_pend q = *pp;
    const fl_pend *p = &q;
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
    case FL_PEND_SCALE_TINY: fl_x_dispatch(p->ydt, fl_pend_plain_k, p, FL_PEND_SCALE_TINY, FL_F32); break;
    case FL_PEND_CE_TINY: fl_x_dispatch(p->ydt, fl_pend_plain_k, p, FL_PEND_CE_TINY, FL_F32); break;
    case FL_PEND_CE_FLOOR: fl_x_dispatch(p->ydt, fl_pend_plain_k, p, FL_PEND_CE_FLOOR, FL_F32); break;
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
FL_ALWAYS_INLINE void fl_ahead_touch(fl_ahead a, int64_t k, int64_t len)
{
    /* one bound test a step (a step's last lines may pass the end: a hint never faults); inlined,
     * so a caller's constant len and absent pending row cost nothing (as a call it was 40
     * instructions a step of the score kernel, AVX2, callgrind) */
    int64_t off = k * a.esz;
    if (off < a.n)
        for (int64_t j = 0; j < len * a.esz; j += 64) FL_PREFETCH(a.p + off + j);
    if (a.pend && a.pend->y && k % FL_PEND_STEP == 0) fl_pend_drain(a.pend, FL_PEND_STEP);
}

/* fl_ahead_touch into the L2 cache only, without a pending row: for the score kernel, whose
 * next row is read by a pass of few operations an element (max and rank) before its
 * exponentials. With prefetches into L1 its pass of exponentials stalled on them once it
 * needed fewer operations (perf, AVX-512, 100000 x 1000: 16% of the kernel's samples on the
 * prefetches, 0.59 -> 0.71 ns an element); into L2, 0.58 (and 0.72 on AVX2, as into L1). */
FL_ALWAYS_INLINE void fl_ahead_touch_l2(fl_ahead a, int64_t k, int64_t len)
{
    int64_t off = k * a.esz;
    if (off < a.n)
        for (int64_t j = 0; j < len * a.esz; j += 64) FL_PREFETCH_L2(a.p + off + j);
}

#endif
