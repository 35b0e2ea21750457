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
    s->hist = (fl_dhist *)malloc(sizeof(fl_dhist));
    int ok = s->yrow && s->erow && s->bsum && s->hist && fl_dset_alloc(&s->set, c) && fl_dset_alloc(&s->work, c);
    if (!ok) s->failed = 1;
    s->gen = ok;
    return ok;
}

/* ---------- candidate sets and the general path ---------- */

/* candidate k of the row into s->set */
static inline void fl_dec_set_push(fl_dscratch *s, int f64, int64_t k)
{
    fl_dset *d = &s->set;
    double y = f64 ? ((const double *)s->yrow)[k] : (double)((const float *)s->yrow)[k];
    d->key[d->n] = fl_dkey(y);
    d->e[d->n] = f64 ? ((const double *)s->erow)[k] : (double)((const float *)s->erow)[k];
    d->idx[d->n] = k;
    d->n++;
}

/* the candidates of the row whose tempered value is at least lo, into s->set; a vector of a
 * float row below lo is passed over with one compare */
static inline void fl_dec_set_from_row(fl_dscratch *s, int f64, double lo)
{
    int64_t k = 0, c = s->c;
    s->set.n = 0;
    if (!f64) {
        const float *y = (const float *)s->yrow;
        float lf = (float)lo;
        for (; k + FL_W <= c; k += FL_W) {
            if (flv_hmax(flv_load(y + k)) < lf) continue;
            for (int64_t j = k; j < k + FL_W; j++)
                if ((double)y[j] >= lo) fl_dec_set_push(s, 0, j);
        }
    }
    for (; k < c; k++) {
        double y = f64 ? ((const double *)s->yrow)[k] : (double)((const float *)s->yrow)[k];
        if (y >= lo) fl_dec_set_push(s, f64, k);
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
 * key_mp, 0: min-p off); whole: the set holds every token that could be kept. Returns 0 when
 * the prefix may go on past the set (then the general path must decide). */
static inline int fl_dec_resolve_set(fl_dscratch *s, const fl_drow *p, uint64_t key_mp, double mass_lim, int whole,
                                     fl_dcut *cut)
{
    fl_dkeep q = {p->keep, INT64_MAX, mass_lim};
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
    *cut = fl_dsel(s->set, s->work, &q, s->hist);
    return whole || cut->n < s->set.n;
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

/* ---------- a row to its kept set ---------- */

/* the float32 (or gathered) row x with c >= 1 classes */
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
            /* top-p over the whole row needs its mass: a fast SIMD sum, whose relative error
             * (below 1e-5) is well inside FL_DEC_ZTOL, decides when the prefix is the same at
             * both ends of its error band; otherwise the portable pass below decides */
            double zf = fl_x_dispatch(x.dt, fl_dec_fast_mass_t, x.p, c, t, m, (float *)s->yrow);
            fl_dcut lo, hi;
            if (fl_dec_resolve_set(s, p, kmp, p->p * zf * (1.0 - FL_DEC_ZTOL), 0, &lo) &&
                fl_dec_resolve_set(s, p, kmp, p->p * zf * (1.0 + FL_DEC_ZTOL), 0, &hi) && lo.n == hi.n) {
                r.cut = lo;
                return r;
            }
        }
    }
    double z = fl_x_dispatch(x.dt, fl_dec_exp_row_t, x.p, c, t, m, (float *)s->yrow, (float *)s->erow, s->bsum);
    if (want > 0 && topp && s->list.n < c && fl_dec_resolve_set(s, p, minp ? fl_dkey((double)fl_minp_floor_f(m, p->lminp)) : 0,
                                                                 p->p * z, 0, &r.cut))
        return r;
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

/* The token at the uniform u of the kept masses, in index order: the blocks' masses (a fixed
 * order), then one block element by element; *lp receives its log-probability. */
static inline int64_t fl_drow_draw(fl_dscratch *s, const fl_dres *r, double u, double *lp)
{
    int64_t n = r->src == FL_DSRC_ROW ? s->c : s->set.n, nb = (n + FL_DEC_BLOCK - 1) / FL_DEC_BLOCK;
    const fl_dset *d = &s->set;
    double *bs = s->bsum;
    if (r->src == FL_DSRC_SET) {
        /* the candidates' blocks, masked by the cut */
        for (int64_t b = 0; b < nb; b++) {
            double l[16] = {0};
            int64_t k0 = b * FL_DEC_BLOCK, k1 = k0 + FL_DEC_BLOCK < n ? k0 + FL_DEC_BLOCK : n;
            for (int64_t j = k0; j < k1; j++) l[(j - k0) & 15] += fl_dcut_keeps(&r->cut, d->key[j], d->idx[j]) ? d->e[j] : 0.0;
            for (int w = 8; w >= 1; w /= 2)
                for (int j = 0; j < w; j++) l[j] += l[j + w];
            bs[b] = l[0];
        }
    }
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
    int64_t k0 = b * FL_DEC_BLOCK, k1 = k0 + FL_DEC_BLOCK < n ? k0 + FL_DEC_BLOCK : n;
    for (int64_t j = k0; j < k1; j++) {
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
