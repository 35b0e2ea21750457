/* fl_rsum.h: the one accumulator of every reduced sum (losses, score, their denominators): a
 * binned sum of doubles whose result does not depend on the order of the values, on how they
 * are split into partial states, or on the order in which the states are merged.
 *
 * Design (after the binned summation of Demmel, Ahrens and Nguyen, ReproBLAS, "Efficient
 * reproducible floating point summation and BLAS", 2016; written here from the algorithm):
 *
 * - A fixed global grid cuts the binary exponent range into FL_RSUM_NBINS bins of FL_RSUM_BITS
 *   = 48 bits: bin g holds the multiples of u_g = 2^(48g - 1074) (bin 0 reaches the smallest
 *   subnormal, bin 43 the largest double).
 * - A value x is cut into slices, one per bin, from the top: each slice is x's remainder
 *   rounded to the nearest multiple of u_g (ties to even), computed from that remainder
 *   alone. So the slice of x in bin g is a function of x and g only.
 * - A state keeps FL_RSUM_FOLD = 3 consecutive bins, a window whose top T is the lowest bin
 *   that can hold every value seen so far (|x| <= u_(T+1)/2: the slices above T are all 0),
 *   i.e. T is a function of max |x|. Each bin sums its slices exactly, as an integer count of
 *   u_g in two int64 words. Slices below the window are dropped.
 *   A larger value raises the window (the counts move down, the lowest ones are dropped): the
 *   counts are then exactly what the new window would have summed from the start. Merging two
 *   states aligns them to the higher window the same way and adds the counts. Integer sums are
 *   exact, so the state (its words, bit for bit) is a function of the multiset of values: any
 *   order, any split into partial states, any merge tree.
 * - Finalizing rounds the window's exact sum to the nearest double once (ties to even); a sum
 *   beyond the double range is +-inf; an exact zero is +0.0.
 * - Non-finite values do not enter the bins; a flag word remembers them, and the result is what
 *   a float sum would give whatever its order: NaN if any NaN or both +inf and -inf, else +-inf.
 *
 * Accuracy: the dropped slices are each at most u_(T-2)/2 <= 2^-96 max|x| (T > 2; with T = 2
 * nothing is ever dropped), so the result is within 0.5 ulp + n * 2^-96 * max|x| of the exact
 * sum of n values. For non-negative values (the per-row losses) that is a relative error
 * below 2^-53 + n * 2^-96: better than the compensated (Neumaier) sums it replaces, whose bound
 * is about 2^-52 (two roundings), for any n below 2^43. Typically the result is math.fsum's.
 * Capacity: 2^48 values per state (each count holds 2^95 units, a slice at most 2^47).
 *
 * Cost: a deposit is a multiplication by the window's scale 2^(1074 - 48T) and, per bin, a
 * round to integer by the 1.5 * 2^52 trick (whose bit pattern holds the slice as an integer),
 * two exact operations and an integer addition. fl_rsum_add_f64s / fl_rsum_add_f32s deposit
 * arrays in runs of FL_RSUM_RUN values: one pass takes max|x| as an integer max of the bit
 * patterns, one sums the slices' bit patterns in uint64; both are integer reductions the
 * compiler vectorises (about 16 vector instructions per vector of doubles), and the run's
 * totals go into the int64 words once. fl_rsum_buf collects single values (one per row) in a
 * small buffer and deposits it as an array. fl_rsum_add deposits one value directly (about 40
 * scalar instructions).
 *
 * The state is FL_RSUM_WORDS int64 words (fl_rsum in fastlogits.h), exported as is: the
 * window top T, the flags, then per bin (top first) hi, lo with count = hi * 2^32 + lo and lo in
 * [0, 2^32) (one representation per count, so equal sums have equal words).
 *
 * Kernels include this header (one copy per ISA build); fl_rsum.c exports merging, finalizing
 * and depositing to the binding.
 */
#ifndef FL_RSUM_H
#define FL_RSUM_H

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "fastlogits.h"
#include "fl_scalar_math.h"

#define FL_RSUM_BITS 48
#define FL_RSUM_FOLD 3
#define FL_RSUM_NBINS 44
#define FL_RSUM_TOP_MIN (FL_RSUM_FOLD - 1)
#define FL_RSUM_TOP_MAX (FL_RSUM_NBINS - 1)
/* word layout */
#define FL_RSUM_W_TOP 0
#define FL_RSUM_W_FLAGS 1
#define FL_RSUM_W_BIN 2 /* bin k (0: the top) at FL_RSUM_W_BIN + 2k (hi) and + 2k + 1 (lo) */
/* flags of non-finite values */
#define FL_RSUM_PINF 1
#define FL_RSUM_NINF 2
#define FL_RSUM_NAN 4

/* values per run of the array deposits (their slice sums stay far below 2^63) */
#define FL_RSUM_RUN 512

static const double fl_rsum_magic = 6755399441055744.0; /* 1.5 * 2^52: t + magic - magic rounds t */
static const double fl_rsum_step = 281474976710656.0;   /* 2^48: one bin down */

static inline void fl_rsum_init(fl_rsum *s)
{
    memset(s, 0, sizeof(*s));
    s->w[FL_RSUM_W_TOP] = FL_RSUM_TOP_MIN;
}

/* The largest |x| window t holds, u_(t+1)/2 = 2^(48t - 1027) (every finite double at the top) */
static inline double fl_rsum_cap(int64_t t)
{
    return t >= FL_RSUM_TOP_MAX ? DBL_MAX : fl_u2d((uint64_t)(48 * t - 4) << 52);
}

/* 1/u_t = 2^(1074 - 48t): a slice of bin t in units of u_t (normal for every t of a window) */
static inline double fl_rsum_scale(int64_t t) { return fl_u2d((uint64_t)(2097 - 48 * t) << 52); }

/* The slices of a value of the window whose scale is sc (|x| <= the window's cap), top first,
 * each an integer of at most 2^47 units of its bin: a slice q is rounded as t + 1.5 * 2^52, whose
 * bit pattern is that of 1.5 * 2^52 plus q; the bit patterns are returned (integers to add up:
 * subtract fl_d2u(fl_rsum_magic) once per value). */
static inline void fl_rsum_slice_bits(double x, double sc, uint64_t *b0, uint64_t *b1, uint64_t *b2)
{
    double t = x * sc;
    double a = t + fl_rsum_magic;
    *b0 = fl_d2u(a);
    t = (t - (a - fl_rsum_magic)) * fl_rsum_step;
    a = t + fl_rsum_magic;
    *b1 = fl_d2u(a);
    t = (t - (a - fl_rsum_magic)) * fl_rsum_step;
    *b2 = fl_d2u(t + fl_rsum_magic);
}

/* count of bin k += c (|c| <= 2^62), keeping lo in [0, 2^32); hi wraps past the capacity */
static inline void fl_rsum_count_add(fl_rsum *s, int k, int64_t c)
{
    int64_t *hi = &s->w[FL_RSUM_W_BIN + 2 * k], *lo = hi + 1;
    int64_t v = *lo + c;
    int64_t low = (int64_t)((uint64_t)v & 0xffffffffu);
    *hi = (int64_t)((uint64_t)*hi + (uint64_t)((v - low) / 4294967296));
    *lo = low;
}

/* Raise the window to top t (>= the current one): counts move down, the lowest drop out. */
static inline void fl_rsum_raise(fl_rsum *s, int64_t t)
{
    int64_t d = t - s->w[FL_RSUM_W_TOP];
    if (d <= 0) return;
    for (int k = FL_RSUM_FOLD - 1; k >= 0; k--) {
        int64_t *dst = &s->w[FL_RSUM_W_BIN + 2 * k];
        if (k - d >= 0) {
            const int64_t *src = &s->w[FL_RSUM_W_BIN + 2 * (k - d)];
            dst[0] = src[0];
            dst[1] = src[1];
        } else {
            dst[0] = dst[1] = 0;
        }
    }
    s->w[FL_RSUM_W_TOP] = t;
}

/* Raise the window to hold a finite |x| = a. */
static inline void fl_rsum_fit(fl_rsum *s, double a)
{
    int64_t t = s->w[FL_RSUM_W_TOP];
    while (a > fl_rsum_cap(t)) t++;
    fl_rsum_raise(s, t);
}

static inline int fl_rsum_flag(double x) { return x != x ? FL_RSUM_NAN : x > 0.0 ? FL_RSUM_PINF : FL_RSUM_NINF; }

/* Deposit one value. */
static inline void fl_rsum_add(fl_rsum *s, double x)
{
    double a = fabs(x);
    if (!(a <= DBL_MAX)) {
        s->w[FL_RSUM_W_FLAGS] |= fl_rsum_flag(x);
        return;
    }
    if (a > fl_rsum_cap(s->w[FL_RSUM_W_TOP])) fl_rsum_fit(s, a);
    uint64_t b0, b1, b2, mb = fl_d2u(fl_rsum_magic);
    fl_rsum_slice_bits(x, fl_rsum_scale(s->w[FL_RSUM_W_TOP]), &b0, &b1, &b2);
    fl_rsum_count_add(s, 0, (int64_t)(b0 - mb));
    fl_rsum_count_add(s, 1, (int64_t)(b1 - mb));
    fl_rsum_count_add(s, 2, (int64_t)(b2 - mb));
}

/* s += o (exact): the higher window, counts added bin by bin, flags or-ed. */
static inline void fl_rsum_merge(fl_rsum *s, const fl_rsum *o)
{
    fl_rsum b = *o;
    fl_rsum_raise(s, b.w[FL_RSUM_W_TOP]);
    fl_rsum_raise(&b, s->w[FL_RSUM_W_TOP]);
    s->w[FL_RSUM_W_FLAGS] |= b.w[FL_RSUM_W_FLAGS];
    for (int k = 0; k < FL_RSUM_FOLD; k++) {
        int64_t *hi = &s->w[FL_RSUM_W_BIN + 2 * k];
        hi[0] = (int64_t)((uint64_t)hi[0] + (uint64_t)b.w[FL_RSUM_W_BIN + 2 * k]);
        fl_rsum_count_add(s, k, b.w[FL_RSUM_W_BIN + 2 * k + 1]);
    }
}

/* Is s a state these functions can have made? (states may come back from users: pickles) */
static inline int fl_rsum_valid(const fl_rsum *s)
{
    int64_t t = s->w[FL_RSUM_W_TOP], f = s->w[FL_RSUM_W_FLAGS];
    int ok = t >= FL_RSUM_TOP_MIN && t <= FL_RSUM_TOP_MAX && f >= 0 && f <= 7;
    for (int k = 0; k < FL_RSUM_FOLD; k++) {
        int64_t lo = s->w[FL_RSUM_W_BIN + 2 * k + 1];
        ok &= lo >= 0 && lo <= 0xffffffff;
    }
    return ok;
}

/* ---------------- arrays ---------------- */

/* One run of n <= FL_RSUM_RUN values of type T (float or double, UT the unsigned integer of
 * its bits). max |x| first, by the bit patterns of |x|, which order like the values (NaN above
 * infinity above every finite value): one integer max per value. A run holding an infinity or
 * a NaN returns 0, having deposited nothing (the caller deposits it value by value).
 * Otherwise the window is raised once, and the slices' bit patterns summed in uint64 (exact
 * modulo 2^64, and the run's slice sums are below 2^63 in magnitude): both loops are integer
 * reductions, which the compiler vectorises. */
#define FL_RSUM_DEFINE_RUN(NAME, T, UT, TO_BITS, FROM_BITS, MAXBITS)                                \
    static int NAME##_lanes(fl_rsum *s, const T *x, int64_t n)                                      \
    {                                                                                               \
        UT mx = 0;                                                                                  \
        for (int64_t i = 0; i < n; i++) {                                                           \
            UT b = TO_BITS(x[i]) & ((UT) ~(UT)0 >> 1);                                              \
            mx = b > mx ? b : mx;                                                                   \
        }                                                                                           \
        if (mx > (UT)(MAXBITS)) return 0;                                                           \
        double m = (double)FROM_BITS(mx);                                                           \
        if (m > fl_rsum_cap(s->w[FL_RSUM_W_TOP])) fl_rsum_fit(s, m);                                \
        double sc = fl_rsum_scale(s->w[FL_RSUM_W_TOP]);                                             \
        uint64_t c0 = 0, c1 = 0, c2 = 0;                                                            \
        for (int64_t i = 0; i < n; i++) {                                                           \
            uint64_t b0, b1, b2;                                                                    \
            fl_rsum_slice_bits((double)x[i], sc, &b0, &b1, &b2);                                    \
            c0 += b0;                                                                               \
            c1 += b1;                                                                               \
            c2 += b2;                                                                               \
        }                                                                                           \
        uint64_t off = (uint64_t)n * fl_d2u(fl_rsum_magic);                                         \
        fl_rsum_count_add(s, 0, (int64_t)(c0 - off));                                               \
        fl_rsum_count_add(s, 1, (int64_t)(c1 - off));                                               \
        fl_rsum_count_add(s, 2, (int64_t)(c2 - off));                                               \
        return 1;                                                                                   \
    }                                                                                               \
    static void NAME(fl_rsum *s, const T *x, int64_t n)                                             \
    {                                                                                               \
        if (!NAME##_lanes(s, x, n))                                                                 \
            for (int64_t i = 0; i < n; i++) fl_rsum_add(s, (double)x[i]);                           \
    }
FL_RSUM_DEFINE_RUN(fl_rsum_run_f64, double, uint64_t, fl_d2u, fl_u2d, 0x7fefffffffffffffull)
FL_RSUM_DEFINE_RUN(fl_rsum_run_f32, float, uint32_t, fl_f2u, fl_u2f, 0x7f7fffffu)

/* Deposit n contiguous doubles / floats. */
static inline void fl_rsum_add_f64s(fl_rsum *s, const double *x, int64_t n)
{
    for (int64_t i = 0; i < n; i += FL_RSUM_RUN) {
        int64_t m = n - i < FL_RSUM_RUN ? n - i : FL_RSUM_RUN;
        fl_rsum_run_f64(s, x + i, m);
    }
}

static inline void fl_rsum_add_f32s(fl_rsum *s, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i += FL_RSUM_RUN) {
        int64_t m = n - i < FL_RSUM_RUN ? n - i : FL_RSUM_RUN;
        fl_rsum_run_f32(s, x + i, m);
    }
}

/* ---------------- single values through a buffer ---------------- */

/* A state and the values not yet deposited into it: kernels add one value per row here and
 * the buffer is deposited as an array when full (fl_rsum_buf_done at the end). */
#define FL_RSUM_BUF 128
typedef struct {
    fl_rsum s;
    int64_t n;
    double v[FL_RSUM_BUF];
} fl_rsum_buf;

static inline void fl_rsum_buf_init(fl_rsum_buf *b)
{
    fl_rsum_init(&b->s);
    b->n = 0;
}

static inline void fl_rsum_buf_add(fl_rsum_buf *b, double v)
{
    b->v[b->n++] = v;
    if (b->n == FL_RSUM_BUF) {
        fl_rsum_add_f64s(&b->s, b->v, b->n);
        b->n = 0;
    }
}

/* n <= FL_RSUM_BUF values at once */
static inline void fl_rsum_buf_add_n(fl_rsum_buf *b, const double *v, int64_t n)
{
    if (b->n + n > FL_RSUM_BUF) {
        fl_rsum_add_f64s(&b->s, b->v, b->n);
        b->n = 0;
    }
    memcpy(b->v + b->n, v, (size_t)n * sizeof(double));
    b->n += n;
}

/* deposit what is pending; b->s is then the state of every value added */
static inline void fl_rsum_buf_done(fl_rsum_buf *b)
{
    fl_rsum_add_f64s(&b->s, b->v, b->n);
    b->n = 0;
}

/* ---------------- finalizing ---------------- */

/* r += v * 2^shift in 256-bit two's complement (limbs little-endian), 0 <= shift < 192 */
static inline void fl_rsum_wide_add(uint64_t r[4], int64_t v, int shift)
{
    uint64_t ext = v < 0 ? ~(uint64_t)0 : 0, src[4] = {(uint64_t)v, ext, ext, ext}, t[4];
    int ls = shift / 64, bs = shift % 64;
    for (int i = 0; i < 4; i++) {
        int j = i - ls;
        uint64_t lo = j >= 0 ? src[j] << bs : 0;
        uint64_t hi = j >= 1 && bs ? src[j - 1] >> (64 - bs) : 0;
        t[i] = lo | hi;
    }
    uint64_t carry = 0;
    for (int i = 0; i < 4; i++) {
        uint64_t a = r[i] + t[i];
        uint64_t c1 = a < t[i];
        uint64_t b = a + carry;
        carry = c1 | (b < carry);
        r[i] = b;
    }
}

static inline int fl_rsum_wide_bit(const uint64_t r[4], int i) { return (int)((r[i / 64] >> (i % 64)) & 1u); }

/* the position of the highest set bit of r, -1 for 0: the top non-zero limb, then a binary
 * search in it (portable; a bit-by-bit scan from bit 255 took about 2500 instructions a state,
 * which made finishing the 45000 per-class states of 1000 classes cost 115 million) */
static inline int fl_rsum_wide_top(const uint64_t r[4])
{
    int l = 3;
    while (l >= 0 && !r[l]) l--;
    if (l < 0) return -1;
    uint64_t v = r[l];
    int h = 0;
    for (int step = 32; step; step >>= 1)
        if (v >> step) {
            v >>= step;
            h += step;
        }
    return 64 * l + h;
}

/* bits [lo, lo + n) of r (n <= 64, lo >= 0) */
static inline uint64_t fl_rsum_wide_bits(const uint64_t r[4], int lo, int n)
{
    uint64_t v = r[lo / 64] >> (lo % 64);
    if (lo % 64 && lo / 64 + 1 < 4) v |= r[lo / 64 + 1] << (64 - lo % 64);
    return n == 64 ? v : v & (((uint64_t)1 << n) - 1);
}

/* any bit below position i set? */
static inline int fl_rsum_wide_any_below(const uint64_t r[4], int i)
{
    for (int l = 0; l < i / 64; l++)
        if (r[l]) return 1;
    return i % 64 ? (r[i / 64] & (((uint64_t)1 << (i % 64)) - 1)) != 0 : 0;
}

/* The value of a state whose window holds one non-zero count, of magnitude below 2^53, in a
 * bin whose unit is a normal double with room for 53 bits above it: that count times the unit,
 * exact (so it is the correctly rounded sum); 0.0 for an empty window. Returns 0 for any other
 * state (the general path then). Most per-class states are counts like these: finishing the
 * 30000 per-class ECE states of 1000 classes took about 530 instructions a state without it. */
static inline int fl_rsum_value_simple(const fl_rsum *s, double *out)
{
    int k1 = -1;
    for (int k = 0; k < FL_RSUM_FOLD; k++) {
        if (!s->w[FL_RSUM_W_BIN + 2 * k] && !s->w[FL_RSUM_W_BIN + 2 * k + 1]) continue;
        if (k1 >= 0) return 0;
        k1 = k;
    }
    if (k1 < 0) {
        *out = 0.0;
        return 1;
    }
    int64_t hi = s->w[FL_RSUM_W_BIN + 2 * k1], lo = s->w[FL_RSUM_W_BIN + 2 * k1 + 1];
    if (hi < -((int64_t)1 << 21) || hi >= ((int64_t)1 << 21)) return 0;
    int64_t count = hi * 4294967296 + lo;   /* |count| <= 2^53 */
    if (count <= -((int64_t)1 << 53) || count >= ((int64_t)1 << 53)) return 0;
    int64_t e = FL_RSUM_BITS * (s->w[FL_RSUM_W_TOP] - k1) - 1074;   /* the unit of bin k1 */
    if (e < -1022 || e > 1023 - 53) return 0;
    *out = (double)count * fl_u2d((uint64_t)(e + 1023) << 52);
    return 1;
}

/* The sum of the values deposited into s, rounded once to the nearest double. */
static inline double fl_rsum_value(const fl_rsum *s)
{
    int64_t f = s->w[FL_RSUM_W_FLAGS];
    if ((f & FL_RSUM_NAN) || (f & FL_RSUM_PINF && f & FL_RSUM_NINF)) return NAN;
    if (f & FL_RSUM_PINF) return INFINITY;
    if (f & FL_RSUM_NINF) return -INFINITY;
    double simple;
    if (fl_rsum_value_simple(s, &simple)) return simple;
    /* the window's exact sum in units of its lowest bin */
    uint64_t r[4] = {0, 0, 0, 0};
    for (int k = 0; k < FL_RSUM_FOLD; k++) {
        int base = FL_RSUM_BITS * (FL_RSUM_FOLD - 1 - k);
        fl_rsum_wide_add(r, s->w[FL_RSUM_W_BIN + 2 * k], base + 32);
        fl_rsum_wide_add(r, s->w[FL_RSUM_W_BIN + 2 * k + 1], base);
    }
    int neg = (int)(r[3] >> 63);
    if (neg) { /* magnitude */
        uint64_t carry = 1;
        for (int i = 0; i < 4; i++) {
            r[i] = ~r[i] + carry;
            carry = carry && r[i] == 0;
        }
    }
    int h = fl_rsum_wide_top(r);
    if (h < 0) return 0.0;
    int64_t eb = FL_RSUM_BITS * (s->w[FL_RSUM_W_TOP] - FL_RSUM_TOP_MIN) - 1074; /* unit of the lowest bin */
    int64_t e = h + eb;
    uint64_t bits;
    if (h <= 52) { /* exact */
        uint64_t mag = r[0];
        if (e >= -1022)
            bits = ((uint64_t)(e + 1023) << 52) | ((mag << (52 - h)) & 0x000fffffffffffffull);
        else
            bits = mag << (eb + 1074); /* a subnormal: eb >= -1074 */
    } else {
        uint64_t mant = fl_rsum_wide_bits(r, h - 52, 53);
        int half = fl_rsum_wide_bit(r, h - 53), sticky = fl_rsum_wide_any_below(r, h - 53);
        if (half && (sticky || (mant & 1u))) mant++;
        if (mant >> 53) {
            mant >>= 1;
            e++;
        }
        if (e > 1023) return neg ? -INFINITY : INFINITY;
        bits = ((uint64_t)(e + 1023) << 52) | (mant & 0x000fffffffffffffull);
    }
    double v = fl_u2d(bits);
    return neg ? -v : v;
}

#endif
