/* fl_decode_row.h: one row of filter_logits or sample, from its settings to its kept set and
 * its draw (the steps are described in fl_decode.c; the selection in fl_decode_select.h, the
 * sums of exponentials it needs in fl_decode_mass.h).
 * Included by fl_decode.c only (a header to keep files short), compiled once per ISA.
 */
#ifndef FL_DECODE_ROW_H
#define FL_DECODE_ROW_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fl_decode_mass.h"
#include "fl_decode_select.h"
#include "fl_rowio.h"
#include "fl_rowmath.h"
#include "fl_rowmath_f64.h"

/* top-k up to this k' is resolved on the candidate list; top-p and min-p try a speculative
 * list of FL_DEC_SPEC candidates before the general path */
#define FL_DEC_LIST_MAX 1024
#define FL_DEC_SPEC 128

/* a row's settings: temperature (> 0 here), k' = max(top_k, keep) (c: top-k off), top-p
 * (>= 1: off), log(min_p) (-inf: off), min_tokens_to_keep (<= c) */
typedef struct { double t; int64_t keep, kprime; double p, lminp; } fl_drow;

enum { FL_DROW_OK, FL_DROW_NAN, FL_DROW_EMPTY };  /* a softmax; a NaN or +inf; every logit -inf */
enum { FL_DSRC_SET, FL_DSRC_ROW };                 /* the draw reads the candidates, or the row */

typedef struct {
    int state;
    int src;
    int f64;
    double m;         /* the largest tempered value */
    fl_dcut cut;      /* the kept prefix */
    const void *x;    /* the row (float32 for a gathered one), to take a drawn token's value */
    int32_t dt;
} fl_dres;

/* Per-task scratch. The general path's rows and arrays (capacity c) are allocated on first use. */
typedef struct {
    int64_t c;
    void *xbuf, *ybuf;      /* c float64 each: gathered input rows, output rows */
    fl_dlist list;
    float *bmax;            /* c / FL_DLIST_BLK + 1 block maxima, and as many keys */
    uint64_t *bkey;
    void *yrow, *erow;      /* c float64 each: the tempered row and its masses (float or float64) */
    double *bsum;           /* per FL_DEC_BLOCK elements of the row: their mass */
    int64_t *bpos;          /* the draw's blocks: where each starts among the candidates */
    fl_dset set, work;
    fl_dhist *hist;
    int gen, failed;
} fl_dscratch;

static inline int fl_dscratch_init(fl_dscratch *s, int64_t c)
{
    memset(s, 0, sizeof(*s));
    s->c = c;
    s->list.cap = 2 * FL_DEC_LIST_MAX + 64;
    s->bmax = (float *)malloc((size_t)(c / FL_DLIST_BLK + 1) * sizeof(float));
    s->bkey = (uint64_t *)malloc((size_t)(c / FL_DLIST_BLK + 1) * sizeof(uint64_t));
    s->xbuf = malloc((size_t)c * sizeof(double));
    s->ybuf = malloc((size_t)c * sizeof(double));
    s->list.c = (fl_dcand *)malloc((size_t)s->list.cap * sizeof(fl_dcand));
    s->list.sel = (uint64_t *)malloc((size_t)s->list.cap * sizeof(uint64_t));
    return s->xbuf && s->ybuf && s->list.c && s->list.sel && s->bmax && s->bkey;
}

static inline void fl_dset_free(fl_dset *d)
{
    free(d->key);
    free(d->e);
    free(d->idx);
}

static inline void fl_dscratch_free(fl_dscratch *s)
{
    free(s->xbuf);
    free(s->ybuf);
    free(s->list.c);
    free(s->list.sel);
    free(s->bmax);
    free(s->bkey);
    free(s->yrow);
    free(s->erow);
    free(s->bsum);
    free(s->bpos);
    fl_dset_free(&s->set);
    fl_dset_free(&s->work);
    free(s->hist);
}

static inline int fl_dset_alloc(fl_dset *d, int64_t n)
{
    d->key = (uint64_t *)malloc((size_t)n * sizeof(uint64_t));
    d->e = (double *)malloc((size_t)n * sizeof(double));
    d->idx = (int64_t *)malloc((size_t)n * sizeof(int64_t));
    d->n = 0;
    return d->key && d->e && d->idx;
}

/* the general path's memory; 0 (and failed) when it cannot be had */
static inline int fl_dscratch_gen(fl_dscratch *s)
{
    if (s->gen) return 1;
    int64_t c = s->c;
    s->yrow = malloc((size_t)c * sizeof(double));
    s->erow = malloc((size_t)c * sizeof(double));
    s->bsum = (double *)malloc((size_t)(c / FL_DEC_BLOCK + 1) * sizeof(double));
    s->bpos = (int64_t *)malloc((size_t)(c / FL_DEC_BLOCK + 2) * sizeof(int64_t));
    s->hist = (fl_dhist *)malloc(sizeof(fl_dhist));
    int ok = s->yrow && s->erow && s->bsum && s->bpos && s->hist && fl_dset_alloc(&s->set, c) &&
             fl_dset_alloc(&s->work, c);
    if (!ok) s->failed = 1;
    s->gen = ok;
    return ok;
}

/* ---------- candidate sets and the general path ---------- */

/* The tokens of the float row y whose value is at least lo into s->set, in index order: the
 * lanes that pass are read off the comparison masks of four vectors at a time (one branch a
 * step of 4 * FL_W tokens however many pass), so a token below lo costs one compare. Their
 * masses come from erow, or (erow NULL) are computed here for them alone: exp(y - m) by
 * fl_dec_expf, the values the general path's pass gives. */
static inline void fl_dec_set_from_f32(fl_dscratch *s, const float *y, const float *erow, float lo, float m)
{
    fl_dset *d = &s->set;
    int64_t k = 0, c = s->c, n = 0;
    flv lv = flv_set1(lo);
    for (; k + 4 * FL_W <= c; k += 4 * FL_W) {
        uint64_t msk = 0;
        for (int j = 0; j < 4; j++) msk |= (uint64_t)flv_mask_ge(flv_load(y + k + j * FL_W), lv) << (j * FL_W);
        for (; msk; msk &= msk - 1) d->idx[n++] = k + fl_ctz64(msk);
    }
    for (; k < c; k++)
        if (y[k] >= lo) d->idx[n++] = k;
    for (int64_t j = 0; j < n; j++) {
        float v = y[d->idx[j]];
        d->key[j] = fl_dkey((double)v);
        d->e[j] = erow ? (double)erow[d->idx[j]] : (double)v;
    }
    if (!erow) /* a loop of its own, which vectorises */
        for (int64_t j = 0; j < n; j++) d->e[j] = (double)fl_dec_expf((float)d->e[j], m);
    d->n = n;
}

/* the candidates of the row (s->yrow, masses s->erow: the general path's pass) whose tempered
 * value is at least lo, into s->set */
static inline void fl_dec_set_from_row(fl_dscratch *s, int f64, double lo)
{
    if (!f64) {
        /* the smallest float32 f >= lo: y >= f exactly when (double)y >= lo */
        float f = (float)lo;
        fl_dec_set_from_f32(s, (const float *)s->yrow, (const float *)s->erow, (double)f < lo ? nextafterf(f, INFINITY) : f,
                            0.0f);
        return;
    }
    const double *y = (const double *)s->yrow, *e = (const double *)s->erow;
    fl_dset *d = &s->set;
    d->n = 0;
    for (int64_t k = 0; k < s->c; k++) {
        if (!(y[k] >= lo)) continue;
        d->key[d->n] = fl_dkey(y[k]);
        d->e[d->n] = e[k];
        d->idx[d->n] = k;
        d->n++;
    }
}

/* keep the candidates of s->set whose key is at least key_lo (index order kept) */
static inline void fl_dec_set_cut(fl_dset *d, uint64_t key_lo)
{
    int64_t w = 0;
    for (int64_t j = 0; j < d->n; j++) {
        if (d->key[j] < key_lo) continue;
        d->key[w] = d->key[j];
        d->e[w] = d->e[j];
        d->idx[w] = d->idx[j];
        w++;
    }
    d->n = w;
}

/* the number of candidates of d whose key is at least key_lo */
static inline int64_t fl_dec_set_count(const fl_dset *d, uint64_t key_lo)
{
    int64_t n = 0;
    for (int64_t j = 0; j < d->n; j++) n += d->key[j] >= key_lo;
    return n;
}

/* The kept prefix of the candidates in s->set, every min-p survivor among them (the floor
 * key_mp, 0: min-p off), for top-p's mass limits lo and hi >= lo at once; whole: the set holds
 * every token that could be kept. Returns 1 (cut) when both limits give the same prefix and it
 * ends inside the set, -1 when it may go on past the set, 0 when the two limits give
 * different prefixes. */
static inline int fl_dec_resolve_band(fl_dscratch *s, const fl_drow *p, uint64_t key_mp, double lo, double hi, int whole,
                                      fl_dcut *cut)
{
    fl_dkeep q = {p->keep, INT64_MAX, lo};
    int64_t before = s->set.n;
    if (key_mp) {
        if (fl_dec_set_count(&s->set, key_mp) < p->keep) {
            q.kprime = 0; /* fewer min-p survivors than keep: the first keep positions */
            whole = 1;
        } else {
            fl_dec_set_cut(&s->set, key_mp);
            whole |= s->set.n < before; /* the min-p floor lies inside the set */
        }
    }
    if (!fl_dsel_band(s->set, s->work, &q, hi, s->hist, cut)) return 0;
    return whole || cut->n < s->set.n ? 1 : -1;
}

/* fl_dec_resolve_band for one mass limit: 0 when the prefix may go on past the set (then the
 * general path must decide) */
static inline int fl_dec_resolve_set(fl_dscratch *s, const fl_drow *p, uint64_t key_mp, double mass_lim, int whole,
                                     fl_dcut *cut)
{
    return fl_dec_resolve_band(s, p, key_mp, mass_lim, mass_lim, whole, cut) == 1;
}

/* The general path: every token's mass is in s->erow (the row's mass z). */
static inline void fl_dec_resolve_row(fl_dscratch *s, const fl_drow *p, int f64, double m, double z, fl_dres *r)
{
    int topk = p->kprime < s->c, topp = p->p < 1.0, minp = p->lminp > -(double)INFINITY;
    if (!topk && !topp && !minp) {
        fl_dcut all = {s->c, fl_dkey(-(double)INFINITY), s->c - 1, z};
        r->src = FL_DSRC_ROW;
        r->cut = all;
        return;
    }
    double mp = minp ? (f64 ? fl_minp_floor_d(m, p->lminp) : (double)fl_minp_floor_f(m, p->lminp)) : -(double)INFINITY;
    double mass_lim = topp ? p->p * z : (double)INFINITY;
    if (topk) {
        /* top-k over every token first: top-p's mass is that of the top-k survivors */
        fl_dkeep q = {p->keep, p->kprime, (double)INFINITY};
        fl_dec_set_from_row(s, f64, -(double)INFINITY);
        fl_dcut k = fl_dsel(s->set, s->work, &q, s->hist);
        fl_dec_set_cut(&s->set, k.key_b);
        mass_lim = topp ? p->p * k.mass : mass_lim;
        fl_dec_resolve_set(s, p, minp ? fl_dkey(mp) : 0, mass_lim, 1, &r->cut);
        r->src = FL_DSRC_SET;
        return;
    }
    /* top-p's prefix lies within the first distance from the max that holds its mass: the
     * candidates start there (fl_dec_pivots; the next distance is tried when the prefix runs
     * to the set's end, and at last every token) */
    float d[2 * FL_DEC_NPIV];
    int nd = topp && !f64 ? fl_dec_pivots((const float *)s->yrow, (const float *)s->erow, s->c, (float)m, mass_lim, d) : 0;
    for (int j = 0;; j++) {
        double lo = j < nd ? (double)((float)m - d[j]) : -(double)INFINITY;
        fl_dec_set_from_row(s, f64, minp && mp > lo ? mp : lo);
        if (s->set.n < p->keep) {
            fl_dec_set_from_row(s, f64, -(double)INFINITY);
            j = nd;
        }
        int whole = j >= nd || (minp && mp >= lo); /* the set holds every candidate */
        if (fl_dec_resolve_set(s, p, minp ? fl_dkey(mp) : 0, mass_lim, whole, &r->cut)) break;
    }
    r->src = FL_DSRC_SET;
}

/* ---------- the candidate paths of a float row ---------- */

/* The kept prefix of a float row (tempered values yp, max m) from the tokens above a floor that
 * the kept set provably lies above, without the exponentials of the whole row:
 *   - top-k beyond the list: the floor at the first distance from the max with at least k'
 *     tokens above it (exact counts), then top-p and min-p on the top-k survivors, as the
 *     general path does;
 *   - top-p: the floor at the first distance whose precise mass (fl_dec_precise_mass, into *zp
 *     and s->erow when *zp is 0) exceeds top_p's share of the row's; the prefix must end inside
 *     the candidates and be the same at both ends of the bounds of the row's exact mass
 *     (fl_dec_mass_band), so it is the one the exact mass gives;
 *   - min-p alone: its floor.
 * The candidates' masses are fl_dec_expf's, the general path's values. Returns 0 (the general
 * path must decide) when no floor holds the kept set or the band cannot decide. */
static inline int fl_drow_candidates_f32(fl_dscratch *s, const fl_drow *p, const float *yp, float m, double *zp,
                                         fl_dcut *cut)
{
    int64_t c = s->c;
    int topk = p->kprime < c, topp = p->p < 1.0, minp = p->lminp > -(double)INFINITY;
    float mpf = minp ? fl_minp_floor_f(m, p->lminp) : -INFINITY, d[2 * FL_DEC_NPIV];
    if (topk) {
        if (!fl_dec_pivots(yp, NULL, c, m, (double)p->kprime, d)) return 0;
        fl_dec_set_from_f32(s, yp, NULL, m - d[0], m);
        fl_dkeep q = {p->keep, p->kprime, (double)INFINITY};
        fl_dcut k = fl_dsel(s->set, s->work, &q, s->hist);
        fl_dec_set_cut(&s->set, k.key_b);
        fl_dec_resolve_set(s, p, minp ? fl_dkey((double)mpf) : 0, topp ? p->p * k.mass : (double)INFINITY, 1, cut);
        return 1;
    }
    if (!topp) {
        fl_dec_set_from_f32(s, yp, NULL, mpf, m);
        return s->set.n >= p->keep && fl_dec_resolve_set(s, p, 0, (double)INFINITY, 1, cut);
    }
    const float *e = (const float *)s->erow;
    if (*zp == 0.0) *zp = fl_dec_precise_mass(yp, c, m, (float *)s->erow);
    int nd = fl_dec_pivots(yp, e, c, m, p->p * *zp * (1.0 + 4 * FL_DEC_ETOL), d);
    for (int j = 0; j < nd; j++) {
        /* min-p's floor above the distance's: the candidates hold every token min-p keeps */
        int whole = minp && mpf >= m - d[j];
        fl_dec_set_from_f32(s, yp, NULL, whole ? mpf : m - d[j], m);
        if (s->set.n < p->keep) return 0;
        double zlo, zhi;
        fl_dec_mass_band(&s->set, e, *zp, &zlo, &zhi);
        int res = fl_dec_resolve_band(s, p, 0, p->p * zlo, p->p * zhi, whole, cut);
        if (res >= 0) return res;
    }
    return 0;
}

/* ---------- a row to its kept set ---------- */

/* the float32 (or gathered) row x with c >= 1 classes: the candidate list (top-k up to
 * FL_DEC_LIST_MAX, a speculative list for top-p and min-p), then the candidate paths, then
 * the general path */
static inline fl_dres fl_drow_resolve_f32(fl_dscratch *s, fl_xrow x, int64_t c, const fl_drow *p)
{
    fl_dres r;
    memset(&r, 0, sizeof(r));
    r.x = x.p;
    r.dt = x.dt;
    float t = (float)p->t, m;
    int topk = p->kprime < c, topp = p->p < 1.0, minp = p->lminp > -(double)INFINITY;
    int64_t want = 0;
    if (topk && p->kprime <= FL_DEC_LIST_MAX) want = p->kprime;
    else if (!topk && (topp || minp) && p->keep <= FL_DEC_LIST_MAX) want = p->keep > FL_DEC_SPEC ? p->keep : FL_DEC_SPEC;
    if (want > 0) {
        if (fl_x_dispatch(x.dt, fl_dlist_scan_t, x.p, c, want, t, &s->list, s->bmax, s->bkey)) {
            r.state = FL_DROW_NAN;
            return r;
        }
        if (s->list.failed) { s->failed = 1; r.state = FL_DROW_EMPTY; return r; }
        uint64_t top = 0;
        for (int64_t j = 0; j < s->list.n; j++) top = s->list.c[j].key > top ? s->list.c[j].key : top;
        m = (float)fl_dkey_value(top);
    } else {
        float mx = fl_x_dispatch(x.dt, fl_rmax_t, x.p, c);
        if (mx != mx || mx == INFINITY) { r.state = FL_DROW_NAN; return r; }
        m = fl_temper_f(mx, t);
    }
    if (m == -INFINITY) { r.state = FL_DROW_EMPTY; return r; }
    r.m = m;
    if (!fl_dscratch_gen(s)) { r.state = FL_DROW_EMPTY; return r; }
    const float *yp = NULL; /* the tempered row, once made */
    double zp = 0.0;        /* its precise mass, once taken */
    if (want > 0) {
        int whole = topk || s->list.n == c; /* the list holds every token that can be kept */
        fl_dset *d = &s->set;
        double zl = 0.0;
        for (int64_t j = 0; j < s->list.n; j++) {
            float y = (float)fl_dkey_value(s->list.c[j].key), e = fl_dec_expf(y, m);
            d->key[j] = s->list.c[j].key;
            d->e[j] = (double)e;
            d->idx[j] = s->list.c[j].i;
            zl += (double)e;
        }
        d->n = s->list.n;
        uint64_t kmp = minp ? fl_dkey((double)fl_minp_floor_f(m, p->lminp)) : 0;
        if (!topp || whole) {
            if (fl_dec_resolve_set(s, p, kmp, topp ? p->p * zl : (double)INFINITY, whole, &r.cut)) return r;
        } else {
            /* top-p over the whole row needs its mass: the prefix found at both bounds of the
             * exact mass (fl_dec_mass_band) is the one it gives */
            yp = fl_x_dispatch(x.dt, fl_dec_temper_row_t, x.p, c, t, (float *)s->yrow);
            zp = fl_dec_precise_mass(yp, c, m, (float *)s->erow);
            double zlo, zhi;
            fl_dec_mass_band(d, (const float *)s->erow, zp, &zlo, &zhi);
            if (fl_dec_resolve_band(s, p, kmp, p->p * zlo, p->p * zhi, 0, &r.cut) == 1) return r;
        }
    }
    if (topk || topp || minp) {
        if (!yp) yp = fl_x_dispatch(x.dt, fl_dec_temper_row_t, x.p, c, t, (float *)s->yrow);
        if (fl_drow_candidates_f32(s, p, yp, m, &zp, &r.cut)) return r;
    }
    double z = fl_x_dispatch(x.dt, fl_dec_exp_row_t, x.p, c, t, m, (float *)s->yrow, (float *)s->erow, s->bsum);
    fl_dec_resolve_row(s, p, 0, (double)m, z, &r);
    return r;
}

/* the float64 row x: always the general path, in float64 */
static inline fl_dres fl_drow_resolve_f64(fl_dscratch *s, const double *x, int64_t c, const fl_drow *p)
{
    fl_dres r;
    memset(&r, 0, sizeof(r));
    r.f64 = 1;
    r.x = x;
    r.dt = FL_F64;
    double mx = fl_rmax_f64(x, c);
    if (mx != mx || mx == (double)INFINITY) { r.state = FL_DROW_NAN; return r; }
    double m = mx / p->t;
    if (m == -(double)INFINITY) { r.state = FL_DROW_EMPTY; return r; }
    if (!fl_dscratch_gen(s)) { r.state = FL_DROW_EMPTY; return r; }
    r.m = m;
    double z = fl_dec_exp_row_d(x, c, p->t, m, (double *)s->yrow, (double *)s->erow, s->bsum);
    fl_dec_resolve_row(s, p, 1, m, z, &r);
    return r;
}

/* logit-space thresholds of a float32 row's kept prefix: up to idx_b a token is kept when
 * x >= xa, after it when x >= xb */
static inline void fl_dcut_xthr(const fl_dcut *cut, float t, float *xa, float *xb)
{
    float yb = (float)fl_dkey_value(cut->key_b);
    uint32_t k = fl_f2u(yb);
    float up = yb == -INFINITY ? -3.40282347e38f : (k >> 31) ? fl_u2f(k == 0x80000000u ? 1u : k - 1) : fl_u2f(k + 1);
    *xa = fl_xthresh_f(yb, t);
    *xb = fl_xthresh_f(up, t);
}

/* ---------- the draw ---------- */

/* The token at the uniform u of the kept masses, in index order: the masses of the row's
 * blocks of FL_DEC_BLOCK tokens (each summed in sixteen lanes by token index, a fixed order),
 * then one block token by token; *lp receives its log-probability. The candidates' blocks are
 * summed by the token indices they hold, so the sums are those of the row path's blocks for the
 * same kept tokens, whatever else the candidates hold: a token does not depend on the path
 * that found the kept set. */
static inline int64_t fl_drow_draw(fl_dscratch *s, const fl_dres *r, double u, double *lp)
{
    const fl_dset *d = &s->set;
    double *bs = s->bsum;
    int64_t *bp = s->bpos, n, nb = 0;
    if (r->src == FL_DSRC_ROW) {
        n = s->c;
        for (; nb * FL_DEC_BLOCK < n; nb++) bp[nb] = nb * FL_DEC_BLOCK;  /* bs: the general path's pass */
    } else {
        n = d->n;
        for (int64_t j = 0; j < n; nb++) {
            double l[16] = {0};
            int64_t blk = d->idx[j] / FL_DEC_BLOCK;
            bp[nb] = j;
            for (; j < n && d->idx[j] / FL_DEC_BLOCK == blk; j++) /* (a product, not a branch: e * 1 is e) */
                l[d->idx[j] & 15] += d->e[j] * (double)fl_dcut_keeps(&r->cut, d->key[j], d->idx[j]);
            for (int w = 8; w >= 1; w /= 2)
                for (int i = 0; i < w; i++) l[i] += l[i + w];
            bs[nb] = l[0];
        }
    }
    bp[nb] = n;
    double z = 0.0;
    for (int64_t b = 0; b < nb; b++) z += bs[b];
    /* the block where the running mass passes u * z; should rounding leave it unpassed, the
     * last token of mass (the max always has mass 1, so there is one) */
    double target = u * z, acc = 0.0;
    int64_t b = -1, tok = -1;
    int found = 0;
    for (int64_t q = 0; q < nb && !found; q++) {
        if (!(bs[q] > 0.0)) continue;
        b = q;
        if (acc + bs[q] > target) found = 1;
        else acc += bs[q];
    }
    for (int64_t j = bp[b]; j < bp[b + 1]; j++) {
        double e;
        if (r->src == FL_DSRC_ROW) e = r->f64 ? ((const double *)s->erow)[j] : (double)((const float *)s->erow)[j];
        else e = fl_dcut_keeps(&r->cut, d->key[j], d->idx[j]) ? d->e[j] : 0.0;
        if (!(e > 0.0)) continue;
        tok = j;
        acc += e;
        if (found && acc > target) break;
    }
    double ytok;
    if (r->src == FL_DSRC_ROW) {
        ytok = r->f64 ? ((const double *)s->yrow)[tok] : (double)((const float *)s->yrow)[tok];
    } else {
        ytok = fl_dkey_value(d->key[tok]);
        tok = d->idx[tok];
    }
    *lp = (ytok - r->m) - fl_log1p_d(z - 1.0);
    return tok;
}

#endif
