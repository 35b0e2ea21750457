/* simd/avx512.h: the 16-lane AVX-512 (F/BW/DQ/VL) implementation of fl_simd.h.
 * Compiled only with -mavx512f -mavx512bw -mavx512dq -mavx512vl -mfma -mf16c (or MSVC /arch:AVX512).
 * exp/log/log1p mirror fl_scalar_math.h step by step (same reduction, same coefficients, the
 * Horner steps as fused multiply-adds), so lanes agree with the scalar twin to rounding of
 * FMA contraction. Partial loads/stores use masks: no memory beyond n lanes is touched. */
#ifndef FL_SIMD_AVX512_H
#define FL_SIMD_AVX512_H

#include <stdint.h>
#include <immintrin.h>
#include "../fl_scalar_math.h"
#include "../fl_half.h"

#if !defined(_MSC_VER) && !(defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512DQ__) && defined(__AVX512VL__))
#error "simd/avx512.h needs -mavx512f -mavx512bw -mavx512dq -mavx512vl"
#endif

#define FL_W 16
typedef __m512 flv;

static inline flv flv_set1(float a) { return _mm512_set1_ps(a); }
static inline flv flv_load(const float *p) { return _mm512_loadu_ps(p); }
static inline void flv_store(float *p, flv v) { _mm512_storeu_ps(p, v); }
/* non-temporal store: p must be aligned to FL_W * 4 bytes */
static inline void flv_stream(float *p, flv v) { _mm512_stream_ps(p, v); }
static inline void fl_stream_fence(void) { _mm_sfence(); }
static inline __mmask16 fl_avx512_mask_(int64_t n)
{
    n = n < 0 ? 0 : (n > FL_W ? FL_W : n);
    return (__mmask16)((1u << (unsigned)n) - 1u);
}
static inline flv flv_load_part(const float *p, int64_t n, float fill)
{
    return _mm512_mask_loadu_ps(_mm512_set1_ps(fill), fl_avx512_mask_(n), p);
}
static inline void flv_store_part(float *p, flv v, int64_t n) { _mm512_mask_storeu_ps(p, fl_avx512_mask_(n), v); }
static inline flv flv_add(flv a, flv b) { return _mm512_add_ps(a, b); }
static inline flv flv_sub(flv a, flv b) { return _mm512_sub_ps(a, b); }
static inline flv flv_mul(flv a, flv b) { return _mm512_mul_ps(a, b); }
static inline flv flv_div(flv a, flv b) { return _mm512_div_ps(a, b); }
/* (a != a || a > b) ? a : b, as scalar.h: vmaxps gives b when either is NaN, so put a back
 * where a is NaN. For +-0 vmaxps returns b, like the scalar expression. */
static inline flv flv_max(flv a, flv b)
{
    return _mm512_mask_mov_ps(_mm512_max_ps(a, b), _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q), a);
}
/* a > b ? a : b for operands that are not NaN: one instruction */
static inline flv flv_max_ord(flv a, flv b) { return _mm512_max_ps(a, b); }
static inline flv flv_min_ord(flv a, flv b) { return _mm512_min_ps(a, b); }
static inline flv flv_nan_mark(flv acc, flv a, flv b)
{
    return _mm512_mask_mov_ps(acc, _mm512_cmp_ps_mask(a, b, _CMP_UNORD_Q), _mm512_set1_ps(NAN));
}
static inline flv flv_min(flv a, flv b)
{
    return _mm512_mask_mov_ps(_mm512_min_ps(a, b), _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q), a);
}
static inline flv flv_fma(flv a, flv b, flv c) { return _mm512_fmadd_ps(a, b, c); }
static inline flv flv_abs(flv a)
{
    return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(a), _mm512_set1_epi32(0x7fffffff)));
}
static inline flv flv_neg(flv a)
{
    return _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(a), _mm512_set1_epi32((int)0x80000000u)));
}
static inline flv flv_zero_nan(flv a) { return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(a, a, _CMP_ORD_Q), a); }
static inline flv flv_sel_neg(flv c, flv a, flv b) { return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(c, _mm512_setzero_ps(), _CMP_LT_OQ), b, a); }
static inline flv flv_zero_ge(flv a, flv b, flv e) { return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(a, b, _CMP_NGE_UQ), e); }
static inline __m256 fl_avx512_max8_(__m256 a, __m256 b)
{
    return _mm256_blendv_ps(_mm256_max_ps(a, b), a, _mm256_cmp_ps(a, a, _CMP_UNORD_Q));
}
static inline __m128 fl_avx512_max4_(__m128 a, __m128 b)
{
    return _mm_blendv_ps(_mm_max_ps(a, b), a, _mm_cmp_ps(a, a, _CMP_UNORD_Q));
}
static inline int flv_any_ge(flv a, flv b) { return _mm512_cmp_ps_mask(a, b, _CMP_GE_OQ) != 0; }
static inline unsigned flv_mask_ge(flv a, flv b) { return (unsigned)_mm512_cmp_ps_mask(a, b, _CMP_GE_OQ); }
static inline int flv_all_finite(flv a)
{
    return _mm512_cmp_ps_mask(flv_abs(a), _mm512_set1_ps(INFINITY), _CMP_LT_OQ) == 0xffff;
}
static inline float flv_hmax(flv a)
{
    __m256 m8 = fl_avx512_max8_(_mm512_castps512_ps256(a),
                                _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));
    __m128 m4 = fl_avx512_max4_(_mm256_castps256_ps128(m8), _mm256_extractf128_ps(m8, 1));
    m4 = fl_avx512_max4_(m4, _mm_movehl_ps(m4, m4));
    m4 = fl_avx512_max4_(m4, _mm_shuffle_ps(m4, m4, 0x55));
    return _mm_cvtss_f32(m4);
}
static inline double flv_hsum_d(flv a)
{
    __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(a));
    __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));
    __m512d s8 = _mm512_add_pd(lo, hi);
    __m256d s4 = _mm256_add_pd(_mm512_castpd512_pd256(s8), _mm512_extractf64x4_pd(s8, 1));
    __m128d s2 = _mm_add_pd(_mm256_castpd256_pd128(s4), _mm256_extractf128_pd(s4, 1));
    s2 = _mm_add_sd(s2, _mm_unpackhi_pd(s2, s2));
    return _mm_cvtsd_f64(s2);
}

/* FL_W float64 lanes accumulating float32 vectors: the row sums of exponentials */
typedef struct { __m512d lo, hi; } fl_dacc;
static inline fl_dacc fl_dacc_zero(void) { fl_dacc a = {_mm512_setzero_pd(), _mm512_setzero_pd()}; return a; }
static inline fl_dacc fl_dacc_add(fl_dacc a, flv v)
{
    a.lo = _mm512_add_pd(a.lo, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
    a.hi = _mm512_add_pd(a.hi, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
    return a;
}
static inline double fl_dacc_sum(fl_dacc a) { return _mm512_reduce_add_pd(_mm512_add_pd(a.lo, a.hi)); }
/* a + (double)p * max((double)x - m, -1e300), lane by lane, each step rounded once */
static inline __m512d fl_avx512_prod_(__m256 p, __m256 x, __m512d m)
{
    __m512d d = _mm512_max_pd(_mm512_sub_pd(_mm512_cvtps_pd(x), m), _mm512_set1_pd(-1e300));
    return _mm512_mul_pd(_mm512_cvtps_pd(p), d);
}
static inline __m256 fl_avx512_hi256_(flv v) { return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)); }
static inline fl_dacc fl_dacc_add_prod(fl_dacc a, flv p, flv x, double m)
{
    __m512d vm = _mm512_set1_pd(m);
    a.lo = _mm512_add_pd(a.lo, fl_avx512_prod_(_mm512_castps512_ps256(p), _mm512_castps512_ps256(x), vm));
    a.hi = _mm512_add_pd(a.hi, fl_avx512_prod_(fl_avx512_hi256_(p), fl_avx512_hi256_(x), vm));
    return a;
}
static inline void fl_dacc_store(double *p, fl_dacc a) { _mm512_storeu_pd(p, a.lo); _mm512_storeu_pd(p + 8, a.hi); }
static inline flv flv_gather(const float *p, const int32_t *idx)
{
    return _mm512_i32gather_ps(_mm512_loadu_si512((const void *)idx), p, 4);
}
static inline int flv_store_compress(float *p, flv v, unsigned mask)
{
    __mmask16 k = (__mmask16)mask;
    int n = fl_popcount(mask & 0xffffu);
    /* compressed in a register and stored under a mask: vcompressps to memory is microcoded
     * on some cores (Zen 4) */
    _mm512_mask_storeu_ps(p, fl_avx512_mask_(n), _mm512_maskz_compress_ps(k, v));
    return n;
}
/* r[j] lane k -> r[k] lane j (16 x 16): pairs of floats, then of doubles, interleaved within
 * the 128-bit quarters, then the quarters exchanged in two steps: 64 shuffles, where 16
 * gathers of 16 lanes cost more on Zen 4 (the few-class tiles, fl_tile.h) */
static inline void flv_transpose(flv r[16])
{
    flv t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4)
        for (int h = 0; h < 2; h++) {
            __m512d a = _mm512_castps_pd(t[i + h]), b = _mm512_castps_pd(t[i + h + 2]);
            r[i + 2 * h] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
            r[i + 2 * h + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
        }
    /* r[4q + m], quarter c: class 4c + m of rows 4q .. 4q + 3 */
    for (int m = 0; m < 4; m++) {
        flv ab0 = _mm512_shuffle_f32x4(r[m], r[4 + m], 0x88), ab1 = _mm512_shuffle_f32x4(r[m], r[4 + m], 0xdd);
        flv cd0 = _mm512_shuffle_f32x4(r[8 + m], r[12 + m], 0x88), cd1 = _mm512_shuffle_f32x4(r[8 + m], r[12 + m], 0xdd);
        t[m] = _mm512_shuffle_f32x4(ab0, cd0, 0x88);
        t[4 + m] = _mm512_shuffle_f32x4(ab1, cd1, 0x88);
        t[8 + m] = _mm512_shuffle_f32x4(ab0, cd0, 0xdd);
        t[12 + m] = _mm512_shuffle_f32x4(ab1, cd1, 0xdd);
    }
    for (int i = 0; i < 16; i++) r[i] = t[i];
}
/* Few-class tiles without gathers (fl_tile.h): FL_W = 16 contiguous rows of c = 3..8 classes
 * (16c floats at p) and the tile whose class k is the vector at t + 16k, lane j its row j.
 * Rows are expand-loaded into fixed slots, reading the tile's 16c floats and nothing past them:
 * four rows a vector, one a 128-bit quarter (c <= 4), or two, one a 256-bit half (c <= 8);
 * then the slots are transposed within the quarters or halves, the last step a two-source
 * permutation that also puts the lanes in row order. Stores run the same network backwards and
 * compress each vector's slots to its rows' 4c or 2c floats. 11-12 shuffles for 3-4 classes,
 * 24 + c for 5-8, where the gathers cost a vgatherdps (16 loads) a class. */
static inline __m512i fl_avx512_idx_(const int8_t *v)
{
    return _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(const void *)v));
}
/* 4 x 4 within the quarters, r[k] lane i = slot vector (i / 4)'s quarter i % 4, element k */
static const int8_t fl_avx512_q4_lo_[16] = {0, 4, 8, 12, 1, 5, 9, 13, 16, 20, 24, 28, 17, 21, 25, 29};
static const int8_t fl_avx512_q4_hi_[16] = {2, 6, 10, 14, 3, 7, 11, 15, 18, 22, 26, 30, 19, 23, 27, 31};
/* the inverse's first step: unpacklo/hi_ps of the row-ordered vectors in the quarters' order */
static const int8_t fl_avx512_q4_in_lo_[16] = {0, 16, 4, 20, 1, 17, 5, 21, 2, 18, 6, 22, 3, 19, 7, 23};
static const int8_t fl_avx512_q4_in_hi_[16] = {8, 24, 12, 28, 9, 25, 13, 29, 10, 26, 14, 30, 11, 27, 15, 31};
/* 8 x 8 within the halves: the halves' low and high quarters of two vectors (in the halves'
 * order, and in row order: lane i from 8 (i % 2) + i / 2) */
static const int8_t fl_avx512_h8_lo_[16] = {0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27};
static const int8_t fl_avx512_h8_hi_[16] = {4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31};
static const int8_t fl_avx512_h8_lo_rows_[16] = {0, 8, 1, 9, 2, 10, 3, 11, 16, 24, 17, 25, 18, 26, 19, 27};
static const int8_t fl_avx512_h8_hi_rows_[16] = {4, 12, 5, 13, 6, 14, 7, 15, 20, 28, 21, 29, 22, 30, 23, 31};
/* the inverse's first step for halves: unpacklo/hi_ps of the row-ordered vectors in the halves' order */
static const int8_t fl_avx512_h8_in_lo_[16] = {0, 16, 2, 18, 8, 24, 10, 26, 1, 17, 3, 19, 9, 25, 11, 27};
static const int8_t fl_avx512_h8_in_hi_[16] = {4, 20, 6, 22, 12, 28, 14, 30, 5, 21, 7, 23, 13, 29, 15, 31};

/* the 8 x 8 steps common to both ways: u[i] from the unpacked pairs t (shuffle_ps), then
 * out[i], out[i + 4] from u[i], u[i + 4] by the permutations lo, hi */
static inline void fl_avx512_h8_tail_(const flv t[8], __m512i lo, __m512i hi, flv out[8])
{
    flv u[8];
    for (int g = 0; g < 8; g += 4) {
        u[g] = _mm512_shuffle_ps(t[g], t[g + 2], 0x44);
        u[g + 1] = _mm512_shuffle_ps(t[g], t[g + 2], 0xee);
        u[g + 2] = _mm512_shuffle_ps(t[g + 1], t[g + 3], 0x44);
        u[g + 3] = _mm512_shuffle_ps(t[g + 1], t[g + 3], 0xee);
    }
    for (int i = 0; i < 4; i++) {
        out[i] = _mm512_permutex2var_ps(u[i], lo, u[i + 4]);
        out[i + 4] = _mm512_permutex2var_ps(u[i], hi, u[i + 4]);
    }
}

static inline int flv_tile_from_rows(const float *p, int64_t c, float *t)
{
    if (c < 3 || c > 8) return 0;
    flv v[8], w[8];
    if (c <= 4) {
        __mmask16 m = (__mmask16)(((1u << c) - 1u) * 0x1111u);
        for (int a = 0; a < 4; a++) v[a] = _mm512_maskz_expandloadu_ps(m, p + 4 * c * a);
        w[0] = _mm512_unpacklo_ps(v[0], v[1]);
        w[1] = _mm512_unpackhi_ps(v[0], v[1]);
        w[2] = _mm512_unpacklo_ps(v[2], v[3]);
        w[3] = _mm512_unpackhi_ps(v[2], v[3]);
        __m512i lo = fl_avx512_idx_(fl_avx512_q4_lo_), hi = fl_avx512_idx_(fl_avx512_q4_hi_);
        _mm512_storeu_ps(t, _mm512_permutex2var_ps(w[0], lo, w[2]));
        _mm512_storeu_ps(t + 16, _mm512_permutex2var_ps(w[0], hi, w[2]));
        _mm512_storeu_ps(t + 32, _mm512_permutex2var_ps(w[1], lo, w[3]));
        if (c == 4) _mm512_storeu_ps(t + 48, _mm512_permutex2var_ps(w[1], hi, w[3]));
        return 1;
    }
    __mmask16 m = (__mmask16)(((1u << c) - 1u) * 0x0101u);
    for (int a = 0; a < 8; a++) v[a] = _mm512_maskz_expandloadu_ps(m, p + 2 * c * a);
    for (int a = 0; a < 8; a += 2) {
        w[a] = _mm512_unpacklo_ps(v[a], v[a + 1]);
        w[a + 1] = _mm512_unpackhi_ps(v[a], v[a + 1]);
    }
    fl_avx512_h8_tail_(w, fl_avx512_idx_(fl_avx512_h8_lo_rows_), fl_avx512_idx_(fl_avx512_h8_hi_rows_), v);
    for (int64_t k = 0; k < c; k++) _mm512_storeu_ps(t + 16 * k, v[k]);
    return 1;
}

static inline int flv_tile_to_rows(float *p, int64_t c, const float *t)
{
    if (c < 3 || c > 8) return 0;
    flv r[8], w[8], v[8];
    for (int64_t k = 0; k < 8; k++) r[k] = k < c ? _mm512_loadu_ps(t + 16 * k) : _mm512_setzero_ps();
    if (c <= 4) {
        __m512i lo = fl_avx512_idx_(fl_avx512_q4_in_lo_), hi = fl_avx512_idx_(fl_avx512_q4_in_hi_);
        w[0] = _mm512_permutex2var_ps(r[0], lo, r[1]);
        w[1] = _mm512_permutex2var_ps(r[0], hi, r[1]);
        w[2] = _mm512_permutex2var_ps(r[2], lo, r[3]);
        w[3] = _mm512_permutex2var_ps(r[2], hi, r[3]);
        for (int h = 0; h < 2; h++) {
            __m512d a = _mm512_castps_pd(w[h]), b = _mm512_castps_pd(w[h + 2]);
            v[2 * h] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
            v[2 * h + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
        }
        __mmask16 m = (__mmask16)(((1u << c) - 1u) * 0x1111u), n = (__mmask16)((1u << (4 * c)) - 1u);
        for (int a = 0; a < 4; a++) _mm512_mask_storeu_ps(p + 4 * c * a, n, _mm512_maskz_compress_ps(m, v[a]));
        return 1;
    }
    __m512i lo = fl_avx512_idx_(fl_avx512_h8_in_lo_), hi = fl_avx512_idx_(fl_avx512_h8_in_hi_);
    for (int k = 0; k < 8; k += 2) {
        w[k] = _mm512_permutex2var_ps(r[k], lo, r[k + 1]);
        w[k + 1] = _mm512_permutex2var_ps(r[k], hi, r[k + 1]);
    }
    fl_avx512_h8_tail_(w, fl_avx512_idx_(fl_avx512_h8_lo_), fl_avx512_idx_(fl_avx512_h8_hi_), v);
    __mmask16 m = (__mmask16)(((1u << c) - 1u) * 0x0101u), n = (__mmask16)((1u << (2 * c)) - 1u);
    for (int a = 0; a < 8; a++) _mm512_mask_storeu_ps(p + 2 * c * a, n, _mm512_maskz_compress_ps(m, v[a]));
    return 1;
}
static inline void flv_load_deint2(const float *p, flv *even, flv *odd)
{
    flv lo = _mm512_loadu_ps(p), hi = _mm512_loadu_ps(p + 16);
    *even = _mm512_permutex2var_ps(lo, _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0), hi);
    *odd = _mm512_permutex2var_ps(lo, _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1), hi);
}
static inline void flv_store_int2(float *p, flv even, flv odd)
{
    __m512i lo = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    __m512i hi = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
    _mm512_storeu_ps(p, _mm512_permutex2var_ps(even, lo, odd));
    _mm512_storeu_ps(p + 16, _mm512_permutex2var_ps(even, hi, odd));
}
static inline flv flv_pow2_floor(flv a)
{
    return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(a), _mm512_set1_epi32(0x7f800000)));
}

/* p * 2^n for integer-valued n (nan: nan), rounded once. A result below 2^-125 is built from
 * integer bits instead, round(p * 2^(n+149)) units of 2^-149, rather than by a scaling whose
 * tiny or subnormal result takes a microcode assist (on the order of 100 cycles a vector on
 * Intel cores when FTZ is off): masked logits (-inf, -1e9) made softmax 10x slower. The value
 * is the same, bit for bit. Where fl_subnormals_plain() (AMD: no assist), VSCALEFPS itself. */
static inline flv fl_avx512_ldexp_(flv p, flv n)
{
    __mmask16 tiny = _mm512_cmp_ps_mask(n, _mm512_set1_ps(-125.0f), _CMP_LT_OQ);
    if (!tiny || fl_subnormals_plain()) return _mm512_scalef_ps(p, n);
    flv y = _mm512_scalef_ps(p, _mm512_max_ps(n, _mm512_set1_ps(-125.0f)));
    flv v = _mm512_scalef_ps(p, _mm512_add_ps(n, _mm512_set1_ps(149.0f)));
    return _mm512_mask_mov_ps(y, tiny, _mm512_castsi512_ps(_mm512_cvtps_epi32(v)));
}

/* Products with a subnormal operand or result, which Intel cores compute by a microcode assist
 * (40-50 ns a vector measured on this Xeon with FTZ/DAZ off; additions, comparisons and
 * float->double conversions of subnormals take none, multiplications and FMAs do): computed
 * exactly in double instead, the result rounded to units of 2^-149 by a conversion to integer
 * (the bits b < 2^24 of a nonnegative float32 below 2^-125 are its value in those units). The
 * same bits as the plain instruction; a test a vector, and the slower path only for vectors
 * that hold such lanes. Where fl_subnormals_plain() (AMD), the plain instruction without the
 * test (fl_dispatch.c). */
static inline __m256 fl_avx512_lo256_(flv v) { return _mm512_castps512_ps256(v); }
static inline flv fl_avx512_join_(__m256i lo, __m256i hi)
{
    return _mm512_castsi512_ps(_mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1));
}
/* a * b rounded to float32 (the bits of a float32 product) for 8 lanes, a, b >= 0 */
static inline __m256i fl_avx512_mul_units_(__m256 a, __m256 b)
{
    __m512d p = _mm512_mul_pd(_mm512_cvtps_pd(a), _mm512_cvtps_pd(b)); /* exact: 24 x 24 bits */
    __mmask8 sub = _mm512_cmp_pd_mask(p, _mm512_set1_pd(0x1p-126), _CMP_LT_OQ);
    __m256 y = _mm512_cvtpd_ps(_mm512_mask_mov_pd(p, sub, _mm512_set1_pd(1.0)));
    __m256i u = _mm512_cvtpd_epi32(_mm512_maskz_mul_pd(sub, p, _mm512_set1_pd(0x1p149)));
    return _mm256_mask_blend_epi32(sub, _mm256_castps_si256(y), u);
}
static inline flv flv_mul_tiny(flv a, flv b)
{
    if (fl_subnormals_plain()) return _mm512_mul_ps(a, b);
    __m512i ia = _mm512_castps_si512(a);
    __m512i ex = _mm512_add_epi32(_mm512_srli_epi32(ia, 23), _mm512_srli_epi32(_mm512_castps_si512(b), 23));
    /* a > 0 whose exponent field and b's add to less than 128: a or a * b may be subnormal */
    if (!(_mm512_cmplt_epi32_mask(ex, _mm512_set1_epi32(128)) & _mm512_test_epi32_mask(ia, ia))) return _mm512_mul_ps(a, b);
    return fl_avx512_join_(fl_avx512_mul_units_(fl_avx512_lo256_(a), fl_avx512_lo256_(b)),
                           fl_avx512_mul_units_(fl_avx512_hi256_(a), fl_avx512_hi256_(b)));
}
/* b + b e rounded to an integer, half to even, for the bits b of 8 subnormal floats (units of
 * 2^-149) and |e| < 2^-10: t = b e is exact in double (23 x 24 bits), and b + round(t) is the
 * answer but for a tie t = k + 1/2, which is broken to even on b + t: for odd b, the other
 * neighbour 2t - round(t) */
static inline __m256i fl_avx512_mul1p_units_(__m256 p, __m256 e)
{
    __m256i b = _mm256_castps_si256(p);
    __m512d t = _mm512_mul_pd(_mm512_cvtepi32_pd(b), _mm512_cvtps_pd(e));
    __m512d r = _mm512_roundscale_pd(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __mmask8 tie = _mm512_cmp_pd_mask(_mm512_abs_pd(_mm512_sub_pd(t, r)), _mm512_set1_pd(0.5), _CMP_EQ_OQ);
    r = _mm512_mask_sub_pd(r, tie & _mm256_test_epi32_mask(b, _mm256_set1_epi32(1)), _mm512_add_pd(t, t), r);
    return _mm256_add_epi32(b, _mm512_cvtpd_epi32(r));
}
static inline flv flv_mul1p(flv p, flv e)
{
    if (fl_subnormals_plain()) return _mm512_fmadd_ps(p, e, p);
    __mmask16 tiny = _mm512_cmp_ps_mask(p, _mm512_set1_ps(0x1p-126f), _CMP_LT_OQ) &
                     _mm512_cmp_ps_mask(p, _mm512_setzero_ps(), _CMP_NEQ_OQ);
    if (!tiny) return _mm512_fmadd_ps(p, e, p);
    flv pn = _mm512_maskz_mov_ps((__mmask16)~tiny, p);
    flv u = fl_avx512_join_(fl_avx512_mul1p_units_(fl_avx512_lo256_(p), fl_avx512_lo256_(e)),
                            fl_avx512_mul1p_units_(fl_avx512_hi256_(p), fl_avx512_hi256_(e)));
    return _mm512_mask_mov_ps(_mm512_fmadd_ps(pn, e, pn), tiny, u);
}

/* The pieces of the exponentials: x = n*ln2 + r (Cody-Waite), exp(r) by fl_expf_s's
 * degree-7 polynomial or by the degree-5 one of FL_EXPF5_C1..C5 */
static inline flv fl_avx512_reduce_(flv x, flv *n)
{
    *n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(FL_LOG2E_F)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    flv r = _mm512_fnmadd_ps(*n, _mm512_set1_ps(FL_LN2_HI_F), x);
    return _mm512_fnmadd_ps(*n, _mm512_set1_ps(FL_LN2_LO_F), r);
}
static inline flv fl_avx512_poly7_(flv r)
{
    flv p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    return _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
}
static inline flv fl_avx512_poly5_(flv r)
{
    flv p = _mm512_fmadd_ps(_mm512_set1_ps(FL_EXPF5_C5), r, _mm512_set1_ps(FL_EXPF5_C4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(FL_EXPF5_C3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(FL_EXPF5_C2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(FL_EXPF5_C1));
    return _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
}

static inline flv flv_exp(flv x)
{
    /* the algorithm of fl_expf_s; 2^n is applied with one rounding, subnormals and overflow
     * included, so the clamps only keep n finite (NaN is restored at the end) */
    flv n, xc = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-104.0f)), _mm512_set1_ps(89.0f));
    flv r = fl_avx512_reduce_(xc, &n);
    flv y = fl_avx512_ldexp_(fl_avx512_poly7_(r), n);
    return _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), x);
}

/* flv_exp for x <= 0 (a shift by the row's max): no upper clamp, and a nan lane stays nan
 * through the arithmetic (vmaxps returns its second operand when either is nan) */
static inline flv flv_exp_neg(flv x)
{
    flv n, r = fl_avx512_reduce_(_mm512_max_ps(_mm512_set1_ps(-104.0f), x), &n);
    return fl_avx512_ldexp_(fl_avx512_poly7_(r), n);
}

/* flv_exp_neg and flv_exp_neg_fast for x in [FL_EXPF_NORMAL_LO, 0]: the same values, without
 * the clamp and the subnormal results' branch */
static inline flv flv_exp_neg_normal(flv x)
{
    flv n, r = fl_avx512_reduce_(x, &n);
    return _mm512_scalef_ps(fl_avx512_poly7_(r), n);
}
static inline flv flv_exp_neg_fast_normal(flv x)
{
    flv n, r = fl_avx512_reduce_(x, &n);
    return _mm512_scalef_ps(fl_avx512_poly5_(r), n);
}
/* exp(x) * 2^-sn, as fl_expf_shift_s and fl_expf_fast_shift_s (a normal result) */
static inline flv flv_exp_shift_normal(flv x, flv sn)
{
    flv n, r = fl_avx512_reduce_(x, &n);
    return _mm512_scalef_ps(fl_avx512_poly7_(r), _mm512_sub_ps(n, sn));
}
static inline flv flv_exp_fast_shift_normal(flv x, flv sn)
{
    flv n, r = fl_avx512_reduce_(x, &n);
    return _mm512_scalef_ps(fl_avx512_poly5_(r), _mm512_sub_ps(n, sn));
}

/* flv_exp_neg with the degree-5 polynomial (FL_EXPF5_C1..C5) */
static inline flv flv_exp_neg_fast(flv x)
{
    flv n, r = fl_avx512_reduce_(_mm512_max_ps(_mm512_set1_ps(-104.0f), x), &n);
    return fl_avx512_ldexp_(fl_avx512_poly5_(r), n);
}

/* The masked exponentials (fl_simd.h): the argument raised to lo, the lanes below it zeroed by
 * the scaling's zero mask; the gap's distance |t| goes into *gap by one vrangeps (min of the
 * absolute values, sign cleared) */
static inline flv fl_avx512_gap_min_(flv t, flv gap) { return _mm512_range_ps(t, gap, 0x0a); }
static inline flv flv_exp_neg_fast_masked(flv d, flv *gap)
{
    flv lo = _mm512_set1_ps(FL_EXPF_NORMAL_LO), n, r;
    *gap = fl_avx512_gap_min_(_mm512_sub_ps(d, _mm512_set1_ps(FL_EXPF_GAP_MID)), *gap);
    r = fl_avx512_reduce_(_mm512_max_ps(d, lo), &n);
    return _mm512_maskz_scalef_ps(_mm512_cmp_ps_mask(d, lo, _CMP_GE_OQ), fl_avx512_poly5_(r), n);
}
static inline flv flv_exp_shift_masked(flv x, flv sn, flv lo, flv mid, flv *gap)
{
    flv n, r;
    *gap = fl_avx512_gap_min_(_mm512_sub_ps(x, mid), *gap);
    r = fl_avx512_reduce_(_mm512_max_ps(x, lo), &n);
    return _mm512_maskz_scalef_ps(_mm512_cmp_ps_mask(x, lo, _CMP_GE_OQ), fl_avx512_poly7_(r), _mm512_sub_ps(n, sn));
}
static inline flv flv_exp_fast_shift_masked(flv x, flv sn, flv lo, flv mid, flv *gap)
{
    flv n, r;
    *gap = fl_avx512_gap_min_(_mm512_sub_ps(x, mid), *gap);
    r = fl_avx512_reduce_(_mm512_max_ps(x, lo), &n);
    return _mm512_maskz_scalef_ps(_mm512_cmp_ps_mask(x, lo, _CMP_GE_OQ), fl_avx512_poly5_(r), _mm512_sub_ps(n, sn));
}

/* log(x) + c (c = 0 for log; log1p folds its correction in), as fl_logf_core_s */
static inline flv fl_log_core_(flv x, flv c)
{
    __mmask16 sub = _mm512_cmp_ps_mask(x, _mm512_set1_ps(1.17549435e-38f), _CMP_LT_OQ);
    flv xs = _mm512_mask_mul_ps(x, sub, x, _mm512_set1_ps(8388608.0f));
    __m512i u = _mm512_castps_si512(xs);
    __m512i e = _mm512_sub_epi32(_mm512_and_si512(_mm512_srli_epi32(u, 23), _mm512_set1_epi32(0xff)),
                                 _mm512_set1_epi32(126));
    flv m = _mm512_castsi512_ps(_mm512_or_si512(_mm512_and_si512(u, _mm512_set1_epi32(0x007fffff)),
                                                _mm512_set1_epi32(0x3f000000)));
    __mmask16 small = _mm512_cmp_ps_mask(m, _mm512_set1_ps(FL_SQRTH_F), _CMP_LT_OQ);
    e = _mm512_mask_sub_epi32(e, small, e, _mm512_set1_epi32(1));
    m = _mm512_mask_add_ps(m, small, m, m);
    flv t = _mm512_sub_ps(m, _mm512_set1_ps(1.0f));
    flv z = _mm512_mul_ps(t, t);
    flv p = _mm512_set1_ps(7.0376836292e-2f);
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.1514610310e-1f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.1676998740e-1f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.2420140846e-1f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.4249322787e-1f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.6668057665e-1f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(2.0000714765e-1f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-2.4999993993e-1f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(3.3333331174e-1f));
    flv fe = _mm512_cvtepi32_ps(e);
    fe = _mm512_mask_sub_ps(fe, sub, fe, _mm512_set1_ps(23.0f));
    flv y = _mm512_mul_ps(_mm512_mul_ps(p, t), z);
    y = _mm512_add_ps(y, _mm512_fmadd_ps(fe, _mm512_set1_ps(-2.12194440e-4f), c));
    y = _mm512_fnmadd_ps(_mm512_set1_ps(0.5f), z, y);
    y = _mm512_add_ps(t, y);
    y = _mm512_fmadd_ps(fe, _mm512_set1_ps(0.693359375f), y);
    flv zero = _mm512_setzero_ps();
    y = _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(x, zero, _CMP_EQ_OQ), _mm512_set1_ps(-INFINITY));
    y = _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(x, zero, _CMP_LT_OQ), _mm512_set1_ps(NAN));
    y = _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(x, _mm512_set1_ps(INFINITY), _CMP_EQ_OQ), x);
    return _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), x);
}

static inline flv flv_log(flv x) { return fl_log_core_(x, _mm512_setzero_ps()); }

static inline flv flv_log1p(flv x)
{
    flv one = _mm512_set1_ps(1.0f);
    flv u = _mm512_add_ps(one, x);
    flv corr = _mm512_sub_ps(_mm512_sub_ps(u, one), x);
    flv y = fl_log_core_(u, _mm512_div_ps(flv_neg(corr), u));
    y = _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(u, one, _CMP_EQ_OQ), x);
    y = _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(u, _mm512_setzero_ps(), _CMP_EQ_OQ), _mm512_set1_ps(-INFINITY));
    return _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(x, _mm512_set1_ps(INFINITY), _CMP_EQ_OQ), x);
}

/* vcvtph2ps quiets signalling NaNs; fl_half.h widens them unchanged, so clear the quiet bit
 * again in those lanes (halves with 0x7c00 < |h| < 0x7e00) to stay bit-identical with it. */
static inline flv flv_load_f16(const uint16_t *p)
{
    __m256i h = _mm256_loadu_si256((const __m256i *)(const void *)p);
    __m512i a = _mm512_and_si512(_mm512_cvtepu16_epi32(h), _mm512_set1_epi32(0x7fff));
    __mmask16 snan = _mm512_cmpgt_epi32_mask(a, _mm512_set1_epi32(0x7c00)) &
                     _mm512_cmplt_epi32_mask(a, _mm512_set1_epi32(0x7e00));
    __m512i f = _mm512_castps_si512(_mm512_cvtph_ps(h));
    return _mm512_castsi512_ps(_mm512_mask_andnot_epi32(f, snan, _mm512_set1_epi32(0x00400000), f));
}
static inline flv flv_load_f16_arith(const uint16_t *p)
{
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)p));
}
static inline void flv_store_f16(uint16_t *p, flv v)
{
    _mm256_storeu_si256((__m256i *)(void *)p, _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
}
static inline void flv_stream_f16(uint16_t *p, flv v)
{
    _mm256_stream_si256((__m256i *)(void *)p, _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
}
static inline flv flv_load_bf16(const uint16_t *p)
{
    __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(const void *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}
static inline __m256i fl_avx512_narrow_bf16_(flv v)
{
    __m512i u = _mm512_castps_si512(v);
    __mmask16 nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
                                            _mm512_set1_epi32(0x7f800000));
    __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff)));
    r = _mm512_mask_or_epi32(r, nan, u, _mm512_set1_epi32(0x00400000)); /* quiet NaN */
    return _mm512_cvtepi32_epi16(_mm512_srli_epi32(r, 16));
}
static inline void flv_store_bf16(uint16_t *p, flv v) { _mm256_storeu_si256((__m256i *)(void *)p, fl_avx512_narrow_bf16_(v)); }
static inline void flv_stream_bf16(uint16_t *p, flv v) { _mm256_stream_si256((__m256i *)(void *)p, fl_avx512_narrow_bf16_(v)); }

/* half-precision order keys (fl_simd.h "flk"): 32 int16 lanes */
#define FL_KW 32
typedef __m512i flk;
static inline flk flk_load(const uint16_t *p) { return _mm512_loadu_si512((const void *)p); }
static inline flk flk_set1(int v) { return _mm512_set1_epi16((short)v); }
static inline flk flk_max(flk a, flk b) { return _mm512_max_epi16(a, b); }
static inline flk flk_mag(flk h) { return _mm512_and_si512(h, _mm512_set1_epi16(0x7fff)); }
/* 0 - mag in the lanes whose sign bit is set (vpmovw2m, masked vpsubw) */
static inline flk flk_key(flk h, flk mag)
{
    return _mm512_mask_sub_epi16(mag, _mm512_movepi16_mask(h), _mm512_setzero_si512(), mag);
}
static inline int flk_hmax(flk a)
{
    __m256i m = _mm256_max_epi16(_mm512_castsi512_si256(a), _mm512_extracti64x4_epi64(a, 1));
    __m128i q = _mm_max_epi16(_mm256_castsi256_si128(m), _mm256_extracti128_si256(m, 1));
    q = _mm_max_epi16(q, _mm_srli_si128(q, 8));
    q = _mm_max_epi16(q, _mm_srli_si128(q, 4));
    q = _mm_max_epi16(q, _mm_srli_si128(q, 2));
    return (int)(int16_t)_mm_extract_epi16(q, 0);
}

static inline int flk_any_gt(flk a, flk b) { return _mm512_cmpgt_epi16_mask(a, b) != 0; }

#endif
