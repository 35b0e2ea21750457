/* fl_half.h: IEEE binary16 and bfloat16 <-> float32 by bit manipulation (portable, exact
 * widening, round-to-nearest-even narrowing, NaN kept NaN). The SIMD paths use F16C/AVX-512
 * conversions, which give the same bits. float64 -> binary16/bfloat16 rounds once (through
 * float32 rounded to odd, see fl_f64_to_f32_odd). */
#ifndef FL_HALF_H
#define FL_HALF_H

#include <stdint.h>
#include <string.h>

static inline float fl_half_bits_f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t fl_half_f_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

static inline float fl_bf16_to_f32(uint16_t h) { return fl_half_bits_f((uint32_t)h << 16); }

static inline uint16_t fl_f32_to_bf16(float f)
{
    uint32_t u = fl_half_f_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float fl_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0x1fu) return fl_half_bits_f(sign | 0x7f800000u | (man << 13));
    if (exp != 0) return fl_half_bits_f(sign | ((exp + 112u) << 23) | (man << 13));
    /* zero or subnormal: man * 2^-24, exact in float */
    float v = (float)man * 5.9604644775390625e-8f;
    return sign ? -v : v;
}

static inline uint16_t fl_f32_to_f16(float f)
{
    uint32_t u = fl_half_f_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* rounds to >= 65520: inf */
    if (a >= 0x38800000u) { /* normal half */
        uint32_t r = a - 0x38000000u; /* rebias exponent 127 -> 15 */
        r += 0xfffu + ((r >> 13) & 1u);
        return (uint16_t)(sign | (r >> 13));
    }
    if (a < 0x33000000u) return sign; /* below half the smallest subnormal: 0 */
    /* subnormal half: shift the implicit-1 mantissa, round to nearest even */
    uint32_t e = a >> 23;
    uint32_t m = (a & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126u - e; /* 14..24 */
    uint32_t half = 1u << (shift - 1);
    uint32_t q = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1u);
    if (rem > half || (rem == half && (q & 1u))) q++;
    return (uint16_t)(sign | q);
}

/* x rounded to float32 "to odd": x itself when exact, else whichever of the two floats around
 * x has an odd last bit (its sticky bit records that x was not exact). Rounding this to nearest
 * in a format of p bits gives x correctly rounded whenever float32 has at least p + 2 bits
 * (Boldo and Melquiond, "Emulation of FMA and correctly rounded sums: proved algorithms using
 * rounding to odd", IEEE Trans. Computers 57(4), 2008): binary16 has 11 and bfloat16 8 against
 * float32's 24 over both their exponent ranges, and among the subnormals float32's spacing
 * (2^-149) is 2^-16 of bfloat16's.
 * Rounding float64 to float32 to nearest and then to half instead rounds twice: a value just
 * below a half-way point between two halves can land on that point and then round up. */
static inline float fl_f64_to_f32_odd(double x)
{
    float f = (float)x; /* to nearest; inf beyond the float range */
    if ((double)f == x || x != x) return f; /* exact, or NaN */
    uint32_t u = fl_half_f_bits(f);
    /* f rounded away from zero: step back to the float toward zero (sign-magnitude bits: one
       less in magnitude, across binades and from inf to FLT_MAX alike) */
    if (x > 0 ? (double)f > x : (double)f < x) u -= 1;
    return fl_half_bits_f(u | 1u);
}

static inline uint16_t fl_f64_to_f16(double x) { return fl_f32_to_f16(fl_f64_to_f32_odd(x)); }
static inline uint16_t fl_f64_to_bf16(double x) { return fl_f32_to_bf16(fl_f64_to_f32_odd(x)); }

#endif
