/* fl_score_pc.h: the per-class sums of fl_score (confusion matrix, classwise ECE bins, binned
 * AUC histograms), accumulated in the same pass over the rows as the other metrics.
 * Included by fl_score.c only (static inline, one copy per ISA build).
 *
 * Each stripe of rows (fl_stripes.h) fills small arrays of its own, merged into the caller's
 * after the parallel loop, so the result does not depend on the thread count:
 * - confusion matrix: without sample weights exact int64 counts (C x C), added into the
 *   caller's counts; with weights the stripe keeps one (cell, weight) pair per row and the
 *   caller deposits them into order-independent states (fl_rsum.h), one per cell.
 * - per class c, FL_PC_* layout of fastlogits.h: the classwise ECE bins of p_c (weight,
 *   weight * [y == c], weight * p_c) and the AUC histogram of p_c over the levels
 *   0..B (level = the number of thresholds t_j = j/(B-1) with t_j <= p_c; weight, weight of
 *   the positives). Without sample weights the weights are int64 counts and sum p_c is a
 *   128-bit fixed-point sum of p_c rounded down to a multiple of 2^-63 (exact integer
 *   arithmetic, so order-independent; an absolute error below 2^-63 per row, far below the
 *   float error of p_c itself); at the end of the stripe they are deposited as exact doubles
 *   into the stripe's states. With weights, and for NaN probabilities, each value goes into
 *   the stripe's states directly (fl_rsum_add: slower, exact).
 * The deposited values are exact, and their sum has no bits below 2^-63 and stays below 2^77,
 * which the states keep without dropping any (fl_rsum.h's window), so the merged state's value
 * is the exact total whatever the split into stripes, calls and merges.
 */
#ifndef FL_SCORE_PC_H
#define FL_SCORE_PC_H

#include <stdint.h>
#include <stdlib.h>

#include "fastlogits.h"
#include "fl_rsum.h"

typedef struct {
    int64_t c, bins, levels;   /* classes, ECE bins, AUC levels (B + 1, or 0 without FL_PC_AUC) */
    int64_t npc, ece, auc;     /* states per class, offsets of the ECE and AUC blocks (-1: absent) */
    int confusion, weighted;
    const double *thr;         /* the B thresholds j/(B-1) */
    int64_t *cm;               /* unweighted confusion counts, C*C */
    int64_t *cell;             /* weighted confusion pairs of the stripe's rows */
    double *cw;
    int64_t ncell;
    int64_t *cnt;              /* unweighted counts, C*npc (the conf slots unused) */
    uint64_t *fx;              /* unweighted sum p_c per (class, ECE bin): lo, hi */
    fl_rsum *st;               /* C*npc states */
} fl_pc_acc;

/* The stripe's arrays for `rows` rows; 0 when out of memory (then fl_pc_free is still safe). */
static int fl_pc_init(fl_pc_acc *a, const fl_score_opts *o, int64_t c, int64_t rows, int weighted,
                      const double *thr)
{
    memset(a, 0, sizeof(*a));
    a->c = c;
    a->bins = o->bins;
    a->weighted = weighted;
    a->confusion = (o->per_class & FL_PC_CONFUSION) != 0;
    a->ece = (o->per_class & FL_PC_ECE) ? 0 : -1;
    a->auc = (o->per_class & FL_PC_AUC) ? (a->ece >= 0 ? 3 * o->bins : 0) : -1;
    a->levels = a->auc >= 0 ? o->auc_bins + 1 : 0;
    a->npc = (a->ece >= 0 ? 3 * o->bins : 0) + 2 * a->levels;
    a->thr = thr;
    if (a->confusion && !weighted && !(a->cm = (int64_t *)calloc((size_t)(c * c), sizeof(int64_t)))) return 0;
    if (a->confusion && weighted) {
        a->cell = (int64_t *)malloc((size_t)(rows > 0 ? rows : 1) * sizeof(int64_t));
        a->cw = (double *)malloc((size_t)(rows > 0 ? rows : 1) * sizeof(double));
        if (!a->cell || !a->cw) return 0;
    }
    if (a->npc) {
        a->st = (fl_rsum *)malloc((size_t)(c * a->npc) * sizeof(fl_rsum));
        if (!a->st) return 0;
        for (int64_t j = 0; j < c * a->npc; j++) fl_rsum_init(&a->st[j]);
        if (!weighted) {
            a->cnt = (int64_t *)calloc((size_t)(c * a->npc), sizeof(int64_t));
            a->fx = (uint64_t *)calloc((size_t)(2 * c * (a->ece >= 0 ? a->bins : 0) + 1), sizeof(uint64_t));
            if (!a->cnt || !a->fx) return 0;
        }
    }
    return 1;
}

static void fl_pc_free(fl_pc_acc *a)
{
    free(a->cm);
    free(a->cell);
    free(a->cw);
    free(a->cnt);
    free(a->fx);
    free(a->st);
}

/* one row's true class y and predicted class pred (weight w) */
static inline void fl_pc_confusion(fl_pc_acc *a, int64_t y, int64_t pred, double w)
{
    if (a->weighted) {
        a->cell[a->ncell] = y * a->c + pred;
        a->cw[a->ncell++] = w;
    } else {
        a->cm[y * a->c + pred]++;
    }
}

static inline int64_t fl_pc_ece_bin(double p, int64_t bins)
{
    double f = p * (double)bins;
    return f >= (double)bins ? bins - 1 : (f > 0.0 ? (int64_t)f : 0);  /* NaN: bin 0 */
}

/* the number of thresholds t_j = j/(B-1) (j = 0..B-1) with t_j <= p; NaN: 0 */
static inline int64_t fl_pc_level(const double *thr, int64_t nthr, double p)
{
    if (!(p >= 0.0)) return 0;
    double f = p * (double)(nthr - 1);
    int64_t q = f >= (double)(nthr - 1) ? nthr - 1 : (int64_t)f;
    if (q + 1 < nthr && thr[q + 1] <= p) q++;
    if (thr[q] > p) q--;
    return q + 1;
}

/* the 128-bit fixed-point addition of p in [0, 1] (units of 2^-63, rounded down) */
static inline void fl_pc_fx_add(uint64_t *f, double p)
{
    uint64_t v = (uint64_t)(p * 9223372036854775808.0);
    f[0] += v;
    f[1] += f[0] < v;
}

/* Class c's probability p (positive: y == c, or the label is 1) for a row of weight w. */
static inline void fl_pc_add(fl_pc_acc *a, int64_t c, double p, int positive, double w)
{
    int64_t base = c * a->npc;
    int special = p != p;
    if (a->ece >= 0) {
        int64_t b = fl_pc_ece_bin(p, a->bins), j = base + a->ece + b;
        if (a->weighted) {
            fl_rsum_add(&a->st[j], w);
            if (positive) fl_rsum_add(&a->st[j + a->bins], w);
            fl_rsum_add(&a->st[j + 2 * a->bins], w * p);
        } else {
            a->cnt[j]++;
            a->cnt[j + a->bins] += positive;
            if (special) fl_rsum_add(&a->st[j + 2 * a->bins], p);
            else fl_pc_fx_add(a->fx + 2 * (c * a->bins + b), p);
        }
    }
    if (a->auc >= 0) {
        int64_t j = base + a->auc + fl_pc_level(a->thr, a->levels - 1, p);
        if (a->weighted) {
            fl_rsum_add(&a->st[j], w);
            if (positive) fl_rsum_add(&a->st[j + a->levels], w);
        } else {
            a->cnt[j]++;
            a->cnt[j + a->levels] += positive;
        }
    }
}

static inline void fl_pc_deposit_count(fl_rsum *s, int64_t n)
{
    if (n) fl_rsum_add(s, (double)n);
}

/* The unweighted counts and fixed-point sums into the stripe's states, as exact doubles. */
static void fl_pc_settle(fl_pc_acc *a)
{
    if (a->weighted || !a->npc) return;
    for (int64_t c = 0; c < a->c; c++) {
        int64_t base = c * a->npc;
        if (a->ece >= 0) {
            for (int64_t b = 0; b < a->bins; b++) {
                fl_pc_deposit_count(&a->st[base + a->ece + b], a->cnt[base + a->ece + b]);
                fl_pc_deposit_count(&a->st[base + a->ece + a->bins + b], a->cnt[base + a->ece + a->bins + b]);
                const uint64_t *f = a->fx + 2 * (c * a->bins + b);
                fl_rsum *s = &a->st[base + a->ece + 2 * a->bins + b];
                if (f[1]) fl_rsum_add(s, (double)f[1] * 2.0);
                if (f[0] >> 32) fl_rsum_add(s, (double)(f[0] >> 32) * 0x1p-31);
                if (f[0] & 0xffffffffu) fl_rsum_add(s, (double)(f[0] & 0xffffffffu) * 0x1p-63);
            }
        }
        for (int64_t l = 0; l < 2 * a->levels; l++)
            fl_pc_deposit_count(&a->st[base + a->auc + l], a->cnt[base + a->auc + l]);
    }
}

/* The stripe's sums into the caller's (after the parallel loop, one stripe at a time). */
static void fl_pc_merge_into(const fl_pc_acc *a, const fl_score_opts *o)
{
    if (a->confusion && !a->weighted)
        for (int64_t j = 0; j < a->c * a->c; j++) o->cm[j] += a->cm[j];
    if (a->confusion && a->weighted)
        for (int64_t i = 0; i < a->ncell; i++) fl_rsum_add(&o->cmw[a->cell[i]], a->cw[i]);
    for (int64_t j = 0; j < a->c * a->npc; j++) fl_rsum_merge(&o->pc[j], &a->st[j]);
}

#endif
