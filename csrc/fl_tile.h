/* fl_tile.h: small C, FL_W rows in the lanes.
 *
 * With few classes a row is shorter than a vector, and per-row overhead dominates. A tile
 * puts FL_W rows in the lanes instead: vector k of the tile holds class k of every row, so
 * max, exponentials and sums run lane-wise, one row per lane, with the same operations in the
 * same order as the row functions of fl_rowmath.h apply to one row. Tile vectors live in an L1
 * scratch of c * FL_W floats (xt[k * FL_W + j] = class k of row j). */
#ifndef FL_TILE_H
#define FL_TILE_H

#include <math.h>
#include <stdint.h>
#include "fl_simd.h"
#include "fl_scalar_math.h"

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

#endif
