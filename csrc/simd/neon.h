/* simd/neon.h: the 4-lane AArch64 Advanced SIMD implementation of fl_simd.h.
 * exp/log/log1p mirror fl_scalar_math.h step by step (same reduction, same coefficients, the
 * Horner steps as fused multiply-adds). Partial loads/stores go lane by lane through a
 * stack buffer, so memory beyond n lanes is never touched. */
#ifndef FL_SIMD_NEON_H
#define FL_SIMD_NEON_H

#include <stdint.h>
#if defined(_MSC_VER) && !defined(__clang__)
#include <arm64_neon.h>
#else
#include <arm_neon.h>
#endif
#include "../fl_scalar_math.h"
#include "../fl_half.h"

#if !defined(_MSC_VER) && !defined(__aarch64__)
#error "simd/neon.h needs AArch64"
#endif

#define FL_W 4
typedef float32x4_t flv;

static inline flv flv_set1(float a) { return vdupq_n_f32(a); }
static inline flv flv_load(const float *p) { return vld1q_f32(p); }
static inline void flv_store(float *p, flv v) { vst1q_f32(p, v); }
/* no portable non-temporal store on AArch64 NEON: an ordinary store */
static inline void flv_stream(float *p, flv v) { vst1q_f32(p, v); }
static inline void fl_stream_fence(void) {}
static inline flv flv_load_part(const float *p, int64_t n, float fill)
{
    float b[4] = {fill, fill, fill, fill};
    for (int64_t i = 0; i < n && i < 4; i++) b[i] = p[i];
    return vld1q_f32(b);
}
static inline void flv_store_part(float *p, flv v, int64_t n)
{
    float b[4];
    vst1q_f32(b, v);
    for (int64_t i = 0; i < n && i < 4; i++) p[i] = b[i];
}
static inline flv flv_add(flv a, flv b) { return vaddq_f32(a, b); }
static inline flv flv_sub(flv a, flv b) { return vsubq_f32(a, b); }
static inline flv flv_mul(flv a, flv b) { return vmulq_f32(a, b); }
static inline flv flv_div(flv a, flv b) { return vdivq_f32(a, b); }
static inline uint32x4_t fl_neon_isnan_(flv a) { return vmvnq_u32(vceqq_f32(a, a)); }
/* (a != a || a > b) ? a : b exactly as scalar.h (fmax would differ on +-0 and on which NaN) */
static inline flv flv_max(flv a, flv b) { return vbslq_f32(vorrq_u32(fl_neon_isnan_(a), vcgtq_f32(a, b)), a, b); }
/* a > b ? a : b for operands that are not NaN (vmaxq_f32 would differ on +-0) */
static inline flv flv_max_ord(flv a, flv b) { return vbslq_f32(vcgtq_f32(a, b), a, b); }
static inline flv flv_min_ord(flv a, flv b) { return vbslq_f32(vcltq_f32(a, b), a, b); }
static inline flv flv_nan_mark(flv acc, flv a, flv b)
{
    uint32x4_t ord = vandq_u32(vceqq_f32(a, a), vceqq_f32(b, b));
    return vreinterpretq_f32_u32(vorrq_u32(vreinterpretq_u32_f32(acc), vmvnq_u32(ord)));
}
static inline flv flv_min(flv a, flv b) { return vbslq_f32(vorrq_u32(fl_neon_isnan_(a), vcltq_f32(a, b)), a, b); }
static inline flv flv_fma(flv a, flv b, flv c) { return vfmaq_f32(c, a, b); }
/* the plain operations: AArch64 cores take subnormals at full speed */
static inline flv flv_mul_tiny(flv a, flv b) { return vmulq_f32(a, b); }
static inline flv flv_mul1p(flv p, flv e) { return vfmaq_f32(p, p, e); }
static inline flv flv_abs(flv a) { return vabsq_f32(a); }
static inline flv flv_neg(flv a) { return vnegq_f32(a); }
static inline flv flv_zero_nan(flv a) { return vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(a), vceqq_f32(a, a))); }
static inline flv flv_sel_neg(flv c, flv a, flv b) { return vbslq_f32(vcltq_f32(c, vdupq_n_f32(0.0f)), a, b); }
static inline flv flv_zero_ge(flv a, flv b, flv e) { return vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(e), vcgeq_f32(a, b))); }
static inline int flv_any_ge(flv a, flv b) { return vmaxvq_u32(vcgeq_f32(a, b)) != 0; }
static inline unsigned flv_mask_ge(flv a, flv b)
{
    static const uint32_t bit[4] = {1u, 2u, 4u, 8u};
    return vaddvq_u32(vandq_u32(vcgeq_f32(a, b), vld1q_u32(bit)));
}
static inline int flv_all_finite(flv a) { return vminvq_u32(vcltq_f32(vabsq_f32(a), vdupq_n_f32(INFINITY))) != 0; }
static inline float flv_hmax(flv a)
{
    flv m = flv_max(a, vextq_f32(a, a, 2));
    m = flv_max(m, vextq_f32(m, m, 1));
    return vgetq_lane_f32(m, 0);
}
static inline double flv_hsum_d(flv a)
{
    float64x2_t s = vaddq_f64(vcvt_f64_f32(vget_low_f32(a)), vcvt_high_f64_f32(a));
    return vaddvq_f64(s);
}
#define FL_NEON_C(v) vdupq_n_f32(v)

/* FL_W float64 lanes accumulating float32 vectors: the row sums of exponentials */
typedef struct { float64x2_t lo, hi; } fl_dacc;
static inline fl_dacc fl_dacc_zero(void) { fl_dacc a = {vdupq_n_f64(0.0), vdupq_n_f64(0.0)}; return a; }
static inline fl_dacc fl_dacc_add(fl_dacc a, flv v)
{
    a.lo = vaddq_f64(a.lo, vcvt_f64_f32(vget_low_f32(v)));
    a.hi = vaddq_f64(a.hi, vcvt_high_f64_f32(v));
    return a;
}
static inline double fl_dacc_sum(fl_dacc a) { return vaddvq_f64(vaddq_f64(a.lo, a.hi)); }
/* a + (double)p * max((double)x - m, -1e300), lane by lane, each step rounded once */
static inline float64x2_t fl_neon_prod_(float32x2_t p, float32x2_t x, float64x2_t m)
{
    float64x2_t d = vmaxq_f64(vsubq_f64(vcvt_f64_f32(x), m), vdupq_n_f64(-1e300));
    return vmulq_f64(vcvt_f64_f32(p), d);
}
static inline fl_dacc fl_dacc_add_prod(fl_dacc a, flv p, flv x, double m)
{
    float64x2_t vm = vdupq_n_f64(m);
    a.lo = vaddq_f64(a.lo, fl_neon_prod_(vget_low_f32(p), vget_low_f32(x), vm));
    a.hi = vaddq_f64(a.hi, fl_neon_prod_(vget_high_f32(p), vget_high_f32(x), vm));
    return a;
}
static inline void fl_dacc_store(double *p, fl_dacc a) { vst1q_f64(p, a.lo); vst1q_f64(p + 2, a.hi); }
static inline flv flv_gather(const float *p, const int32_t *idx)
{
    float t[4] = {p[idx[0]], p[idx[1]], p[idx[2]], p[idx[3]]};
    return vld1q_f32(t);
}
static inline int flv_store_compress(float *p, flv v, unsigned mask)
{
    float b[4];
    int n = 0;
    vst1q_f32(b, v);
    for (int j = 0; j < 4; j++)
        if (mask >> j & 1u) p[n++] = b[j];
    return n;
}
/* r[j] lane k -> r[k] lane j (4 x 4): two transposed pairs, their halves recombined */
static inline void flv_transpose(flv r[4])
{
    float32x4x2_t a = vtrnq_f32(r[0], r[1]), b = vtrnq_f32(r[2], r[3]);
    r[0] = vcombine_f32(vget_low_f32(a.val[0]), vget_low_f32(b.val[0]));
    r[1] = vcombine_f32(vget_low_f32(a.val[1]), vget_low_f32(b.val[1]));
    r[2] = vcombine_f32(vget_high_f32(a.val[0]), vget_high_f32(b.val[0]));
    r[3] = vcombine_f32(vget_high_f32(a.val[1]), vget_high_f32(b.val[1]));
}
/* Few-class tiles (fl_tile.h): 4 rows of 3 or 4 classes by the structure loads and stores
 * that (de)interleave them (vld3q/vld4q, vst3q/vst4q); other class counts: 0, nothing done. */
static inline int flv_tile_from_rows(const float *p, int64_t c, float *t)
{
    if (c == 3) {
        float32x4x3_t v = vld3q_f32(p);
        for (int k = 0; k < 3; k++) vst1q_f32(t + 4 * k, v.val[k]);
        return 1;
    }
    if (c == 4) {
        float32x4x4_t v = vld4q_f32(p);
        for (int k = 0; k < 4; k++) vst1q_f32(t + 4 * k, v.val[k]);
        return 1;
    }
    return 0;
}
static inline int flv_tile_to_rows(float *p, int64_t c, const float *t)
{
    if (c == 3) {
        float32x4x3_t v = {{vld1q_f32(t), vld1q_f32(t + 4), vld1q_f32(t + 8)}};
        vst3q_f32(p, v);
        return 1;
    }
    if (c == 4) {
        float32x4x4_t v = {{vld1q_f32(t), vld1q_f32(t + 4), vld1q_f32(t + 8), vld1q_f32(t + 12)}};
        vst4q_f32(p, v);
        return 1;
    }
    return 0;
}
static inline void flv_load_deint2(const float *p, flv *even, flv *odd)
{
    float32x4x2_t v = vld2q_f32(p);
    *even = v.val[0];
    *odd = v.val[1];
}
static inline void flv_store_int2(float *p, flv even, flv odd)
{
    float32x4x2_t v = {{even, odd}};
    vst2q_f32(p, v);
}
static inline flv flv_pow2_floor(flv a) { return vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(a), vdupq_n_u32(0x7f800000u))); }

/* The pieces of the exponentials: x = n*ln2 + r (Cody-Waite) and p * 2^n as two
 * exponent-field multiplications whose halves are both normal (n in [-150, 128]; NaN lanes give
 * n = 0, and the callers put the NaN back) */
static inline flv fl_neon_reduce_(flv x, flv *n)
{
    *n = vrndnq_f32(vmulq_f32(x, FL_NEON_C(FL_LOG2E_F)));
    flv r = vfmsq_f32(x, *n, FL_NEON_C(FL_LN2_HI_F));
    return vfmsq_f32(r, *n, FL_NEON_C(FL_LN2_LO_F));
}
static inline flv fl_neon_scale2_(flv p, flv n)
{
    int32x4_t ni = vcvtq_s32_f32(n);
    int32x4_t n1 = vshrq_n_s32(vaddq_s32(ni, vreinterpretq_s32_u32(vshrq_n_u32(vreinterpretq_u32_s32(ni), 31))), 1);
    int32x4_t n2 = vsubq_s32(ni, n1);
    int32x4_t bias = vdupq_n_s32(127);
    flv s1 = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(n1, bias), 23));
    flv s2 = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(n2, bias), 23));
    return vmulq_f32(vmulq_f32(p, s1), s2);
}

/* exp(r) by fl_expf_s's degree-7 polynomial and by the degree-5 one of FL_EXPF5_C1..C5 */
static inline flv fl_neon_poly7_(flv r)
{
    flv p = FL_NEON_C(1.9875691500e-4f);
    p = vfmaq_f32(FL_NEON_C(1.3981999507e-3f), p, r);
    p = vfmaq_f32(FL_NEON_C(8.3334519073e-3f), p, r);
    p = vfmaq_f32(FL_NEON_C(4.1665795894e-2f), p, r);
    p = vfmaq_f32(FL_NEON_C(1.6666665459e-1f), p, r);
    p = vfmaq_f32(FL_NEON_C(5.0000001201e-1f), p, r);
    return vaddq_f32(vfmaq_f32(r, p, vmulq_f32(r, r)), FL_NEON_C(1.0f));
}
static inline flv fl_neon_poly5_(flv r)
{
    flv p = vfmaq_f32(FL_NEON_C(FL_EXPF5_C4), FL_NEON_C(FL_EXPF5_C5), r);
    p = vfmaq_f32(FL_NEON_C(FL_EXPF5_C3), p, r);
    p = vfmaq_f32(FL_NEON_C(FL_EXPF5_C2), p, r);
    p = vfmaq_f32(FL_NEON_C(FL_EXPF5_C1), p, r);
    return vfmaq_f32(FL_NEON_C(1.0f), p, r);
}

static inline flv flv_exp(flv x)
{
    flv xc = vbslq_f32(vcgtq_f32(x, FL_NEON_C(FL_EXPF_HI)), FL_NEON_C(89.0f), x);
    xc = vbslq_f32(vcltq_f32(xc, FL_NEON_C(FL_EXPF_LO)), FL_NEON_C(-104.0f), xc);
    flv n, r = fl_neon_reduce_(xc, &n);
    return vbslq_f32(fl_neon_isnan_(x), x, fl_neon_scale2_(fl_neon_poly7_(r), n));
}

/* log(x) + c (c = 0 for log; log1p folds its correction in), as fl_logf_core_s */
static inline flv fl_log_core_(flv x, flv c)
{
    uint32x4_t sub = vcltq_f32(x, FL_NEON_C(1.17549435e-38f));
    flv xs = vbslq_f32(sub, vmulq_f32(x, FL_NEON_C(8388608.0f)), x);
    uint32x4_t u = vreinterpretq_u32_f32(xs);
    int32x4_t e = vsubq_s32(vreinterpretq_s32_u32(vandq_u32(vshrq_n_u32(u, 23), vdupq_n_u32(0xff))), vdupq_n_s32(126));
    flv m = vreinterpretq_f32_u32(vorrq_u32(vandq_u32(u, vdupq_n_u32(0x007fffffu)), vdupq_n_u32(0x3f000000u)));
    uint32x4_t small = vcltq_f32(m, FL_NEON_C(FL_SQRTH_F));
    e = vaddq_s32(e, vreinterpretq_s32_u32(small)); /* mask lanes are -1 */
    m = vbslq_f32(small, vaddq_f32(m, m), m);
    flv t = vsubq_f32(m, FL_NEON_C(1.0f));
    flv z = vmulq_f32(t, t);
    flv p = FL_NEON_C(7.0376836292e-2f);
    p = vfmaq_f32(FL_NEON_C(-1.1514610310e-1f), p, t);
    p = vfmaq_f32(FL_NEON_C(1.1676998740e-1f), p, t);
    p = vfmaq_f32(FL_NEON_C(-1.2420140846e-1f), p, t);
    p = vfmaq_f32(FL_NEON_C(1.4249322787e-1f), p, t);
    p = vfmaq_f32(FL_NEON_C(-1.6668057665e-1f), p, t);
    p = vfmaq_f32(FL_NEON_C(2.0000714765e-1f), p, t);
    p = vfmaq_f32(FL_NEON_C(-2.4999993993e-1f), p, t);
    p = vfmaq_f32(FL_NEON_C(3.3333331174e-1f), p, t);
    flv fe = vsubq_f32(vcvtq_f32_s32(e), vreinterpretq_f32_u32(vandq_u32(sub, vreinterpretq_u32_f32(FL_NEON_C(23.0f)))));
    flv y = vmulq_f32(vmulq_f32(p, t), z);
    y = vaddq_f32(y, vfmaq_f32(c, fe, FL_NEON_C(-2.12194440e-4f)));
    y = vfmsq_f32(y, FL_NEON_C(0.5f), z);
    y = vaddq_f32(t, y);
    y = vfmaq_f32(y, fe, FL_NEON_C(0.693359375f));
    flv zero = vdupq_n_f32(0.0f);
    y = vbslq_f32(vceqq_f32(x, zero), FL_NEON_C(-INFINITY), y);
    y = vbslq_f32(vcltq_f32(x, zero), FL_NEON_C(NAN), y);
    y = vbslq_f32(vceqq_f32(x, FL_NEON_C(INFINITY)), x, y);
    return vbslq_f32(fl_neon_isnan_(x), x, y);
}

/* flv_exp for x <= 0: the general one */
static inline flv flv_exp_neg(flv x) { return flv_exp(x); }

/* flv_exp_neg with the degree-5 polynomial (FL_EXPF5_C1..C5) */
static inline flv flv_exp_neg_fast(flv x)
{
    flv xc = vbslq_f32(vcltq_f32(x, FL_NEON_C(FL_EXPF_LO)), FL_NEON_C(-104.0f), x);
    flv n, r = fl_neon_reduce_(xc, &n);
    return vbslq_f32(fl_neon_isnan_(x), x, fl_neon_scale2_(fl_neon_poly5_(r), n));
}

/* flv_exp_neg and flv_exp_neg_fast for x in [FL_EXPF_NORMAL_LO, 0] (the same values) */
static inline flv flv_exp_neg_normal(flv x) { return flv_exp_neg(x); }
static inline flv flv_exp_neg_fast_normal(flv x) { return flv_exp_neg_fast(x); }

/* exp(x) * 2^-sn, as fl_expf_shift_s and fl_expf_fast_shift_s (a normal result) */
static inline flv flv_exp_shift_normal(flv x, flv sn)
{
    flv n, r = fl_neon_reduce_(x, &n);
    return fl_neon_scale2_(fl_neon_poly7_(r), vsubq_f32(n, sn));
}
static inline flv flv_exp_fast_shift_normal(flv x, flv sn)
{
    flv n, r = fl_neon_reduce_(x, &n);
    return fl_neon_scale2_(fl_neon_poly5_(r), vsubq_f32(n, sn));
}

/* the masked exponentials (fl_simd.h): the normal ones of the argument raised to lo, the lanes
 * below lo zeroed, the gap's distance folded into *gap */
static inline flv fl_neon_gap_min_(flv t, flv gap) { return vminq_f32(vabsq_f32(t), gap); }
static inline flv flv_exp_neg_fast_masked(flv d, flv *gap)
{
    flv lo = FL_NEON_C(FL_EXPF_NORMAL_LO);
    *gap = fl_neon_gap_min_(vsubq_f32(d, FL_NEON_C(FL_EXPF_GAP_MID)), *gap);
    return vbslq_f32(vcgeq_f32(d, lo), flv_exp_neg_fast_normal(vmaxq_f32(d, lo)), vdupq_n_f32(0.0f));
}
static inline flv flv_exp_shift_masked(flv x, flv sn, flv lo, flv mid, flv *gap)
{
    *gap = fl_neon_gap_min_(vsubq_f32(x, mid), *gap);
    return vbslq_f32(vcgeq_f32(x, lo), flv_exp_shift_normal(vmaxq_f32(x, lo), sn), vdupq_n_f32(0.0f));
}
static inline flv flv_exp_fast_shift_masked(flv x, flv sn, flv lo, flv mid, flv *gap)
{
    *gap = fl_neon_gap_min_(vsubq_f32(x, mid), *gap);
    return vbslq_f32(vcgeq_f32(x, lo), flv_exp_fast_shift_normal(vmaxq_f32(x, lo), sn), vdupq_n_f32(0.0f));
}

static inline flv flv_log(flv x) { return fl_log_core_(x, vdupq_n_f32(0.0f)); }

static inline flv flv_log1p(flv x)
{
    flv one = FL_NEON_C(1.0f);
    flv u = vaddq_f32(one, x);
    flv corr = vsubq_f32(vsubq_f32(u, one), x);
    flv y = fl_log_core_(u, vdivq_f32(vnegq_f32(corr), u));
    y = vbslq_f32(vceqq_f32(u, one), x, y);
    y = vbslq_f32(vceqq_f32(u, vdupq_n_f32(0.0f)), FL_NEON_C(-INFINITY), y);
    return vbslq_f32(vceqq_f32(x, FL_NEON_C(INFINITY)), x, y);
}

/* FCVT quiets signalling NaNs; fl_half.h widens them unchanged, so clear the quiet bit again
 * in those lanes (halves with 0x7c00 < |h| < 0x7e00) to stay bit-identical with it. */
static inline flv flv_load_f16(const uint16_t *p)
{
    uint16x4_t h = vld1_u16(p);
    uint32x4_t a = vmovl_u16(vand_u16(h, vdup_n_u16(0x7fff)));
    uint32x4_t snan = vandq_u32(vcgtq_u32(a, vdupq_n_u32(0x7c00)), vcltq_u32(a, vdupq_n_u32(0x7e00)));
    uint32x4_t f = vreinterpretq_u32_f32(vcvt_f32_f16(vreinterpret_f16_u16(h)));
    return vreinterpretq_f32_u32(vbicq_u32(f, vandq_u32(snan, vdupq_n_u32(0x00400000u))));
}
static inline flv flv_load_f16_arith(const uint16_t *p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }
static inline void flv_store_f16(uint16_t *p, flv v) { vst1_u16(p, vreinterpret_u16_f16(vcvt_f16_f32(v))); }
static inline void flv_stream_f16(uint16_t *p, flv v) { flv_store_f16(p, v); }
static inline flv flv_load_bf16(const uint16_t *p) { return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16)); }
static inline void flv_store_bf16(uint16_t *p, flv v)
{
    uint32x4_t u = vreinterpretq_u32_f32(v);
    uint32x4_t nan = vcgtq_u32(vandq_u32(u, vdupq_n_u32(0x7fffffffu)), vdupq_n_u32(0x7f800000u));
    uint32x4_t odd = vandq_u32(vshrq_n_u32(u, 16), vdupq_n_u32(1));
    uint32x4_t r = vaddq_u32(u, vaddq_u32(odd, vdupq_n_u32(0x7fffu)));
    r = vbslq_u32(nan, vorrq_u32(u, vdupq_n_u32(0x00400000u)), r); /* quiet NaN */
    vst1_u16(p, vshrn_n_u32(r, 16));
}
static inline void flv_stream_bf16(uint16_t *p, flv v) { flv_store_bf16(p, v); }

/* half-precision order keys (fl_simd.h "flk"): 8 int16 lanes */
#define FL_KW 8
typedef int16x8_t flk;
static inline flk flk_load(const uint16_t *p) { return vreinterpretq_s16_u16(vld1q_u16(p)); }
static inline flk flk_set1(int v) { return vdupq_n_s16((int16_t)v); }
static inline flk flk_max(flk a, flk b) { return vmaxq_s16(a, b); }
static inline flk flk_mag(flk h) { return vandq_s16(h, vdupq_n_s16(0x7fff)); }
static inline flk flk_key(flk h, flk mag) { return vbslq_s16(vcltzq_s16(h), vnegq_s16(mag), mag); }
static inline int flk_hmax(flk a) { return (int)vmaxvq_s16(a); }
static inline int flk_any_gt(flk a, flk b) { return vmaxvq_u16(vcgtq_s16(a, b)) != 0; }

#endif
