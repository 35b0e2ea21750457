/* simd/scalar.h: the one-lane implementation of fl_simd.h, portable C11.
 * It is the twin every vector path is tested against, so it uses the same algorithms. */
#ifndef FL_SIMD_SCALAR_H
#define FL_SIMD_SCALAR_H

#include <stdint.h>
#include "../fl_scalar_math.h"
#include "../fl_half.h"

#define FL_W 1
typedef float flv;

static inline flv flv_set1(float a) { return a; }
static inline flv flv_load(const float *p) { return *p; }
static inline void flv_store(float *p, flv v) { *p = v; }
static inline void flv_stream(float *p, flv v) { *p = v; }
static inline void fl_stream_fence(void) {}
static inline flv flv_load_part(const float *p, int64_t n, float fill) { return n > 0 ? *p : fill; }
static inline void flv_store_part(float *p, flv v, int64_t n) { if (n > 0) *p = v; }
static inline flv flv_add(flv a, flv b) { return a + b; }
static inline flv flv_sub(flv a, flv b) { return a - b; }
static inline flv flv_mul(flv a, flv b) { return a * b; }
static inline flv flv_div(flv a, flv b) { return a / b; }
/* max/min that propagate NaN, like the reductions need */
static inline flv flv_max(flv a, flv b) { return (a != a || a > b) ? a : b; }
/* for operands that are not NaN (cheaper where the ISA has a max instruction) */
static inline flv flv_max_ord(flv a, flv b) { return a > b ? a : b; }
static inline flv flv_min_ord(flv a, flv b) { return a < b ? a : b; }
static inline flv flv_nan_mark(flv acc, flv a, flv b) { return (a != a || b != b) ? NAN : acc; }
static inline flv flv_min(flv a, flv b) { return (a != a || a < b) ? a : b; }
/* not fused: a scalar fmaf would be a libm call on CPUs without FMA */
static inline flv flv_fma(flv a, flv b, flv c) { return a * b + c; }
/* the plain operations: a scalar build is the portable twin, not tuned for x86's assists */
static inline flv flv_mul_tiny(flv a, flv b) { return a * b; }
static inline flv flv_mul1p(flv p, flv e) { return p * e + p; }
static inline flv flv_abs(flv a) { return fl_u2f(fl_f2u(a) & 0x7fffffffu); }
static inline flv flv_neg(flv a) { return -a; }
static inline flv flv_zero_nan(flv a) { return a == a ? a : 0.0f; }
static inline flv flv_sel_neg(flv c, flv a, flv b) { return c < 0.0f ? a : b; }
static inline flv flv_zero_ge(flv a, flv b, flv e) { return a >= b ? 0.0f : e; }
static inline int flv_any_ge(flv a, flv b) { return a >= b; }
static inline unsigned flv_mask_ge(flv a, flv b) { return a >= b; }
static inline int flv_all_finite(flv a) { return fabsf(a) < INFINITY; }
static inline float flv_hmax(flv a) { return a; }
static inline double flv_hsum_d(flv a) { return (double)a; }
typedef double fl_dacc;
static inline fl_dacc fl_dacc_zero(void) { return 0.0; }
static inline fl_dacc fl_dacc_add(fl_dacc a, flv v) { return a + (double)v; }
static inline double fl_dacc_sum(fl_dacc a) { return a; }
static inline fl_dacc fl_dacc_add_prod(fl_dacc a, flv p, flv x, double m)
{
    double d = (double)x - m;
    return a + (double)p * (d < -1e300 ? -1e300 : d);
}
static inline void fl_dacc_store(double *p, fl_dacc a) { *p = a; }
static inline flv flv_gather(const float *p, const int32_t *idx) { return p[idx[0]]; }
static inline int flv_store_compress(float *p, flv v, unsigned mask)
{
    if (!(mask & 1u)) return 0;
    *p = v;
    return 1;
}
/* one lane: a 1 x 1 transposition changes nothing */
static inline void flv_transpose(flv r[1]) { (void)r; }
/* few-class tiles by shuffles (avx512.h): not on this path, whose tiles gather (0: nothing done) */
static inline int flv_tile_from_rows(const float *p, int64_t c, float *t) { (void)p; (void)c; (void)t; return 0; }
static inline int flv_tile_to_rows(float *p, int64_t c, const float *t) { (void)p; (void)c; (void)t; return 0; }
static inline void flv_load_deint2(const float *p, flv *even, flv *odd) { *even = p[0]; *odd = p[1]; }
static inline void flv_store_int2(float *p, flv even, flv odd) { p[0] = even; p[1] = odd; }
static inline flv flv_pow2_floor(flv a) { return fl_u2f(fl_f2u(a) & 0x7f800000u); }
static inline flv flv_exp(flv a) { return fl_expf_s(a); }
static inline flv flv_exp_neg(flv a) { return fl_expf_s(a); }
static inline flv flv_exp_neg_fast(flv a) { return fl_expf_fast_s(a); }
static inline flv flv_exp_neg_fast_normal(flv a) { return fl_expf_fast_s(a); }
static inline flv flv_exp_neg_normal(flv a) { return fl_expf_s(a); }
static inline flv flv_exp_shift_normal(flv a, flv sn) { return fl_expf_shift_s(a, sn); }
static inline flv flv_exp_fast_shift_normal(flv a, flv sn) { return fl_expf_fast_shift_s(a, sn); }
/* the masked exponentials: the general ones, but below the normal range 0 (the gap's lanes
 * are reported, as on the vector paths) */
static inline flv fl_gap_min_s(flv t, flv gap)
{
    t = flv_abs(t);
    return t < gap ? t : gap;
}
static inline flv flv_exp_neg_fast_masked(flv d, flv *gap)
{
    *gap = fl_gap_min_s(d - FL_EXPF_GAP_MID, *gap);
    return d >= FL_EXPF_NORMAL_LO ? fl_expf_fast_s(d) : 0.0f;
}
static inline flv flv_exp_shift_masked(flv x, flv sn, flv lo, flv mid, flv *gap)
{
    *gap = fl_gap_min_s(x - mid, *gap);
    return x >= lo ? fl_expf_shift_s(x, sn) : 0.0f;
}
static inline flv flv_exp_fast_shift_masked(flv x, flv sn, flv lo, flv mid, flv *gap)
{
    *gap = fl_gap_min_s(x - mid, *gap);
    return x >= lo ? fl_expf_fast_shift_s(x, sn) : 0.0f;
}
static inline flv flv_log(flv a) { return fl_logf_s(a); }
static inline flv flv_log1p(flv a) { return fl_log1pf_s(a); }
static inline flv flv_load_f16(const uint16_t *p) { return fl_f16_to_f32(*p); }
static inline flv flv_load_bf16(const uint16_t *p) { return fl_bf16_to_f32(*p); }
static inline flv flv_load_f16_arith(const uint16_t *p) { return fl_f16_to_f32(*p); }
static inline void flv_store_f16(uint16_t *p, flv v) { *p = fl_f32_to_f16(v); }
static inline void flv_store_bf16(uint16_t *p, flv v) { *p = fl_f32_to_bf16(v); }
static inline void flv_stream_f16(uint16_t *p, flv v) { flv_store_f16(p, v); }
static inline void flv_stream_bf16(uint16_t *p, flv v) { flv_store_bf16(p, v); }

/* half-precision order keys (fl_simd.h "flk"): one key in an int32 (the bits as loaded,
 * 0..0xffff, until flk_key gives the signed key) */
#define FL_KW 1
typedef int32_t flk;
static inline flk flk_load(const uint16_t *p) { return (int32_t)*p; }
static inline flk flk_set1(int v) { return v; }
static inline flk flk_max(flk a, flk b) { return a > b ? a : b; }
static inline flk flk_mag(flk h) { return h & 0x7fff; }
static inline flk flk_key(flk h, flk mag) { return (h & 0x8000) ? -mag : mag; }
static inline int flk_hmax(flk a) { return (int)a; }
static inline int flk_any_gt(flk a, flk b) { return a > b; }

#endif
