/* fl_score_pc.h: the per-class sums of fl_score (confusion matrix, classwise ECE bins, binned
 * AUC histograms), accumulated in the same pass over the rows as the other metrics.
 * Included by fl_score.c only (static inline, one copy per ISA build).
 *
 * Each stripe of rows (fl_stripes.h) fills small arrays of its own, merged into the caller's
 * after the parallel loop, so the result does not depend on the thread count:
 * - confusion matrix: the stripe keeps one cell (true, predicted) per row, and its weight when
 *   weighted (O(rows), not O(C^2), per stripe); after the parallel loop the caller adds the
 *   cells to its exact int64 counts, or deposits the weights into order-independent states
 *   (fl_rsum.h), one per cell.
 * - per class c, FL_PC_* layout of fastlogits.h: the classwise ECE bins of p_c (weight,
 *   weight * [y == c], weight * p_c) and the AUC histogram of p_c over the levels
 *   0..B (level = the number of thresholds t_j = j/(B-1) with t_j <= p_c; weight, weight of
 *   the positives). Without sample weights the weights are int64 counts and sum p_c is a
 *   fixed-point sum of p_c rounded to the nearest multiple of 2^-52 (exact integer arithmetic,
 *   so order-independent; an absolute error at most 2^-53 per row, far below the float error
 *   of p_c itself); after the parallel loop they are added to the caller's exact sums
 *   (fl_score_opts.pcn, pcf), which fl_score_pc_fold deposits as exact doubles into its states
 *   when the states are read (once per result, not once per call). With weights each value
 *   goes into the stripe's states directly (fl_rsum_add: slower, exact).
 * - Without weights, most probabilities of a wide row are small and fall in the first ECE bin
 *   and in AUC level 1 (0 <= p < t_1; level 0 holds only NaN): a row only adds each p_c to a
 *   per-class total and does the bin and level work for the few p_c >= min(1/bins, 1/(B-1));
 *   that bin and level are the totals minus the others at the end (exact integers). A row
 *   whose softmax is NaN puts NaN into every class's first bin and counts at level 0.
 * - The per-class totals are the one loop over every element of the block, so they are kept
 *   in a form that vectorises on every ISA: p_c * 2^52 + 2^52 (one fused multiply-add)
 *   rounds p_c to its fixed-point value q_c (p_c <= 1 + 2^-52: e_c <= s), whose bit pattern is
 *   that of 2^52 plus q_c; a row adds the bit patterns of its C values to C uint64 lanes (a
 *   conversion, a fused multiply-add and an integer add per element, no float-to-int64
 *   conversion, which AVX2 lacks). The lanes are
 *   flushed into the 128-bit totals every FL_PC_FLUSH rows (the rows' 2^52 parts removed,
 *   their q_c sum < 2^63: no wrap) and at the end of the stripe. Float32 rows are added
 *   FL_PC_BATCH at a time (the caller keeps that many rows' exponentials: fl_pc_slot), so a
 *   lane is loaded and stored once per batch, not once per row; integer sums, so the same
 *   totals whatever the grouping.
 * The deposited values are exact, have no bits below 2^-52, and are below 2^43 while a stripe
 * has fewer than 2^43 rows; fl_rsum.h's window keeps 2^95 of range below its largest value, so
 * the merged state's value is the exact total whatever the split into stripes, calls and
 * merges.
 */
#ifndef FL_SCORE_PC_H
#define FL_SCORE_PC_H

#include <stdint.h>
#include <stdlib.h>

#include "fastlogits.h"
#include "fl_rsum.h"
#include "fl_scalar_math.h"
#include "fl_simd.h"

#define FL_PC_BLOCK 32   /* weighted softmax rows per block of deposits (fl_pc_block_flush) */
#define FL_PC_BATCH 4    /* unweighted float32 rows per pass over the lanes (fl_pc_batch_totals) */

typedef struct {
    int64_t c, bins, levels;   /* classes, ECE bins, AUC levels (B + 1, or 0 without FL_PC_AUC) */
    int64_t npc, ece, auc;     /* states per class, offsets of the ECE and AUC blocks (-1: absent) */
    int confusion, weighted;
    const double *thr;         /* the B thresholds j/(B-1) */
    int64_t *cell;             /* the confusion cells of the stripe's rows (and their weights) */
    double *cw;
    int64_t ncell;
    int64_t *cnt;              /* unweighted counts, C*npc (the conf slots unused) */
    uint64_t *fx;              /* unweighted sum p_c per (class, ECE bin): lo, hi */
    fl_rsum *st;               /* C*npc states */
    uint64_t *tot_lo, *tot_hi; /* unweighted: sum p_c per class (fixed point) */
    uint64_t *lane;            /* unweighted: per class, the bit patterns of p_c * 2^52 + 2^52 since the flush */
    int64_t pending;           /* unweighted: rows added to the lanes since the flush */
    const float *bat_e[FL_PC_BATCH];  /* unweighted float32: the exponentials of the rows not yet */
    double bat_inv52[FL_PC_BATCH];    /* in the lanes, and their 2^52 / s */
    int64_t nbat;
    int64_t *npos;             /* unweighted: rows with y == c */
    int64_t nrows;             /* unweighted: rows seen */
    int special;               /* unweighted: a row with a NaN softmax was seen */
    double tmin;               /* below it, p_c is in the first bin and level */
    double *blk_p, *blk_w;     /* weighted softmax rows: the block's p_c (row-major) and weights */
    int64_t *blk_y, nblk;      /* ... their classes y, and the rows held */
    double *col;               /* ... one class's first-bin and first-level values, 3 * FL_PC_BLOCK */
} fl_pc_acc;

/* The layout of the per-class states (c, bins, confusion, ece, auc, levels, npc) from o; the
 * rest of *a zeroed */
static void fl_pc_layout(fl_pc_acc *a, const fl_score_opts *o, int64_t c)
{
    memset(a, 0, sizeof(*a));
    a->c = c;
    a->bins = o->bins;
    a->confusion = (o->per_class & FL_PC_CONFUSION) != 0;
    a->ece = (o->per_class & FL_PC_ECE) ? 0 : -1;
    a->auc = (o->per_class & FL_PC_AUC) ? (a->ece >= 0 ? 3 * o->bins : 0) : -1;
    a->levels = a->auc >= 0 ? o->auc_bins + 1 : 0;
    a->npc = (a->ece >= 0 ? 3 * o->bins : 0) + 2 * a->levels;
}

/* The stripe's arrays for `rows` rows; 0 when out of memory (then fl_pc_free is still safe). */
static int fl_pc_init(fl_pc_acc *a, const fl_score_opts *o, int64_t c, int64_t rows, int weighted,
                      const double *thr)
{
    fl_pc_layout(a, o, c);
    a->weighted = weighted;
    a->thr = thr;
    if (a->confusion) {
        a->cell = (int64_t *)malloc((size_t)(rows > 0 ? rows : 1) * sizeof(int64_t));
        if (!a->cell) return 0;
        if (weighted && !(a->cw = (double *)malloc((size_t)(rows > 0 ? rows : 1) * sizeof(double)))) return 0;
    }
    if (a->npc && weighted) {
        a->st = (fl_rsum *)malloc((size_t)(c * a->npc) * sizeof(fl_rsum));
        a->blk_p = (double *)malloc((size_t)(FL_PC_BLOCK * c) * sizeof(double));
        a->blk_w = (double *)malloc(FL_PC_BLOCK * sizeof(double));
        a->blk_y = (int64_t *)malloc(FL_PC_BLOCK * sizeof(int64_t));
        a->col = (double *)malloc(3 * FL_PC_BLOCK * sizeof(double));
        if (!a->st || !a->blk_p || !a->blk_w || !a->blk_y || !a->col) return 0;
        for (int64_t j = 0; j < c * a->npc; j++) fl_rsum_init(&a->st[j]);
    }
    if (a->npc) {
        if (!weighted) {
            a->cnt = (int64_t *)calloc((size_t)(c * a->npc), sizeof(int64_t));
            a->fx = (uint64_t *)calloc((size_t)(2 * c * (a->ece >= 0 ? a->bins : 0) + 1), sizeof(uint64_t));
            a->tot_lo = (uint64_t *)calloc((size_t)c, sizeof(uint64_t));
            a->tot_hi = (uint64_t *)calloc((size_t)c, sizeof(uint64_t));
            a->lane = (uint64_t *)calloc((size_t)c, sizeof(uint64_t));
            a->npos = (int64_t *)calloc((size_t)c, sizeof(int64_t));
            if (!a->cnt || !a->fx || !a->tot_lo || !a->tot_hi || !a->lane || !a->npos) return 0;
        }
        a->tmin = 2.0;
        if (a->ece >= 0 && a->bins > 1) a->tmin = 1.0 / (double)a->bins;
        if (a->auc >= 0 && thr[1] < a->tmin) a->tmin = thr[1];
        a->tmin *= 1.0 - 0x1p-40;  /* below the boundaries' rounding: the slow path decides */
    }
    return 1;
}

static void fl_pc_free(fl_pc_acc *a)
{
    free(a->cell);
    free(a->cw);
    free(a->cnt);
    free(a->fx);
    free(a->st);
    free(a->tot_lo);
    free(a->tot_hi);
    free(a->lane);
    free(a->npos);
    free(a->blk_p);
    free(a->blk_w);
    free(a->blk_y);
    free(a->col);
}

/* one row's true class y and predicted class pred (weight w) */
static inline void fl_pc_confusion(fl_pc_acc *a, int64_t y, int64_t pred, double w)
{
    if (a->weighted) a->cw[a->ncell] = w;
    a->cell[a->ncell++] = y * a->c + pred;
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

/* The fixed point of the unweighted sums p_c: units of 2^-52, p * 2^52 rounded to the nearest
 * integer q as the bit pattern of q + 2^52 (exact for p * 2^52 < 2^52 + 2^53: p <= 1 + 2^-52).
 * inv52 = 2^52 / s, so e * inv52 = (e / s) * 2^52 (a power-of-two scale), and the product is
 * added to 2^52 unrounded (fma: one rounding, to the nearest integer; the vector loops fuse it
 * into their multiply-adds, the scalar build calls the correctly rounded fma of the C library:
 * the same bits on every path; a separate multiply and add cost 25% more of the loop). */
#define FL_PC_UNIT 0x1p52
#define FL_PC_FLUSH 2048   /* rows between flushes of the lanes: 2048 * (2^52 + 1) < 2^63 */
static inline uint64_t fl_pc_qbits(double e, double inv52) { return fl_d2u(fma(e, inv52, FL_PC_UNIT)); }
static inline uint64_t fl_pc_q(double e, double inv52) { return fl_pc_qbits(e, inv52) - fl_d2u(FL_PC_UNIT); }

/* the 128-bit fixed-point addition of q */
static inline void fl_pc_fx_add(uint64_t *f, uint64_t q)
{
    f[0] += q;
    f[1] += f[0] < q;
}

/* With weights: class c's probability p (positive: y == c, or the label is 1) for a row of
 * weight w, into the stripe's states. */
static inline void fl_pc_add_weighted(fl_pc_acc *a, int64_t c, double p, int positive, double w)
{
    int64_t base = c * a->npc;
    if (a->ece >= 0) {
        int64_t j = base + a->ece + fl_pc_ece_bin(p, a->bins);
        fl_rsum_add(&a->st[j], w);
        if (positive) fl_rsum_add(&a->st[j + a->bins], w);
        fl_rsum_add(&a->st[j + 2 * a->bins], w * p);
    }
    if (a->auc >= 0) {
        int64_t j = base + a->auc + fl_pc_level(a->thr, a->levels - 1, p);
        fl_rsum_add(&a->st[j], w);
        if (positive) fl_rsum_add(&a->st[j + a->levels], w);
    }
}

/* With weights, softmax rows: the rows of a block of FL_PC_BLOCK are kept (p_c, w, y) and
 * deposited class by class. Each class's first ECE bin and first AUC level take nearly every
 * row, so their values (w, w * p_c; w) are gathered into columns of the block, 0 for the rows
 * that go elsewhere (a 0 leaves a state unchanged), and deposited as arrays (fl_rsum_add_f64s:
 * vectorised runs); the other bins, levels and the positives are deposited one value at a
 * time. The states are those of fl_pc_add_weighted, bit for bit: the same values. */
static void fl_pc_block_flush(fl_pc_acc *a)
{
    int64_t nb = a->nblk, bins = a->bins, lv = a->levels;
    double *cw = a->col, *cp = cw + FL_PC_BLOCK, *ca = cp + FL_PC_BLOCK;
    for (int64_t c = 0; c < a->c; c++) {
        fl_rsum *st = a->st + c * a->npc;
        fl_rsum *ece = a->ece >= 0 ? st + a->ece : NULL, *auc = a->auc >= 0 ? st + a->auc : NULL;
        for (int64_t r = 0; r < nb; r++) {
            double p = a->blk_p[r * a->c + c], w = a->blk_w[r];
            int pos = a->blk_y[r] == c;
            cw[r] = cp[r] = ca[r] = 0.0;
            if (ece) {
                int64_t b = p < a->tmin ? 0 : fl_pc_ece_bin(p, bins);
                if (b == 0) {
                    cw[r] = w;
                    cp[r] = w * p;
                } else {
                    fl_rsum_add(&ece[b], w);
                    fl_rsum_add(&ece[2 * bins + b], w * p);
                }
                if (pos) fl_rsum_add(&ece[bins + b], w);
            }
            if (auc) {
                int64_t l = p < a->tmin ? 1 : fl_pc_level(a->thr, lv - 1, p);
                if (l == 1) ca[r] = w;
                else fl_rsum_add(&auc[l], w);
                if (pos) fl_rsum_add(&auc[lv + l], w);
            }
        }
        if (ece) {
            fl_rsum_add_f64s(&ece[0], cw, nb);
            fl_rsum_add_f64s(&ece[2 * bins], cp, nb);
        }
        if (auc) fl_rsum_add_f64s(&auc[1], ca, nb);
    }
    a->nblk = 0;
}

/* With weights: one softmax row's p_c = e[c] * inv (float or double exponentials), class y,
 * weight w, into the block */
#define FL_PC_DEFINE_WROW(NAME, T)                                                           \
    static void NAME(fl_pc_acc *a, const T *e, double inv, int64_t y, double w)             \
    {                                                                                        \
        double *p = a->blk_p + a->nblk * a->c;                                               \
        int64_t n = a->c;                                                                    \
        for (int64_t c = 0; c < n; c++) p[c] = (double)e[c] * inv;                           \
        a->blk_w[a->nblk] = w;                                                               \
        a->blk_y[a->nblk] = y;                                                               \
        if (++a->nblk == FL_PC_BLOCK) fl_pc_block_flush(a);                                  \
    }
FL_PC_DEFINE_WROW(fl_pc_wrow_f32, float)
FL_PC_DEFINE_WROW(fl_pc_wrow_f64, double)

/* Without weights: class c's p (finite, >= tmin; q its fixed point) into the ECE bins and AUC
 * levels above the first ones (which are derived at the end). */
static inline void fl_pc_add_high(fl_pc_acc *a, int64_t c, double p, uint64_t q, int positive)
{
    int64_t base = c * a->npc;
    if (a->ece >= 0) {
        int64_t b = fl_pc_ece_bin(p, a->bins);
        if (b > 0) {
            a->cnt[base + a->ece + b]++;
            a->cnt[base + a->ece + a->bins + b] += positive;
            fl_pc_fx_add(a->fx + 2 * (c * a->bins + b), q);
        }
    }
    if (a->auc >= 0) {
        int64_t l = fl_pc_level(a->thr, a->levels - 1, p);
        if (l > 1) {
            a->cnt[base + a->auc + l]++;
            a->cnt[base + a->auc + a->levels + l] += positive;
        }
    }
}

/* Without weights: a row whose probabilities are all NaN (ECE: NaN in the first bins; AUC:
 * level 0). */
static void fl_pc_special_row(fl_pc_acc *a, int64_t y)
{
    a->special = 1;
    if (a->auc < 0) return;
    for (int64_t c = 0; c < a->c; c++) a->cnt[c * a->npc + a->auc]++;
    if (y >= 0) a->cnt[y * a->npc + a->auc + a->levels]++;
}

/* Without weights: the lanes into the 128-bit totals (each lane holds `pending` rows' 2^52). */
static void fl_pc_flush(fl_pc_acc *a)
{
    uint64_t off = (uint64_t)a->pending * fl_d2u(FL_PC_UNIT);
    for (int64_t c = 0; c < a->c; c++) {
        uint64_t q = a->lane[c] - off;
        a->tot_lo[c] += q;
        a->tot_hi[c] += a->tot_lo[c] < q;
        a->lane[c] = 0;
    }
    a->pending = 0;
}

/* Without weights: the start of a row (positive: the class y, -1 none); 0 for a special row
 * (inv = 1/s NaN), which is then recorded whole. */
static inline int fl_pc_row_begin(fl_pc_acc *a, double inv, int64_t y)
{
    a->nrows++;
    if (y >= 0) a->npos[y]++;
    if (inv != inv) {
        fl_pc_special_row(a, y);
        return 0;
    }
    return 1;
}

/* Without weights: the row's p_c = e_c * inv, e_c >= emin (a bound a little below tmin * s), one
 * element (k) at a time */
static inline void fl_pc_row_high(fl_pc_acc *a, int64_t k, double e, double inv, int64_t y)
{
    double p = e * inv;
    if (p >= a->tmin) fl_pc_add_high(a, k, p, fl_pc_q(e, inv * FL_PC_UNIT), k == y);
}

/* the bound below which e_c cannot give p_c >= tmin, with room for the rounding of the product */
static inline double fl_pc_emin(const fl_pc_acc *a, double inv) { return a->tmin / inv * (1.0 - 0x1p-20); }

/* Without weights: one float64 row's probabilities p_c = e[c] * inv into the lanes (the one
 * loop over every element: it vectorises), then the flush when due. */
static void fl_pc_totals_f64(fl_pc_acc *a, const double *e, double inv)
{
    if (a->ece < 0) return;
    uint64_t *lane = a->lane;
    int64_t n = a->c;
    double inv52 = inv * FL_PC_UNIT;
    for (int64_t c = 0; c < n; c++) lane[c] += fl_pc_qbits(e[c], inv52);
    if (++a->pending == FL_PC_FLUSH) fl_pc_flush(a);
}

/* Without weights: the float32 rows of the batch into the lanes (FL_PC_BATCH rows in one loop;
 * fewer, at the end of a stripe, one at a time), then the flush when due (FL_PC_FLUSH is a
 * multiple of FL_PC_BATCH: a lane never holds more than FL_PC_FLUSH rows). */
static void fl_pc_batch_totals(fl_pc_acc *a)
{
    uint64_t *lane = a->lane;
    int64_t n = a->c, nb = a->nbat;
    if (nb == FL_PC_BATCH) {
        const float *e0 = a->bat_e[0], *e1 = a->bat_e[1], *e2 = a->bat_e[2], *e3 = a->bat_e[3];
        double v0 = a->bat_inv52[0], v1 = a->bat_inv52[1], v2 = a->bat_inv52[2], v3 = a->bat_inv52[3];
        for (int64_t c = 0; c < n; c++)
            lane[c] += (fl_pc_qbits((double)e0[c], v0) + fl_pc_qbits((double)e1[c], v1)) +
                       (fl_pc_qbits((double)e2[c], v2) + fl_pc_qbits((double)e3[c], v3));
    } else {
        for (int64_t r = 0; r < nb; r++) {
            const float *e = a->bat_e[r];
            double v = a->bat_inv52[r];
            for (int64_t c = 0; c < n; c++) lane[c] += fl_pc_qbits((double)e[c], v);
        }
    }
    a->pending += nb;
    a->nbat = 0;
    if (a->pending >= FL_PC_FLUSH) fl_pc_flush(a);
}

/* Without weights: the slot (0 .. FL_PC_BATCH - 1) of the caller's row buffers where the next
 * float32 row's exponentials go: the batch keeps pointers to the earlier rows' buffers. */
static inline int64_t fl_pc_slot(const fl_pc_acc *a) { return a->nbat; }

/* Without weights: a float32 row's exponentials e (in the buffer of slot fl_pc_slot) into the
 * batch, its totals added when the batch is full. */
static inline void fl_pc_totals_f32(fl_pc_acc *a, const float *e, double inv)
{
    if (a->ece < 0) return;
    a->bat_e[a->nbat] = e;
    a->bat_inv52[a->nbat] = inv * FL_PC_UNIT;
    if (++a->nbat == FL_PC_BATCH) fl_pc_batch_totals(a);
}

/* Without weights: a float32 row's exponentials e (p_c = e_c * inv; positive the class y, -1
 * none), its few large p_c found a vector at a time */
static void fl_pc_row_f32(fl_pc_acc *a, const float *e, double inv, int64_t y)
{
    if (!fl_pc_row_begin(a, inv, y)) return;
    fl_pc_totals_f32(a, e, inv);
    float emin = (float)fl_pc_emin(a, inv);
    flv vmin = flv_set1(emin);
    int64_t k = 0, n = a->c;
    for (; k + 4 * FL_W <= n; k += 4 * FL_W) {  /* four vectors a test: the max of their maxima */
        flv m = flv_max_ord(flv_max_ord(flv_load(e + k), flv_load(e + k + FL_W)),
                            flv_max_ord(flv_load(e + k + 2 * FL_W), flv_load(e + k + 3 * FL_W)));
        if (!flv_any_ge(m, vmin)) continue;
        uint64_t msk = 0;   /* then only the lanes at or above emin, in order */
        for (int j = 0; j < 4; j++) msk |= (uint64_t)flv_mask_ge(flv_load(e + k + j * FL_W), vmin) << (j * FL_W);
        for (; msk; msk &= msk - 1) {
            int64_t q = k + fl_ctz64(msk);
            fl_pc_row_high(a, q, (double)e[q], inv, y);
        }
    }
    for (; k < n; k += FL_W) {  /* the last vectors one at a time; the partial one's fill is below emin */
        int64_t w = n - k < FL_W ? n - k : FL_W;
        for (unsigned msk = flv_mask_ge(flv_load_part(e + k, w, -INFINITY), vmin); msk; msk &= msk - 1) {
            int64_t q = k + fl_ctz(msk);
            fl_pc_row_high(a, q, (double)e[q], inv, y);
        }
    }
}

/* the same for a float64 row's exponentials */
static void fl_pc_row_f64(fl_pc_acc *a, const double *e, double inv, int64_t y)
{
    if (!fl_pc_row_begin(a, inv, y)) return;
    fl_pc_totals_f64(a, e, inv);
    double emin = fl_pc_emin(a, inv);
    for (int64_t k = 0; k < a->c; k++)
        if (e[k] >= emin) fl_pc_row_high(a, k, e[k], inv, y);
}

/* Without weights: label k's probability p of one binary element (the row is counted apart,
 * in nrows); only the AUC levels (sigmoid mode has no classwise ECE). */
static inline void fl_pc_elem(fl_pc_acc *a, int64_t k, double p, int positive)
{
    a->npos[k] += positive;
    if (p >= a->tmin) {
        fl_pc_add_high(a, k, p, fl_pc_q(p, FL_PC_UNIT), positive);
    } else if (p != p && a->auc >= 0) {
        a->cnt[k * a->npc + a->auc]++;
        a->cnt[k * a->npc + a->auc + a->levels] += positive;
    }
}

/* Without weights: label k's element of the current row is ignored (sigmoid mode): counted in
 * level 1's slot, which fl_pc_derive_first takes off the label's rows before it overwrites it
 * (no element is added to level 1 before: its count is derived). */
static inline void fl_pc_skip(fl_pc_acc *a, int64_t k)
{
    if (a->auc >= 0 && !a->weighted) a->cnt[k * a->npc + a->auc + 1]++;
}

/* Without weights: the first ECE bin and AUC level 1 of every class from the totals. */
static void fl_pc_derive_first(fl_pc_acc *a)
{
    for (int64_t c = 0; c < a->c; c++) {
        int64_t base = c * a->npc;
        if (a->ece >= 0) {
            int64_t n = a->nrows, pos = a->npos[c];
            uint64_t lo = a->tot_lo[c], hi = a->tot_hi[c];
            for (int64_t b = 1; b < a->bins; b++) {
                const uint64_t *f = a->fx + 2 * (c * a->bins + b);
                n -= a->cnt[base + a->ece + b];
                pos -= a->cnt[base + a->ece + a->bins + b];
                hi -= f[1] + (lo < f[0]);
                lo -= f[0];
            }
            a->cnt[base + a->ece] = n;
            a->cnt[base + a->ece + a->bins] = pos;
            a->fx[2 * c * a->bins] = lo;
            a->fx[2 * c * a->bins + 1] = hi;
        }
        if (a->auc >= 0) {
            int64_t n = a->nrows - a->cnt[base + a->auc + 1], pos = a->npos[c];  /* less the ignored */
            for (int64_t l = 0; l < a->levels; l++) {
                if (l == 1) continue;
                n -= a->cnt[base + a->auc + l];
                pos -= a->cnt[base + a->auc + a->levels + l];
            }
            a->cnt[base + a->auc + 1] = n;
            a->cnt[base + a->auc + a->levels + 1] = pos;
        }
    }
}

static inline void fl_pc_deposit_count(fl_rsum *s, int64_t n)
{
    if (n) fl_rsum_add(s, (double)n);
}

/* The end of a stripe's rows (in its task): the lanes flushed, the derived first bins. */
static void fl_pc_settle(fl_pc_acc *a)
{
    if (!a->npc) return;
    if (a->weighted) {
        if (a->nblk) fl_pc_block_flush(a);
        return;
    }
    if (a->ece >= 0) {
        if (a->nbat) fl_pc_batch_totals(a);
        fl_pc_flush(a);
    }
    fl_pc_derive_first(a);
}

/* Without weights: counts cnt (C*npc) and fixed-point sums fx (C*bins pairs) in the layout of a
 * (fl_pc_layout) deposited into the states st (C*npc), as exact doubles, and zeroed. */
static void fl_pc_deposit(const fl_pc_acc *a, int64_t *cnt, uint64_t *fx, fl_rsum *st)
{
    for (int64_t c = 0; c < a->c; c++) {
        int64_t base = c * a->npc;
        if (a->ece >= 0) {
            for (int64_t b = 0; b < a->bins; b++) {
                fl_pc_deposit_count(&st[base + a->ece + b], cnt[base + a->ece + b]);
                fl_pc_deposit_count(&st[base + a->ece + a->bins + b], cnt[base + a->ece + a->bins + b]);
                uint64_t *f = fx + 2 * (c * a->bins + b);
                fl_rsum *s = &st[base + a->ece + 2 * a->bins + b];
                if (f[1]) fl_rsum_add(s, (double)f[1] * 0x1p12);
                if (f[0] >> 32) fl_rsum_add(s, (double)(f[0] >> 32) * 0x1p-20);
                if (f[0] & 0xffffffffu) fl_rsum_add(s, (double)(f[0] & 0xffffffffu) * 0x1p-52);
                f[0] = f[1] = 0;
            }
        }
        for (int64_t l = 0; l < 2 * a->levels; l++)
            fl_pc_deposit_count(&st[base + a->auc + l], cnt[base + a->auc + l]);
        memset(cnt + base, 0, (size_t)a->npc * sizeof(int64_t));
    }
}

/* Without weights: stripe b's counts and fixed-point sums added to counts cnt and sums fx of
 * b's layout (exact integers, so in any order) */
static void fl_pc_add_sums(int64_t *cnt, uint64_t *fx, const fl_pc_acc *b)
{
    for (int64_t j = 0; j < b->c * b->npc; j++) cnt[j] += b->cnt[j];
    for (int64_t j = 0; b->ece >= 0 && j < b->c * b->bins; j++) {
        uint64_t *f = fx + 2 * j;
        const uint64_t *g = b->fx + 2 * j;
        f[1] += g[1];
        fl_pc_fx_add(f, g[0]);
    }
}

/* Without weights: the stripe's sums added to the caller's exact ones (o->pcn, o->pcf), and NaN
 * deposited into every class's sum of p_c in the first ECE bin when a row's softmax was NaN. */
static void fl_pc_add_exact(const fl_pc_acc *a, const fl_score_opts *o)
{
    fl_pc_add_sums(o->pcn, o->pcf, a);
    if (a->special && a->ece >= 0)
        for (int64_t c = 0; c < a->c; c++) fl_rsum_add(&o->pc[c * a->npc + a->ece + 2 * a->bins], NAN);
}

/* Without weights: stripe b's sums added to stripe a's, so that a call adds its sums to the
 * caller's once, whatever its number of stripes. */
static void fl_pc_absorb(fl_pc_acc *a, const fl_pc_acc *b)
{
    if (a->weighted || !a->npc) return;
    fl_pc_add_sums(a->cnt, a->fx, b);
    a->special |= b->special;
}

/* The stripe's sums into the caller's (after the parallel loop, one stripe at a time); without
 * weights the per-class sums only when `deposit` (the stripes absorbed into one: fl_pc_absorb),
 * into the caller's exact sums (their deposits into the states, about 2 million instructions
 * for 1000 classes and 15 bins (callgrind), wait for fl_score_pc_fold). */
static void fl_pc_merge_into(const fl_pc_acc *a, const fl_score_opts *o, int deposit)
{
    if (a->confusion && !a->weighted)
        for (int64_t i = 0; i < a->ncell; i++) o->cm[a->cell[i]]++;
    if (a->confusion && a->weighted)
        for (int64_t i = 0; i < a->ncell; i++) fl_rsum_add(&o->cmw[a->cell[i]], a->cw[i]);
    if (!a->npc) return;
    if (a->weighted)
        for (int64_t j = 0; j < a->c * a->npc; j++) fl_rsum_merge(&o->pc[j], &a->st[j]);
    else if (deposit)
        fl_pc_add_exact(a, o);
}

#endif
