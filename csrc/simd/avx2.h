/* simd/avx2.h: the 8-lane AVX2 + FMA + F16C implementation of fl_simd.h.
 * Compiled only with -mavx2 -mfma -mf16c (or MSVC /arch:AVX2).
 * exp/log/log1p mirror fl_scalar_math.h step by step (same reduction, same coefficients, the
 * Horner steps as fused multiply-adds). Partial loads/stores use vmaskmovps, which never
 * touches (or faults on) the masked-off lanes. */
#ifndef FL_SIMD_AVX2_H
#define FL_SIMD_AVX2_H

#include <stdint.h>
#include <immintrin.h>
#include "../fl_scalar_math.h"
#include "../fl_half.h"

#if !defined(_MSC_VER) && !(defined(__AVX2__) && defined(__FMA__) && defined(__F16C__))
#error "simd/avx2.h needs -mavx2 -mfma -mf16c"
#endif

#define FL_W 8
typedef __m256 flv;

static inline flv flv_set1(float a) { return _mm256_set1_ps(a); }
static inline flv flv_load(const float *p) { return _mm256_loadu_ps(p); }
static inline void flv_store(float *p, flv v) { _mm256_storeu_ps(p, v); }
/* non-temporal store: p must be aligned to FL_W * 4 bytes */
static inline void flv_stream(float *p, flv v) { _mm256_stream_ps(p, v); }
static inline void fl_stream_fence(void) { _mm_sfence(); }
static inline __m256i fl_avx2_mask_(int64_t n)
{
    n = n < 0 ? 0 : (n > FL_W ? FL_W : n);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
static inline flv flv_load_part(const float *p, int64_t n, float fill)
{
    __m256i k = fl_avx2_mask_(n);
    return _mm256_blendv_ps(_mm256_set1_ps(fill), _mm256_maskload_ps(p, k), _mm256_castsi256_ps(k));
}
static inline void flv_store_part(float *p, flv v, int64_t n) { _mm256_maskstore_ps(p, fl_avx2_mask_(n), v); }
static inline flv flv_add(flv a, flv b) { return _mm256_add_ps(a, b); }
static inline flv flv_sub(flv a, flv b) { return _mm256_sub_ps(a, b); }
static inline flv flv_mul(flv a, flv b) { return _mm256_mul_ps(a, b); }
static inline flv flv_div(flv a, flv b) { return _mm256_div_ps(a, b); }
/* (a != a || a > b) ? a : b, as scalar.h: vmaxps gives b when either is NaN, so put a back
 * where a is NaN. For +-0 vmaxps returns b, like the scalar expression. */
static inline flv flv_max(flv a, flv b)
{
    return _mm256_blendv_ps(_mm256_max_ps(a, b), a, _mm256_cmp_ps(a, a, _CMP_UNORD_Q));
}
/* a > b ? a : b for operands that are not NaN: one instruction */
static inline flv flv_max_ord(flv a, flv b) { return _mm256_max_ps(a, b); }
static inline flv flv_min_ord(flv a, flv b) { return _mm256_min_ps(a, b); }
/* acc, NaN in the lanes where a or b is NaN: an all-ones mask is a NaN */
static inline flv flv_nan_mark(flv acc, flv a, flv b) { return _mm256_or_ps(acc, _mm256_cmp_ps(a, b, _CMP_UNORD_Q)); }
static inline flv flv_min(flv a, flv b)
{
    return _mm256_blendv_ps(_mm256_min_ps(a, b), a, _mm256_cmp_ps(a, a, _CMP_UNORD_Q));
}
static inline flv flv_fma(flv a, flv b, flv c) { return _mm256_fmadd_ps(a, b, c); }
static inline flv flv_abs(flv a)
{
    return _mm256_castsi256_ps(_mm256_and_si256(_mm256_castps_si256(a), _mm256_set1_epi32(0x7fffffff)));
}
static inline flv flv_neg(flv a)
{
    return _mm256_castsi256_ps(_mm256_xor_si256(_mm256_castps_si256(a), _mm256_set1_epi32((int)0x80000000u)));
}
static inline flv flv_zero_nan(flv a) { return _mm256_and_ps(a, _mm256_cmp_ps(a, a, _CMP_ORD_Q)); }
static inline flv flv_sel_neg(flv c, flv a, flv b) { return _mm256_blendv_ps(b, a, _mm256_cmp_ps(c, _mm256_setzero_ps(), _CMP_LT_OQ)); }
static inline flv flv_zero_ge(flv a, flv b, flv e) { return _mm256_andnot_ps(_mm256_cmp_ps(a, b, _CMP_GE_OQ), e); }
static inline __m128 fl_avx2_max4_(__m128 a, __m128 b)
{
    return _mm_blendv_ps(_mm_max_ps(a, b), a, _mm_cmp_ps(a, a, _CMP_UNORD_Q));
}
static inline int flv_any_ge(flv a, flv b) { return _mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_GE_OQ)) != 0; }
static inline unsigned flv_mask_ge(flv a, flv b) { return (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_GE_OQ)); }
static inline int flv_all_finite(flv a)
{
    return _mm256_movemask_ps(_mm256_cmp_ps(flv_abs(a), _mm256_set1_ps(INFINITY), _CMP_LT_OQ)) == 0xff;
}
static inline float flv_hmax(flv a)
{
    __m128 m4 = fl_avx2_max4_(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    m4 = fl_avx2_max4_(m4, _mm_movehl_ps(m4, m4));
    m4 = fl_avx2_max4_(m4, _mm_shuffle_ps(m4, m4, 0x55));
    return _mm_cvtss_f32(m4);
}
static inline double flv_hsum_d(flv a)
{
    __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(a));
    __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1));
    __m256d s4 = _mm256_add_pd(lo, hi);
    __m128d s2 = _mm_add_pd(_mm256_castpd256_pd128(s4), _mm256_extractf128_pd(s4, 1));
    s2 = _mm_add_sd(s2, _mm_unpackhi_pd(s2, s2));
    return _mm_cvtsd_f64(s2);
}

/* FL_W float64 lanes accumulating float32 vectors: the row sums of exponentials */
typedef struct { __m256d lo, hi; } fl_dacc;
static inline fl_dacc fl_dacc_zero(void) { fl_dacc a = {_mm256_setzero_pd(), _mm256_setzero_pd()}; return a; }
static inline fl_dacc fl_dacc_add(fl_dacc a, flv v)
{
    a.lo = _mm256_add_pd(a.lo, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
    a.hi = _mm256_add_pd(a.hi, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
    return a;
}
static inline double fl_dacc_sum(fl_dacc a)
{
    __m256d s4 = _mm256_add_pd(a.lo, a.hi);
    __m128d s2 = _mm_add_pd(_mm256_castpd256_pd128(s4), _mm256_extractf128_pd(s4, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s2, _mm_unpackhi_pd(s2, s2)));
}
/* a + (double)p * max((double)x - m, -1e300), lane by lane, each step rounded once */
static inline __m256d fl_avx2_prod_(__m128 p, __m128 x, __m256d m)
{
    __m256d d = _mm256_max_pd(_mm256_sub_pd(_mm256_cvtps_pd(x), m), _mm256_set1_pd(-1e300));
    return _mm256_mul_pd(_mm256_cvtps_pd(p), d);
}
static inline fl_dacc fl_dacc_add_prod(fl_dacc a, flv p, flv x, double m)
{
    __m256d vm = _mm256_set1_pd(m);
    a.lo = _mm256_add_pd(a.lo, fl_avx2_prod_(_mm256_castps256_ps128(p), _mm256_castps256_ps128(x), vm));
    a.hi = _mm256_add_pd(a.hi, fl_avx2_prod_(_mm256_extractf128_ps(p, 1), _mm256_extractf128_ps(x, 1), vm));
    return a;
}
static inline void fl_dacc_store(double *p, fl_dacc a) { _mm256_storeu_pd(p, a.lo); _mm256_storeu_pd(p + 4, a.hi); }
static inline flv flv_gather(const float *p, const int32_t *idx)
{
    return _mm256_i32gather_ps(p, _mm256_loadu_si256((const __m256i *)(const void *)idx), 4);
}
/* entry m: the lanes of m's set bits, lowest first, four bits each (vpermps reads an index's
 * low three bits, so the unused nibbles' zeros select nothing that is stored) */
static const uint32_t fl_avx2_compress_idx_[256] = {
    0x00000000u, 0x00000000u, 0x00000001u, 0x00000010u, 0x00000002u, 0x00000020u, 0x00000021u, 0x00000210u,
    0x00000003u, 0x00000030u, 0x00000031u, 0x00000310u, 0x00000032u, 0x00000320u, 0x00000321u, 0x00003210u,
    0x00000004u, 0x00000040u, 0x00000041u, 0x00000410u, 0x00000042u, 0x00000420u, 0x00000421u, 0x00004210u,
    0x00000043u, 0x00000430u, 0x00000431u, 0x00004310u, 0x00000432u, 0x00004320u, 0x00004321u, 0x00043210u,
    0x00000005u, 0x00000050u, 0x00000051u, 0x00000510u, 0x00000052u, 0x00000520u, 0x00000521u, 0x00005210u,
    0x00000053u, 0x00000530u, 0x00000531u, 0x00005310u, 0x00000532u, 0x00005320u, 0x00005321u, 0x00053210u,
    0x00000054u, 0x00000540u, 0x00000541u, 0x00005410u, 0x00000542u, 0x00005420u, 0x00005421u, 0x00054210u,
    0x00000543u, 0x00005430u, 0x00005431u, 0x00054310u, 0x00005432u, 0x00054320u, 0x00054321u, 0x00543210u,
    0x00000006u, 0x00000060u, 0x00000061u, 0x00000610u, 0x00000062u, 0x00000620u, 0x00000621u, 0x00006210u,
    0x00000063u, 0x00000630u, 0x00000631u, 0x00006310u, 0x00000632u, 0x00006320u, 0x00006321u, 0x00063210u,
    0x00000064u, 0x00000640u, 0x00000641u, 0x00006410u, 0x00000642u, 0x00006420u, 0x00006421u, 0x00064210u,
    0x00000643u, 0x00006430u, 0x00006431u, 0x00064310u, 0x00006432u, 0x00064320u, 0x00064321u, 0x00643210u,
    0x00000065u, 0x00000650u, 0x00000651u, 0x00006510u, 0x00000652u, 0x00006520u, 0x00006521u, 0x00065210u,
    0x00000653u, 0x00006530u, 0x00006531u, 0x00065310u, 0x00006532u, 0x00065320u, 0x00065321u, 0x00653210u,
    0x00000654u, 0x00006540u, 0x00006541u, 0x00065410u, 0x00006542u, 0x00065420u, 0x00065421u, 0x00654210u,
    0x00006543u, 0x00065430u, 0x00065431u, 0x00654310u, 0x00065432u, 0x00654320u, 0x00654321u, 0x06543210u,
    0x00000007u, 0x00000070u, 0x00000071u, 0x00000710u, 0x00000072u, 0x00000720u, 0x00000721u, 0x00007210u,
    0x00000073u, 0x00000730u, 0x00000731u, 0x00007310u, 0x00000732u, 0x00007320u, 0x00007321u, 0x00073210u,
    0x00000074u, 0x00000740u, 0x00000741u, 0x00007410u, 0x00000742u, 0x00007420u, 0x00007421u, 0x00074210u,
    0x00000743u, 0x00007430u, 0x00007431u, 0x00074310u, 0x00007432u, 0x00074320u, 0x00074321u, 0x00743210u,
    0x00000075u, 0x00000750u, 0x00000751u, 0x00007510u, 0x00000752u, 0x00007520u, 0x00007521u, 0x00075210u,
    0x00000753u, 0x00007530u, 0x00007531u, 0x00075310u, 0x00007532u, 0x00075320u, 0x00075321u, 0x00753210u,
    0x00000754u, 0x00007540u, 0x00007541u, 0x00075410u, 0x00007542u, 0x00075420u, 0x00075421u, 0x00754210u,
    0x00007543u, 0x00075430u, 0x00075431u, 0x00754310u, 0x00075432u, 0x00754320u, 0x00754321u, 0x07543210u,
    0x00000076u, 0x00000760u, 0x00000761u, 0x00007610u, 0x00000762u, 0x00007620u, 0x00007621u, 0x00076210u,
    0x00000763u, 0x00007630u, 0x00007631u, 0x00076310u, 0x00007632u, 0x00076320u, 0x00076321u, 0x00763210u,
    0x00000764u, 0x00007640u, 0x00007641u, 0x00076410u, 0x00007642u, 0x00076420u, 0x00076421u, 0x00764210u,
    0x00007643u, 0x00076430u, 0x00076431u, 0x00764310u, 0x00076432u, 0x00764320u, 0x00764321u, 0x07643210u,
    0x00000765u, 0x00007650u, 0x00007651u, 0x00076510u, 0x00007652u, 0x00076520u, 0x00076521u, 0x00765210u,
    0x00007653u, 0x00076530u, 0x00076531u, 0x00765310u, 0x00076532u, 0x00765320u, 0x00765321u, 0x07653210u,
    0x00007654u, 0x00076540u, 0x00076541u, 0x00765410u, 0x00076542u, 0x00765420u, 0x00765421u, 0x07654210u,
    0x00076543u, 0x00765430u, 0x00765431u, 0x07654310u, 0x00765432u, 0x07654320u, 0x07654321u, 0x76543210u,
};
static inline int flv_store_compress(float *p, flv v, unsigned mask)
{
    mask &= 0xffu;
    __m256i idx = _mm256_srlv_epi32(_mm256_set1_epi32((int)fl_avx2_compress_idx_[mask]),
                                    _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28));
    int n = fl_popcount(mask);
    _mm256_maskstore_ps(p, fl_avx2_mask_(n), _mm256_permutevar8x32_ps(v, idx));
    return n;
}
/* r[j] lane k -> r[k] lane j (8 x 8): pairs interleaved, then quads within the 128-bit halves,
 * then the halves exchanged: 24 shuffles (the few-class tiles, fl_tile.h) */
static inline void flv_transpose(flv r[8])
{
    flv t[8], s[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        s[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        s[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xee);
        s[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        s[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xee);
    }
    for (int k = 0; k < 4; k++) {
        r[k] = _mm256_permute2f128_ps(s[k], s[k + 4], 0x20);
        r[k + 4] = _mm256_permute2f128_ps(s[k], s[k + 4], 0x31);
    }
}
/* shufps picks lanes 0, 2 (1, 3) of each 128-bit half of both, vpermpd puts the halves in order */
/* Few-class tiles without gathers (fl_tile.h): FL_W = 8 contiguous rows of c = 3 or 4 classes
 * (8c floats at p) and the tile whose class k is the vector at t + 8k, lane j its row j. Two
 * rows a vector, one a 128-bit half (a row of 3 classes in a 4-float slot: each half's load
 * runs one float into the next row, the tile's last one loads 3); a 4 x 4 transposition
 * within the halves (4 unpacks, 4 shufps) leaves lane 4h + a of class k holding row 2a + h,
 * which one permutation a class puts in row order. Stores run it backwards; a half's 4-float
 * store runs one float into the next row, which that row's store then writes (the tile's last
 * one stores 3). Other class counts: 0, nothing done (the rows from 5 classes: FL_TILE_ROWS_MIN_C). */
static inline void fl_avx2_q4_(const flv v[4], flv o[4])
{
    flv t0 = _mm256_unpacklo_ps(v[0], v[1]), t1 = _mm256_unpackhi_ps(v[0], v[1]);
    flv t2 = _mm256_unpacklo_ps(v[2], v[3]), t3 = _mm256_unpackhi_ps(v[2], v[3]);
    o[0] = _mm256_shuffle_ps(t0, t2, 0x44);
    o[1] = _mm256_shuffle_ps(t0, t2, 0xee);
    o[2] = _mm256_shuffle_ps(t1, t3, 0x44);
    o[3] = _mm256_shuffle_ps(t1, t3, 0xee);
}
static inline int flv_tile_from_rows(const float *p, int64_t c, float *t)
{
    if (c != 3 && c != 4) return 0;
    flv v[4], o[4];
    if (c == 4) {
        for (int a = 0; a < 4; a++) v[a] = _mm256_loadu_ps(p + 8 * a);
    } else {
        __m128i three = _mm_setr_epi32(-1, -1, -1, 0);
        for (int a = 0; a < 4; a++) {
            __m128 hi = a < 3 ? _mm_loadu_ps(p + 6 * a + 3) : _mm_maskload_ps(p + 6 * a + 3, three);
            v[a] = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps(p + 6 * a)), hi, 1);
        }
    }
    fl_avx2_q4_(v, o);
    __m256i rows = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int64_t k = 0; k < c; k++) _mm256_storeu_ps(t + 8 * k, _mm256_permutevar8x32_ps(o[k], rows));
    return 1;
}
static inline int flv_tile_to_rows(float *p, int64_t c, const float *t)
{
    if (c != 3 && c != 4) return 0;
    flv w[4], v[4];
    __m256i halves = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    for (int64_t k = 0; k < 4; k++)
        w[k] = k < c ? _mm256_permutevar8x32_ps(_mm256_loadu_ps(t + 8 * k), halves) : _mm256_setzero_ps();
    fl_avx2_q4_(w, v);
    if (c == 4) {
        for (int a = 0; a < 4; a++) _mm256_storeu_ps(p + 8 * a, v[a]);
        return 1;
    }
    for (int a = 0; a < 4; a++) {
        _mm_storeu_ps(p + 6 * a, _mm256_castps256_ps128(v[a]));
        if (a < 3) _mm_storeu_ps(p + 6 * a + 3, _mm256_extractf128_ps(v[a], 1));
        else _mm_maskstore_ps(p + 6 * a + 3, _mm_setr_epi32(-1, -1, -1, 0), _mm256_extractf128_ps(v[a], 1));
    }
    return 1;
}
static inline void flv_load_deint2(const float *p, flv *even, flv *odd)
{
    flv lo = _mm256_loadu_ps(p), hi = _mm256_loadu_ps(p + 8);
    *even = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(lo, hi, 0x88)), 0xd8));
    *odd = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(lo, hi, 0xdd)), 0xd8));
}
/* the inverse of flv_load_deint2: unpcklps/unpckhps interleave within each 128-bit half,
 * vperm2f128 puts the halves in order */
static inline void flv_store_int2(float *p, flv even, flv odd)
{
    flv lo = _mm256_unpacklo_ps(even, odd), hi = _mm256_unpackhi_ps(even, odd);
    _mm256_storeu_ps(p, _mm256_permute2f128_ps(lo, hi, 0x20));
    _mm256_storeu_ps(p + 8, _mm256_permute2f128_ps(lo, hi, 0x31));
}
static inline flv flv_pow2_floor(flv a)
{
    return _mm256_and_ps(a, _mm256_castsi256_ps(_mm256_set1_epi32(0x7f800000)));
}

/* p * 2^n for integer-valued n in [-150, 129] (nan: nan), rounded once: 2^n = 2^n1 * 2^n2,
 * n1 = n/2 truncated toward zero. A result below 2^-125 is built from integer bits instead,
 * round(p * 2^(n+149)) units of 2^-149, rather than by a multiplication whose tiny or
 * subnormal result takes a microcode assist (on the order of 100 cycles on Intel cores when
 * FTZ is off): masked logits (-inf, -1e9) made softmax 10x slower. Same value, bit for bit.
 * On every CPU: Zen 4 stalls too on a product of normal values that is subnormal (the wide
 * softmax ran 2x slower with the two multiplications; fl_dispatch.c). */
static inline flv fl_avx2_ldexp_(flv p, flv n)
{
    flv tiny = _mm256_cmp_ps(n, _mm256_set1_ps(-125.0f), _CMP_LT_OQ);
    int any_tiny = _mm256_movemask_ps(tiny);
    flv nn = any_tiny ? _mm256_max_ps(n, _mm256_set1_ps(-125.0f)) : n;
    __m256i ni = _mm256_cvtps_epi32(nn);
    __m256i n1 = _mm256_srai_epi32(_mm256_add_epi32(ni, _mm256_srli_epi32(ni, 31)), 1);
    __m256i n2 = _mm256_sub_epi32(ni, n1);
    __m256i bias = _mm256_set1_epi32(127);
    flv s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
    flv s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
    flv y = _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
    if (!any_tiny) return y;
    /* n + 149 in [-1, 24): one normal scale */
    __m256i ks = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_max_ps(n, _mm256_set1_ps(-150.0f))), _mm256_set1_epi32(149));
    flv v = _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(ks, bias), 23)));
    return _mm256_blendv_ps(y, _mm256_castsi256_ps(_mm256_cvtps_epi32(v)), tiny);
}

/* Products with a subnormal operand or result, which Intel cores compute by a microcode assist
 * (see avx512.h): computed exactly in double, a subnormal result rounded to units of 2^-149 by a
 * conversion to integer. The same bits as the plain instruction; a test a vector, and the
 * slower path only for vectors that hold such lanes. Where fl_subnormals_plain() (AMD), the
 * plain instruction without the test (fl_dispatch.c). */
static inline flv fl_avx2_join_(__m128i lo, __m128i hi)
{
    return _mm256_castsi256_ps(_mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1));
}
/* a * b rounded to float32 (the bits of a float32 product) for 4 lanes, a, b >= 0 */
static inline __m128i fl_avx2_mul_units_(__m128 a, __m128 b)
{
    __m256d p = _mm256_mul_pd(_mm256_cvtps_pd(a), _mm256_cvtps_pd(b)); /* exact: 24 x 24 bits */
    __m256d sub = _mm256_cmp_pd(p, _mm256_set1_pd(0x1p-126), _CMP_LT_OQ);
    __m128 y = _mm256_cvtpd_ps(_mm256_blendv_pd(p, _mm256_set1_pd(1.0), sub));
    __m128i u = _mm256_cvtpd_epi32(_mm256_and_pd(sub, _mm256_mul_pd(p, _mm256_set1_pd(0x1p149))));
    return _mm_castps_si128(_mm_blendv_ps(y, _mm_castsi128_ps(u), _mm256_cvtpd_ps(sub)));
}
static inline flv flv_mul_tiny(flv a, flv b)
{
    if (fl_subnormals_plain()) return _mm256_mul_ps(a, b);
    __m256i ia = _mm256_castps_si256(a);
    __m256i ex = _mm256_add_epi32(_mm256_srli_epi32(ia, 23), _mm256_srli_epi32(_mm256_castps_si256(b), 23));
    /* a > 0 whose exponent field and b's add to less than 128: a or a * b may be subnormal */
    __m256i t = _mm256_andnot_si256(_mm256_cmpeq_epi32(ia, _mm256_setzero_si256()),
                                    _mm256_cmpgt_epi32(_mm256_set1_epi32(128), ex));
    if (_mm256_testz_si256(t, t)) return _mm256_mul_ps(a, b);
    return fl_avx2_join_(fl_avx2_mul_units_(_mm256_castps256_ps128(a), _mm256_castps256_ps128(b)),
                         fl_avx2_mul_units_(_mm256_extractf128_ps(a, 1), _mm256_extractf128_ps(b, 1)));
}
/* b + b e rounded to an integer, half to even, for the bits b of 4 subnormal floats (units of
 * 2^-149) and |e| < 2^-10: t = b e is exact in double (23 x 24 bits), and b + round(t) is the
 * answer but for a tie t = k + 1/2, which is broken to even on b + t: for odd b, the other
 * neighbour 2t - round(t) */
static inline __m128i fl_avx2_mul1p_units_(__m128 p, __m128 e)
{
    __m128i b = _mm_castps_si128(p);
    __m256d t = _mm256_mul_pd(_mm256_cvtepi32_pd(b), _mm256_cvtps_pd(e));
    __m256d r = _mm256_round_pd(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256d d = _mm256_sub_pd(t, r);
    __m256d tie = _mm256_cmp_pd(_mm256_mul_pd(d, d), _mm256_set1_pd(0.25), _CMP_EQ_OQ);
    __m256d odd = _mm256_castsi256_pd(_mm256_cvtepi32_epi64(_mm_sub_epi32(_mm_setzero_si128(),
                                                                            _mm_and_si128(b, _mm_set1_epi32(1)))));
    r = _mm256_blendv_pd(r, _mm256_sub_pd(_mm256_add_pd(t, t), r), _mm256_and_pd(tie, odd));
    return _mm_add_epi32(b, _mm256_cvtpd_epi32(r));
}
static inline flv flv_mul1p(flv p, flv e)
{
    if (fl_subnormals_plain()) return _mm256_fmadd_ps(p, e, p);
    flv tiny = _mm256_and_ps(_mm256_cmp_ps(p, _mm256_set1_ps(0x1p-126f), _CMP_LT_OQ),
                             _mm256_cmp_ps(p, _mm256_setzero_ps(), _CMP_NEQ_OQ));
    if (!_mm256_movemask_ps(tiny)) return _mm256_fmadd_ps(p, e, p);
    flv pn = _mm256_andnot_ps(tiny, p);
    flv u = fl_avx2_join_(fl_avx2_mul1p_units_(_mm256_castps256_ps128(p), _mm256_castps256_ps128(e)),
                          fl_avx2_mul1p_units_(_mm256_extractf128_ps(p, 1), _mm256_extractf128_ps(e, 1)));
    return _mm256_blendv_ps(_mm256_fmadd_ps(pn, e, pn), u, tiny);
}

/* The pieces of the exponentials: x = n*ln2 + r (Cody-Waite), exp(r) by fl_expf_s's
 * degree-7 polynomial or by the degree-5 one of FL_EXPF5_C1..C5, 2^n of a normal result as
 * one exponent-field multiplication */
static inline flv fl_avx2_reduce_(flv x, flv *n)
{
    *n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(FL_LOG2E_F)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    flv r = _mm256_fnmadd_ps(*n, _mm256_set1_ps(FL_LN2_HI_F), x);
    return _mm256_fnmadd_ps(*n, _mm256_set1_ps(FL_LN2_LO_F), r);
}
static inline flv fl_avx2_poly7_(flv r)
{
    flv p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    return _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
}
static inline flv fl_avx2_poly5_(flv r)
{
    flv p = _mm256_fmadd_ps(_mm256_set1_ps(FL_EXPF5_C5), r, _mm256_set1_ps(FL_EXPF5_C4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(FL_EXPF5_C3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(FL_EXPF5_C2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(FL_EXPF5_C1));
    return _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
}
static inline flv fl_avx2_scale_normal_(flv p, flv n)
{
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}
/* the x <= 0 exponentials' clamp: a nan lane stays nan (the comparison is false for it) */
static inline flv fl_avx2_clamp_lo_(flv x)
{
    return _mm256_blendv_ps(x, _mm256_set1_ps(-104.0f), _mm256_cmp_ps(x, _mm256_set1_ps(FL_EXPF_LO), _CMP_LT_OQ));
}

static inline flv flv_exp(flv x)
{
    flv xc = _mm256_blendv_ps(x, _mm256_set1_ps(89.0f), _mm256_cmp_ps(x, _mm256_set1_ps(FL_EXPF_HI), _CMP_GT_OQ));
    flv n, r = fl_avx2_reduce_(fl_avx2_clamp_lo_(xc), &n);
    flv y = fl_avx2_ldexp_(fl_avx2_poly7_(r), n);
    return _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

/* log(x) + c (c = 0 for log; log1p folds its correction in), as fl_logf_core_s */
static inline flv fl_log_core_(flv x, flv c)
{
    flv sub = _mm256_cmp_ps(x, _mm256_set1_ps(1.17549435e-38f), _CMP_LT_OQ);
    flv xs = _mm256_blendv_ps(x, _mm256_mul_ps(x, _mm256_set1_ps(8388608.0f)), sub);
    __m256i u = _mm256_castps_si256(xs);
    __m256i e = _mm256_sub_epi32(_mm256_and_si256(_mm256_srli_epi32(u, 23), _mm256_set1_epi32(0xff)),
                                 _mm256_set1_epi32(126));
    flv m = _mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(u, _mm256_set1_epi32(0x007fffff)),
                                                _mm256_set1_epi32(0x3f000000)));
    flv small = _mm256_cmp_ps(m, _mm256_set1_ps(FL_SQRTH_F), _CMP_LT_OQ);
    e = _mm256_add_epi32(e, _mm256_castps_si256(small)); /* mask lanes are -1 */
    m = _mm256_blendv_ps(m, _mm256_add_ps(m, m), small);
    flv t = _mm256_sub_ps(m, _mm256_set1_ps(1.0f));
    flv z = _mm256_mul_ps(t, t);
    flv p = _mm256_set1_ps(7.0376836292e-2f);
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.1514610310e-1f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.1676998740e-1f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.2420140846e-1f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.4249322787e-1f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.6668057665e-1f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(2.0000714765e-1f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-2.4999993993e-1f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(3.3333331174e-1f));
    flv fe = _mm256_sub_ps(_mm256_cvtepi32_ps(e), _mm256_and_ps(sub, _mm256_set1_ps(23.0f)));
    flv y = _mm256_mul_ps(_mm256_mul_ps(p, t), z);
    y = _mm256_add_ps(y, _mm256_fmadd_ps(fe, _mm256_set1_ps(-2.12194440e-4f), c));
    y = _mm256_fnmadd_ps(_mm256_set1_ps(0.5f), z, y);
    y = _mm256_add_ps(t, y);
    y = _mm256_fmadd_ps(fe, _mm256_set1_ps(0.693359375f), y);
    flv zero = _mm256_setzero_ps();
    y = _mm256_blendv_ps(y, _mm256_set1_ps(-INFINITY), _mm256_cmp_ps(x, zero, _CMP_EQ_OQ));
    y = _mm256_blendv_ps(y, _mm256_set1_ps(NAN), _mm256_cmp_ps(x, zero, _CMP_LT_OQ));
    y = _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, _mm256_set1_ps(INFINITY), _CMP_EQ_OQ));
    return _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

/* Is some lane of x below FL_EXPF_NORMAL_LO (where the x <= 0 exponentials need their clamp
 * and the subnormal results' scaling)? A nan lane is not. */
static inline int fl_avx2_any_below_normal_(flv x)
{
    return _mm256_movemask_ps(_mm256_cmp_ps(x, _mm256_set1_ps(FL_EXPF_NORMAL_LO), _CMP_LT_OQ));
}

/* Is every lane of x below FL_EXPF_NORMAL_LO (the movemask `below`) also below FL_EXPF_LO,
 * where the exponential is 0 (masked logits, -inf)? *zero receives those lanes. Such a vector
 * takes the normal path with those lanes zeroed: the same bits as the general path's clamp and
 * subnormal-safe scaling, at a fraction of their cost (a row of masked logits has a -inf lane
 * in nearly every vector). A nan lane is in neither mask. */
static inline int fl_avx2_only_zero_below_(flv x, int below, flv *zero)
{
    *zero = _mm256_cmp_ps(x, _mm256_set1_ps(FL_EXPF_LO), _CMP_LT_OQ);
    return _mm256_movemask_ps(*zero) == below;
}

/* flv_exp for x <= 0 (a shift by the row's max): no upper clamp. A vector whose lanes are all
 * at or above FL_EXPF_NORMAL_LO (the common case) takes flv_exp_neg_normal's path, the same
 * bits without the clamp and with 2^n as one exponent-field multiplication (exact: the result
 * is normal): the clamp and the two-step scaling of the general path were 13 of its 30
 * vector operations (sigmoid 8192x1000, callgrind: see the commit). */
static inline flv flv_exp_neg(flv x)
{
    flv n, r, zero;
    int below = fl_avx2_any_below_normal_(x);
    if (!below) {
        r = fl_avx2_reduce_(x, &n);
        return fl_avx2_scale_normal_(fl_avx2_poly7_(r), n);
    }
    if (fl_avx2_only_zero_below_(x, below, &zero)) {
        r = fl_avx2_reduce_(_mm256_blendv_ps(x, _mm256_setzero_ps(), zero), &n);
        return _mm256_andnot_ps(zero, fl_avx2_scale_normal_(fl_avx2_poly7_(r), n));
    }
    r = fl_avx2_reduce_(fl_avx2_clamp_lo_(x), &n);
    return fl_avx2_ldexp_(fl_avx2_poly7_(r), n);
}

/* flv_exp_neg and flv_exp_neg_fast for x in [FL_EXPF_NORMAL_LO, 0]: the same values, without
 * the clamp, 2^n applied as one exponent-field multiplication (the result is normal) */
static inline flv flv_exp_neg_normal(flv x)
{
    flv n, r = fl_avx2_reduce_(x, &n);
    return fl_avx2_scale_normal_(fl_avx2_poly7_(r), n);
}
static inline flv flv_exp_neg_fast_normal(flv x)
{
    flv n, r = fl_avx2_reduce_(x, &n);
    return fl_avx2_scale_normal_(fl_avx2_poly5_(r), n);
}

/* exp(x) * 2^-sn, as fl_expf_shift_s and fl_expf_fast_shift_s (a normal result) */
static inline flv flv_exp_shift_normal(flv x, flv sn)
{
    flv n, r = fl_avx2_reduce_(x, &n);
    return fl_avx2_scale_normal_(fl_avx2_poly7_(r), _mm256_sub_ps(n, sn));
}
static inline flv flv_exp_fast_shift_normal(flv x, flv sn)
{
    flv n, r = fl_avx2_reduce_(x, &n);
    return fl_avx2_scale_normal_(fl_avx2_poly5_(r), _mm256_sub_ps(n, sn));
}

/* flv_exp_neg with the degree-5 polynomial (FL_EXPF5_C1..C5), its common case likewise */
static inline flv flv_exp_neg_fast(flv x)
{
    flv n, r, zero;
    int below = fl_avx2_any_below_normal_(x);
    if (!below) {
        r = fl_avx2_reduce_(x, &n);
        return fl_avx2_scale_normal_(fl_avx2_poly5_(r), n);
    }
    if (fl_avx2_only_zero_below_(x, below, &zero)) {
        r = fl_avx2_reduce_(_mm256_blendv_ps(x, _mm256_setzero_ps(), zero), &n);
        return _mm256_andnot_ps(zero, fl_avx2_scale_normal_(fl_avx2_poly5_(r), n));
    }
    r = fl_avx2_reduce_(fl_avx2_clamp_lo_(x), &n);
    return fl_avx2_ldexp_(fl_avx2_poly5_(r), n);
}
/* The masked exponentials (fl_simd.h). A lane below the gap is zeroed by the exponent field
 * itself, without a comparison: its argument is raised to a floor where n - sn = -127 (d = -88
 * for the x <= 0 form: round(-88 log2 e) = -127; (sn - 127) ln2 for the shifted one), so the
 * scale's biased exponent is 0, the factor +0 and the result +0. Normal lanes lie above the
 * floor and keep their bits. The gap's distance |t| goes into *gap (vminps: three operations
 * in all with the floor's max, where the general path's tests and selects took ten). */
static inline flv fl_avx2_gap_min_(flv t, flv gap) { return _mm256_min_ps(flv_abs(t), gap); }
static inline flv flv_exp_neg_fast_masked(flv d, flv *gap)
{
    *gap = fl_avx2_gap_min_(_mm256_sub_ps(d, _mm256_set1_ps(FL_EXPF_GAP_MID)), *gap);
    return flv_exp_neg_fast_normal(_mm256_max_ps(d, _mm256_set1_ps(-88.0f)));
}
static inline flv fl_avx2_shift_floor_(flv sn)
{
    return _mm256_mul_ps(_mm256_sub_ps(sn, _mm256_set1_ps(127.0f)), _mm256_set1_ps(0.693147181f));
}
static inline flv flv_exp_shift_masked(flv x, flv sn, flv lo, flv mid, flv *gap)
{
    (void)lo;
    *gap = fl_avx2_gap_min_(_mm256_sub_ps(x, mid), *gap);
    return flv_exp_shift_normal(_mm256_max_ps(x, fl_avx2_shift_floor_(sn)), sn);
}
static inline flv flv_exp_fast_shift_masked(flv x, flv sn, flv lo, flv mid, flv *gap)
{
    (void)lo;
    *gap = fl_avx2_gap_min_(_mm256_sub_ps(x, mid), *gap);
    return flv_exp_fast_shift_normal(_mm256_max_ps(x, fl_avx2_shift_floor_(sn)), sn);
}

static inline flv flv_log(flv x) { return fl_log_core_(x, _mm256_setzero_ps()); }

static inline flv flv_log1p(flv x)
{
    flv one = _mm256_set1_ps(1.0f);
    flv u = _mm256_add_ps(one, x);
    flv corr = _mm256_sub_ps(_mm256_sub_ps(u, one), x);
    flv y = fl_log_core_(u, _mm256_div_ps(flv_neg(corr), u));
    y = _mm256_blendv_ps(y, x, _mm256_cmp_ps(u, one, _CMP_EQ_OQ));
    y = _mm256_blendv_ps(y, _mm256_set1_ps(-INFINITY), _mm256_cmp_ps(u, _mm256_setzero_ps(), _CMP_EQ_OQ));
    return _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, _mm256_set1_ps(INFINITY), _CMP_EQ_OQ));
}

/* F16C quiets signalling NaNs; fl_half.h widens them unchanged, so clear the quiet bit again
 * in those lanes (halves with 0x7c00 < |h| < 0x7e00) to stay bit-identical with it. */
static inline flv flv_load_f16(const uint16_t *p)
{
    __m128i h = _mm_loadu_si128((const __m128i *)(const void *)p);
    __m256i a = _mm256_and_si256(_mm256_cvtepu16_epi32(h), _mm256_set1_epi32(0x7fff));
    __m256i snan = _mm256_and_si256(_mm256_cmpgt_epi32(a, _mm256_set1_epi32(0x7c00)),
                                    _mm256_cmpgt_epi32(_mm256_set1_epi32(0x7e00), a));
    return _mm256_andnot_ps(_mm256_castsi256_ps(_mm256_and_si256(snan, _mm256_set1_epi32(0x00400000))),
                            _mm256_cvtph_ps(h));
}
static inline flv flv_load_f16_arith(const uint16_t *p)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)p));
}
static inline void flv_store_f16(uint16_t *p, flv v)
{
    _mm_storeu_si128((__m128i *)(void *)p, _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
}
static inline void flv_stream_f16(uint16_t *p, flv v)
{
    _mm_stream_si128((__m128i *)(void *)p, _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
}
static inline flv flv_load_bf16(const uint16_t *p)
{
    __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}
static inline __m128i fl_avx2_narrow_bf16_(flv v)
{
    __m256i u = _mm256_castps_si256(v);
    __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)),
                                     _mm256_set1_epi32(0x7f800000));
    __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_add_epi32(u, _mm256_add_epi32(odd, _mm256_set1_epi32(0x7fff)));
    r = _mm256_blendv_epi8(r, _mm256_or_si256(u, _mm256_set1_epi32(0x00400000)), nan); /* quiet NaN */
    r = _mm256_srli_epi32(r, 16);
    /* pack 32 -> 16 within 128-bit halves (values <= 0xffff, no saturation), then gather halves */
    __m256i pk = _mm256_packus_epi32(r, r);
    pk = _mm256_permute4x64_epi64(pk, 0x08); /* qwords 0, 2 */
    return _mm256_castsi256_si128(pk);
}
static inline void flv_store_bf16(uint16_t *p, flv v) { _mm_storeu_si128((__m128i *)(void *)p, fl_avx2_narrow_bf16_(v)); }
static inline void flv_stream_bf16(uint16_t *p, flv v) { _mm_stream_si128((__m128i *)(void *)p, fl_avx2_narrow_bf16_(v)); }

/* half-precision order keys (fl_simd.h "flk"): 16 int16 lanes */
#define FL_KW 16
typedef __m256i flk;
static inline flk flk_load(const uint16_t *p) { return _mm256_loadu_si256((const __m256i *)(const void *)p); }
static inline flk flk_set1(int v) { return _mm256_set1_epi16((short)v); }
static inline flk flk_max(flk a, flk b) { return _mm256_max_epi16(a, b); }
static inline flk flk_mag(flk h) { return _mm256_and_si256(h, _mm256_set1_epi16(0x7fff)); }
/* vpsignw: -mag where h < 0, mag where h > 0, 0 where h = 0 (mag is 0 there too) */
static inline flk flk_key(flk h, flk mag) { return _mm256_sign_epi16(mag, h); }
static inline int fl_avx2_hmax_epi16_(__m128i m)
{
    m = _mm_max_epi16(m, _mm_srli_si128(m, 8));
    m = _mm_max_epi16(m, _mm_srli_si128(m, 4));
    m = _mm_max_epi16(m, _mm_srli_si128(m, 2));
    return (int)(int16_t)_mm_extract_epi16(m, 0);
}
static inline int flk_hmax(flk a)
{
    return fl_avx2_hmax_epi16_(_mm_max_epi16(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1)));
}

static inline int flk_any_gt(flk a, flk b) { return _mm256_movemask_epi8(_mm256_cmpgt_epi16(a, b)) != 0; }

#endif
