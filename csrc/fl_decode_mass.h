/* fl_decode_mass.h: the masses (sums of exp(y - m) over a row's tempered values y) that the
 * decoding selection needs, each in its own pass over the row (the scratch rows are in L2):
 *   - the general path's pass: the tempered row, its exponentials and the masses of its blocks
 *     of FL_DEC_BLOCK elements, in a fixed order (the draw reads them);
 *   - the pivot masses of top-p (counts of top-k): the mass (number) of the tokens within a few
 *     distances of the max, which bound where the kept set ends, so that only the tokens above
 *     the closest sufficient distance become candidates;
 *   - the precise mass: SIMD sums of the precise exponential, ISA-dependent in their last bits,
 *     which bound the exact mass (fl_dec_mass_band) without the portable exponential of every
 *     token.
 * Everything but the precise mass gives the same bits on every SIMD path. Included by
 * fl_decode_row.h, compiled once per ISA.
 */
#ifndef FL_DECODE_MASS_H
#define FL_DECODE_MASS_H

#include <math.h>
#include <stdint.h>

#include "fl_decode_select.h"
#include "fl_rowio.h"
#include "fl_rowmath.h"

/* y = the tempered row, e = exp(y - m) (fl_dec_expf), the mass of each block of FL_DEC_BLOCK
 * elements into bsum (fixed order); returns the row's mass, summed over the blocks in order */
FL_ALWAYS_INLINE double fl_dec_exp_row_t(const void *x, int64_t c, float t, float m, float *y, float *e, double *bsum,
                                         int32_t dt)
{
    flv tv = flv_set1(t);
    double z = 0.0;
    for (int64_t k0 = 0, b = 0; k0 < c; k0 += FL_DEC_BLOCK, b++) {
        int64_t n = c - k0 < FL_DEC_BLOCK ? c - k0 : FL_DEC_BLOCK, k = 0;
        for (; k + FL_W <= n; k += FL_W) {
            flv v = fl_xload(x, k0 + k, dt);
            flv_store(y + k0 + k, t == 1.0f ? v : flv_div(v, tv));
        }
        for (; k < n; k++) y[k0 + k] = fl_temper_f(fl_xget(x, k0 + k, dt), t);
        for (k = 0; k < n; k++) e[k0 + k] = fl_dec_expf(y[k0 + k], m);
        bsum[b] = fl_dec_sum16f(e + k0, n);
        z += bsum[b];
    }
    return z;
}

static inline double fl_dec_exp_row_d(const double *x, int64_t c, double t, double m, double *y, double *e,
                                      double *bsum)
{
    double z = 0.0;
    for (int64_t k0 = 0, b = 0; k0 < c; k0 += FL_DEC_BLOCK, b++) {
        int64_t n = c - k0 < FL_DEC_BLOCK ? c - k0 : FL_DEC_BLOCK;
        double l[16] = {0};
        for (int64_t k = 0; k < n; k++) {
            y[k0 + k] = x[k0 + k] / t;
            e[k0 + k] = fl_dec_exp_d(y[k0 + k], m);
            l[k & 15] += e[k0 + k];
        }
        for (int w = 8; w >= 1; w /= 2)
            for (int j = 0; j < w; j++) l[j] += l[j + w];
        bsum[b] = l[0];
        z += bsum[b];
    }
    return z;
}

/* The mass of a float row's tokens within d[j] of its max m, for each of FL_DEC_NPIV
 * distances, in a fixed order whatever the ISA (sixteen lanes, lane i taking the elements i
 * mod 16: float32 over 256 elements, then float64, added pairwise at the end): floors for the
 * top-p candidates. With e NULL, the number of those tokens (exact: at most 16 per float32
 * lane before the float64 lanes): floors for top-k. */
#define FL_DEC_NPIV 4 /* (two float32 vectors each on AVX2: the sums stay in registers) */
#define FL_DEC_DV (16 / FL_W)
static inline void fl_dec_pivot_masses(const float *y, const float *e, int64_t c, float m, const float *d, double *mass)
{
    fl_dacc acc[FL_DEC_NPIV][FL_DEC_DV];
    flv thr[FL_DEC_NPIV], zero = flv_set1(0.0f), one = flv_set1(1.0f);
    for (int j = 0; j < FL_DEC_NPIV; j++) {
        thr[j] = flv_set1(m - d[j]);
        for (int q = 0; q < FL_DEC_DV; q++) acc[j][q] = fl_dacc_zero();
    }
    int64_t k = 0;
    while (k + 16 <= c) {
        /* float32 partial sums of up to 16 terms per lane, then into the float64 lanes */
        flv part[FL_DEC_NPIV][FL_DEC_DV];
        for (int j = 0; j < FL_DEC_NPIV; j++)
            for (int q = 0; q < FL_DEC_DV; q++) part[j][q] = zero;
        for (int64_t end = k + 256 < c ? k + 256 : c; k + 16 <= end; k += 16)
            for (int q = 0; q < FL_DEC_DV; q++) {
                flv yv = flv_load(y + k + q * FL_W), ev = e ? flv_load(e + k + q * FL_W) : one;
                for (int j = 0; j < FL_DEC_NPIV; j++)
                    part[j][q] = flv_add(part[j][q], flv_sel_neg(flv_sub(yv, thr[j]), zero, ev));
            }
        for (int j = 0; j < FL_DEC_NPIV; j++)
            for (int q = 0; q < FL_DEC_DV; q++) acc[j][q] = fl_dacc_add(acc[j][q], part[j][q]);
    }
    for (int j = 0; j < FL_DEC_NPIV; j++) {
        double l[16];
        for (int q = 0; q < FL_DEC_DV; q++) fl_dacc_store(l + q * FL_W, acc[j][q]);
        for (int64_t i = k; i < c; i++) l[i - k] += y[i] >= m - d[j] ? (e ? (double)e[i] : 1.0) : 0.0;
        for (int w = 8; w >= 1; w /= 2)
            for (int i = 0; i < w; i++) l[i] += l[i + w];
        mass[j] = l[0];
    }
}

/* The distances from the max, closest first, within which candidates are sought: four
 * doubling distances, then four steps inside the first one whose mass (count, e NULL) reaches
 * lim (the candidates start at the closest that does). Fills d (up to 2 * FL_DEC_NPIV); returns
 * how many there are. */
static inline int fl_dec_pivots(const float *y, const float *e, int64_t c, float m, double lim, float *d)
{
    static const float coarse[FL_DEC_NPIV] = {2.5f, 5.0f, 10.0f, 20.0f};
    double mass[FL_DEC_NPIV];
    fl_dec_pivot_masses(y, e, c, m, coarse, mass);
    int j = 0;
    while (j < FL_DEC_NPIV && !(mass[j] >= lim)) j++;
    if (j == FL_DEC_NPIV) return 0;
    float lo = j ? coarse[j - 1] : 0.0f, step = (coarse[j] - lo) / FL_DEC_NPIV, fine[FL_DEC_NPIV];
    for (int q = 0; q < FL_DEC_NPIV; q++) fine[q] = lo + step * (float)(q + 1);
    fl_dec_pivot_masses(y, e, c, m, fine, mass);
    int n = 0;
    for (int q = 0; q < FL_DEC_NPIV; q++)
        if (mass[q] >= lim) d[n++] = fine[q];
    for (int q = j + 1; q < FL_DEC_NPIV; q++) d[n++] = coarse[q];
    return n;
}

/* The tempered float row: x itself when it is float32 and t is 1, else x / t written to y. */
FL_ALWAYS_INLINE const float *fl_dec_temper_row_t(const void *x, int64_t c, float t, float *y, int32_t dt)
{
    if (t == 1.0f && dt == FL_F32) return (const float *)x;
    flv tv = flv_set1(t);
    int64_t k = 0;
    for (; k + FL_W <= c; k += FL_W) {
        flv v = fl_xload(x, k, dt);
        flv_store(y + k, t == 1.0f ? v : flv_div(v, tv));
    }
    for (; k < c; k++) y[k] = fl_temper_f(fl_xget(x, k, dt), t);
    return y;
}

/* The row's mass, sum of exp(y - m) over its tempered values y (the row yp), by the SIMD sums
 * of the precise exponential (the rounding of y - m folded in, within about 1 ULP, as the
 * portable fl_dec_expf) in float64 lanes, those exponentials into e: fast, but ISA-dependent in
 * its last bits, so it only bounds the row's exact mass (fl_dec_mass_band) and places the
 * candidates' floor. */
static inline double fl_dec_precise_mass(const float *yp, int64_t c, float m, float *e)
{
    double n_eq, rest = fl_rsumexp_t(yp, c, m, e, &n_eq, 1, fl_ahead_none(), 0, FL_F32);
    return n_eq + rest;
}

/* The bounds of a float row's exact mass Z (the sum of the portable exponentials, the general
 * path's, fl_dec_exp_row_t) from the candidates' exact masses (the set d) and the precise mass
 * zp of the row (exponentials e): Z = (the candidates' mass) + (the others' portable masses),
 * and the others' precise masses, zp less the candidates' precise ones, are within
 * FL_DEC_ETOL of those (each exponential within 2.1 ULP of the portable one: 2.5e-7), up to
 * float64 sums in other orders and masses below exp(-86) (FL_DEC_STOL of zp). So the top-p
 * boundary found at both bounds is the one Z gives, unless top_p falls within about 1e-6 of
 * the share of a prefix whose mass is that of the rest: then the general path decides. */
#define FL_DEC_ETOL 1e-6
#define FL_DEC_STOL 1e-10
static inline void fl_dec_mass_band(const fl_dset *d, const float *e, double zp, double *zlo, double *zhi)
{
    double exact = 0.0, approx = 0.0;
    for (int64_t j = 0; j < d->n; j++) {
        exact += d->e[j];
        approx += (double)e[d->idx[j]];
    }
    double rest = zp > approx ? zp - approx : 0.0;
    *zlo = exact + rest * (1.0 - FL_DEC_ETOL) - FL_DEC_STOL * zp;
    *zhi = exact + rest * (1.0 + FL_DEC_ETOL) + FL_DEC_STOL * zp;
}

#endif
