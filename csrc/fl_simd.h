/* fl_simd.h: the one vector vocabulary every kernel is written in.
 *
 * Kernels are written once against the names below and compiled once per instruction set
 * (CMake compiles each kernel source with -DFL_ISA=... and that ISA's flags). A build for a
 * given FL_ISA sees exactly one implementation:
 *
 *   FL_ISA_SCALAR  (0)  simd/scalar.h   one lane, portable C11: the twin every path is tested against
 *   FL_ISA_AVX2    (1)  simd/avx2.h     8 lanes, AVX2 + FMA + F16C
 *   FL_ISA_AVX512  (2)  simd/avx512.h   16 lanes, AVX-512 F/BW/DQ/VL
 *   FL_ISA_NEON    (3)  simd/neon.h     4 lanes, AArch64 Advanced SIMD
 *
 * Interface (all static inline; "flv" holds FL_W float32 lanes):
 *   flv  flv_set1(float)                 flv  flv_load(const float*)      void flv_store(float*, flv)
 *   void flv_stream(float*, flv)         non-temporal store (p aligned to FL_W*4 bytes; a plain store
 *                                        where the ISA has none); fl_stream_fence() after a run of them
 *   flv  flv_load_part(const float*, int64_t n, float fill)   first n lanes (0 <= n < FL_W), rest = fill
 *   void flv_store_part(float*, flv, int64_t n)               writes only the first n lanes
 *   flv  flv_add/sub/mul/div/max/min(flv, flv)   flv flv_fma(a, b, c) = a*b + c (fused where the ISA has FMA)
 *   flv  flv_mul_tiny(flv a, flv b)      a * b (the same bits as flv_mul) for a >= 0, b > 0, where lanes of a or
 *                                        of the product may be subnormal: x86 builds compute those vectors
 *                                        without the microcode assist (~100 cycles) a plain product takes.
 *                                        The test sums exponent fields: a subnormal a is found only with b < 2
 *                                        (the scale factors it serves); beyond, the right bits with the assist.
 *                                        Where fl_subnormals_plain() (AMD), such vectors take flv_mul too
 *   flv  flv_mul1p(flv p, flv e)         p * (1 + e) as flv_fma(p, e, p) (the same bits) for p >= 0 and
 *                                        |e| < 2^-10, subnormal p without the assist, as flv_mul_tiny
 *   flv  flv_max_ord/min_ord(flv, flv)   max/min for operands that are not NaN (one instruction)
 *   flv  flv_abs(flv)   flv flv_neg(flv)
 *   flv  flv_zero_nan(flv a)             NaN lanes become +0, others unchanged
 *   flv  flv_nan_mark(flv acc, flv a, flv b)   acc, made NaN in the lanes where a or b is NaN: a
 *                                        sticky flag from flv_set1(0), tested by flv_hmax(acc) being NaN
 *   flv  flv_sel_neg(flv c, flv a, flv b)   per lane: c < 0 ? a : b (NaN c gives b)
 *   flv  flv_zero_ge(flv a, flv b, flv e)   per lane: a >= b ? 0 : e (NaN a or b gives e)
 *   int  flv_all_finite(flv)             1 when no lane is inf or NaN
 *   int  flv_any_ge(flv a, flv b)        1 when some lane has a >= b (NaN lanes: no)
 *   unsigned flv_mask_ge(flv a, flv b)   bit j set when lane j has a >= b (NaN lanes: no)
 *   float flv_hmax(flv)  (NaN lanes propagate)    double flv_hsum_d(flv) (lanes widened, summed in double)
 *   fl_dacc fl_dacc_zero(void), fl_dacc fl_dacc_add(fl_dacc, flv), double fl_dacc_sum(fl_dacc):
 *                                        FL_W float64 lanes accumulating float32 vectors
 *   void fl_dacc_store(double *p, fl_dacc)   its FL_W lanes, in lane order
 *   fl_dacc fl_dacc_add_prod(fl_dacc a, flv p, flv x, double m)   a + (double)p * max((double)x - m, -1e300)
 *                                        lane by lane (the entropy's dot product; no fused multiply-add)
 *   flv  flv_gather(const float *p, const int32_t *idx)   lane j = p[idx[j]]  (idx: FL_W entries)
 *   void flv_load_deint2(const float *p, flv *even, flv *odd)   the 2*FL_W floats at p: lane j of even
 *                                        = p[2j], of odd = p[2j+1] (rows of two classes into the lanes)
 *   int  flv_store_compress(float *p, flv v, unsigned mask)   the lanes j of v with bit j of mask set,
 *                                        in lane order, to p[0], p[1], ...; returns their number and
 *                                        writes nothing past them (a queue's rows without a loop a lane)
 *   void flv_store_int2(float *p, flv even, flv odd)   the inverse: p[2j] = lane j of even, p[2j+1]
 *                                        = lane j of odd (a tile of two classes back to its rows)
 *   int  flv_tile_from_rows(const float *p, int64_t c, float *t)   FL_W contiguous rows of c classes
 *                                        at p (c * FL_W floats, nothing past them read) into the tile t:
 *                                        t[k * FL_W + j] = p[j * c + k]; 0 (nothing done) where the path
 *                                        has no such shuffles for c (AVX-512: 3 <= c <= 8; AVX2, NEON: 3, 4)
 *   int  flv_tile_to_rows(float *p, int64_t c, const float *t)   the inverse (nothing past the rows written)
 *   flv  flv_pow2_floor(flv a)           2^floor(log2 |a|) for normal a (its exponent field alone),
 *                                        0 for 0 and subnormals: ulp(a) = 2^-23 * flv_pow2_floor(a)
 *   flv  flv_exp(flv)    expf, <= 2 ULP, exp(-inf) = 0, exp(+inf) = inf, nan -> nan
 *   flv  flv_exp_neg(flv)   flv_exp for x <= 0 or nan only (shifts by a max), cheaper where the ISA allows
 *   flv  flv_exp_neg_fast(flv)   flv_exp_neg by a shorter polynomial, <= 2 ULP (not 1): the losses' sums
 *   flv  flv_exp_neg_normal(flv), flv_exp_neg_fast_normal(flv)   flv_exp_neg and flv_exp_neg_fast with the
 *                                        same values, for x in [FL_EXPF_NORMAL_LO, 0] only: no clamp, no
 *                                        subnormal results (cheaper)
 *   flv  flv_exp_shift_normal(flv x, flv sn), flv_exp_fast_shift_normal(flv x, flv sn)
 *                                        exp(x) * 2^-sn for integer-valued sn (a row's shift in
 *                                        place of its max, see fl_expf_shift_s): |x| <= 150 and a
 *                                        normal result, x*log2(e) - sn in [-125, 1]; the
 *                                        polynomials of flv_exp_neg_normal and _fast_normal
 *   flv  flv_exp_neg_fast_masked(flv d, flv *gap)   flv_exp_neg_fast for d <= 0 (not nan) whose lanes
 *                                        are in the normal range or below the gap (FL_EXPF_GAP_MID,
 *                                        _HALF; there 0): the same bits, cheaper. *gap = min(*gap,
 *                                        |d - FL_EXPF_GAP_MID|), at most FL_EXPF_GAP_HALF once a lane
 *                                        was in the gap (its result is then unspecified)
 *   flv  flv_exp_shift_masked(flv x, flv sn, flv lo, flv mid, flv *gap), flv_exp_fast_shift_masked(...)
 *                                        flv_exp_shift_normal and _fast_ for a row of max m with masked
 *                                        lanes: lo = m + FL_EXPF_NORMAL_LO, mid = m + FL_EXPF_GAP_MID (in
 *                                        float32); lanes x >= lo as flv_exp_shift_normal, lanes below the
 *                                        gap 0, *gap = min(*gap, |x - mid|) as above
 *   flv  flv_log(flv)    logf  (log(0) = -inf, log(<0) = nan)
 *   flv  flv_log1p(flv)  log1pf
 *   flv  flv_load_f16(const uint16_t*) / flv_load_bf16(const uint16_t*)      widen FL_W halves
 *   void flv_store_f16(uint16_t*, flv) / flv_store_bf16(uint16_t*, flv)      narrow, round to nearest even
 *   void flv_stream_f16(uint16_t*, flv) / flv_stream_bf16(uint16_t*, flv)    the same with a non-temporal
 *                                        store (p aligned to FL_W*2 bytes; plain where the ISA has none)
 *   flv  flv_load_f16_arith(const uint16_t*)   flv_load_f16 where a signalling NaN may come out quiet:
 *                                        for arithmetic, to which any NaN is NaN (one instruction fewer)
 *   "flk" holds FL_KW (2*FL_W; 1 in scalar) int16 order keys of float16/bfloat16 bit patterns:
 *   flk  flk_load(const uint16_t*)       FL_KW halves' bits   flk flk_set1(int)   flk flk_max(flk, flk) (signed)
 *   flk  flk_mag(flk h)                  h & 0x7fff (the magnitude bits: NaN when above inf's)
 *   flk  flk_key(flk h, flk mag)         mag, negated where h's sign bit is set: ordered as the values
 *                                        are (-0 and +0 both 0) for any h that is not NaN
 *   int  flk_hmax(flk)                   the largest lane
 *   int  flk_any_gt(flk a, flk b)        non-zero when a lane of a is above b's (signed)
 *
 * float64 kernels use the scalar double functions of fl_scalar_math.h (fl_exp_d, fl_log1p_d, ...),
 * written branch-free so that each ISA build's compiler can vectorise their loops. The float32
 * lane functions follow the same algorithms and coefficients as the scalar ones there.
 */
#ifndef FL_SIMD_H
#define FL_SIMD_H

#include <stdint.h>

#define FL_ISA_SCALAR 0
#define FL_ISA_AVX2 1
#define FL_ISA_AVX512 2
#define FL_ISA_NEON 3

#ifndef FL_ISA
#define FL_ISA FL_ISA_SCALAR
#endif

/* bit helpers on comparison masks, for the ISA implementations below and the kernels */
#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>
#endif

/* the index of the lowest set bit of v != 0 (a lane of a comparison mask) */
static inline int fl_ctz(unsigned v)
{
#if defined(_MSC_VER) && !defined(__clang__)
    unsigned long i;
    _BitScanForward(&i, v);
    return (int)i;
#else
    return __builtin_ctz(v);
#endif
}

/* the same for a 64-bit mask (the lanes of four vectors) */
static inline int fl_ctz64(uint64_t v)
{
#if defined(_MSC_VER) && !defined(__clang__)
    unsigned long i;
    _BitScanForward64(&i, v);
    return (int)i;
#else
    return __builtin_ctzll(v);
#endif
}

/* the number of set bits of a lane mask (one instruction in the AVX2 and AVX-512 builds, which
 * pass -mpopcnt) */
static inline int fl_popcount(unsigned v)
{
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_popcount(v);
#elif defined(_MSC_VER) && (defined(_M_X64) || defined(_M_IX86))
    return (int)__popcnt(v);
#else
    int n = 0;
    for (; v; v &= v - 1u) n++;
    return n;
#endif
}

/* 1: the x86 products of subnormal values by the plain instructions, else by their assist-free
 * forms (fl_dispatch.c); read by the primitives that take them, and once a span by the
 * sigmoids and the BCE (fl_sig_plain_lo) */
#include "fl_atomic.h"
extern fl_atomic_int fl_plain_subnormals;
static inline int fl_subnormals_plain(void) { return fl_atomic_load_flag(&fl_plain_subnormals) > 0; }

#if FL_ISA == FL_ISA_SCALAR
#define FL_ISA_SUFFIX scalar
#include "simd/scalar.h"
#elif FL_ISA == FL_ISA_AVX2
#define FL_ISA_SUFFIX avx2
#include "simd/avx2.h"
#elif FL_ISA == FL_ISA_AVX512
#define FL_ISA_SUFFIX avx512
#include "simd/avx512.h"
#elif FL_ISA == FL_ISA_NEON
#define FL_ISA_SUFFIX neon
#include "simd/neon.h"
#else
#error "unknown FL_ISA"
#endif

/* FL_UNROLL(n) before a loop of n independent vector chains: fully unrolled, the chains sit
 * side by side in the instruction stream and the out-of-order core overlaps their latencies. */
#if defined(__clang__)
#define FL_UNROLL_(x) _Pragma(#x)
#define FL_UNROLL(n) FL_UNROLL_(unroll n)
#elif defined(__GNUC__)
#define FL_UNROLL_(x) _Pragma(#x)
#define FL_UNROLL(n) FL_UNROLL_(GCC unroll n)
#else
#define FL_UNROLL(n)
#endif

/* FL_ALWAYS_INLINE: a kernel body instantiated per constant option set by its callers */
#if defined(__GNUC__) || defined(__clang__)
#define FL_ALWAYS_INLINE static inline __attribute__((always_inline))
#elif defined(_MSC_VER)
#define FL_ALWAYS_INLINE static __forceinline
#else
#define FL_ALWAYS_INLINE static inline
#endif

/* FL_NOINLINE: kept out of its callers (a cold path that would crowd a hot loop's code) */
#if defined(__GNUC__) || defined(__clang__)
#define FL_NOINLINE __attribute__((noinline))
#elif defined(_MSC_VER)
#define FL_NOINLINE __declspec(noinline)
#else
#define FL_NOINLINE
#endif

/* FL_PREFETCH(p): ask for the cache line at p ahead of its use (a hint; never faults);
 * FL_PREFETCH_L2(p) the same into the L2 cache only (x86 prefetcht1) */
#if defined(__GNUC__) || defined(__clang__)
#define FL_PREFETCH(p) __builtin_prefetch((const void *)(p), 0, 3)
#define FL_PREFETCH_L2(p) __builtin_prefetch((const void *)(p), 0, 2)
#else
#define FL_PREFETCH(p) ((void)(p))
#define FL_PREFETCH_L2(p) ((void)(p))
#endif

/* FL_FN(softmax) -> fl_softmax_avx2 in the AVX2 build: each ISA build defines its own symbols. */
#define FL_CAT3_(a, b, c) a##b##c
#define FL_CAT3(a, b, c) FL_CAT3_(a, b, c)
#define FL_FN(name) FL_CAT3(fl_##name, _, FL_ISA_SUFFIX)
#define FL_STR_(a) #a
#define FL_CAT3_STR(a) FL_STR_(a)

#endif
