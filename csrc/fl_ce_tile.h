/* fl_ce_tile.h: cross-entropy rows with few classes, FL_W rows in the SIMD lanes at a time
 * (fl_tile.h), for float32 logits and class indices (fl_ce.c includes it after fl_ce_core.h).
 *
 * A row shorter than a vector leaves most lanes idle and pays per-row overhead; a tile puts
 * FL_W rows in the lanes instead, so max, exponentials and sums run lane-wise with the same
 * operations as the one-row path (fl_ce_f32.h). Losses are finished a batch of tiles at a time
 * and deposited into the task's loss sum as one array; rows that a tile cannot take go back to
 * the one-row path: a tile with an out-of-range class (an error), and, after the tile, the rows
 * whose max is not finite (the tile's other rows stay in it). Compiled once per ISA.
 */
#ifndef FL_CE_TILE_H
#define FL_CE_TILE_H

#include "fl_ce_core.h"
#include "fl_tile.h"

/* Tiles whose losses wait for fl_ce_tiles_flush: the last step of a tile's loss, a log1p, ends
 * a long chain of dependent operations (gathers, max, exponentials, sums); taken for a batch
 * of tiles at once, the chains of several tiles overlap instead of one tile's chain stalling
 * the next (0.35 -> 0.27 ms on 65536 x 2). */
#define FL_CE_BATCH 8

/* The widest rows of the tiles: past FL_LANES_MAX_C, where they are faster than the one-row
 * path (Zen 4, AVX-512, 10,000,000 logits, row path -> tiles, ms: loss 65 classes 15.6 -> 6.8,
 * 100: 10.9 -> 8.7, 112: 9.7 -> 8.9, 128: 8.6 -> 8.4; loss and gradient 65: 23.6 -> 17.0, 100
 * and 112 the same, 128: 12.9 -> 14.4, the gradient's rows stored by gathers past 32 classes,
 * fl_tile_store). One limit with and without the gradient, so a row's loss is the same bits
 * either way. A tile's rows need not have the one-row path's bits (they equal them to
 * rounding): it hands back only rows whose max is not finite, which the one-row path
 * finishes alone. */
#define FL_CE_TILE_MAX_C 112

/* Rows of more classes sum in four accumulators, so none takes more than 32 terms */
#define FL_CE_TILE_NACC4_C 64

/* Per-task scratch of the row-in-lanes path: two tiles, the tile index tables, the batch of
 * pending losses: lane inputs others, x_y - m, weight and class (bo, bx, bw, by: FL_W each per
 * tile) and each tile's rows, and the batch's losses on their way to the sum (bl). */
typedef struct {
    float *xt, *gt;
    int32_t *gidx, *gidx_part, *oidx;
    float bo[FL_CE_BATCH * FL_W], bx[FL_CE_BATCH * FL_W], bw[FL_CE_BATCH * FL_W], by[FL_CE_BATCH * FL_W];
    float bl[FL_CE_BATCH * FL_W];
    int64_t bi0[FL_CE_BATCH], bi1[FL_CE_BATCH], bnr[FL_CE_BATCH];
    unsigned bskip[FL_CE_BATCH]; /* lanes whose rows went one by one (their losses are theirs) */
    int nb;
} fl_ce_tiles;

/* The losses of the pending tiles into the task's loss sum (and the per-row losses). */
static void fl_ce_tiles_flush(const fl_ce_ctx *ctx, fl_ce_tiles *t, fl_ce_acc *acc)
{
    const fl_ce_args *a = ctx->a;
    flv zero = flv_set1(0.0f);
    for (int q = 0; q < t->nb; q++) {
        flv vy = flv_load(t->by + q * FL_W), vxy = flv_load(t->bx + q * FL_W);
        flv vsw = flv_load(t->bw + q * FL_W), others = flv_load(t->bo + q * FL_W);
        /* unused lanes are selected out of the sum, not multiplied by 0: a lane past nr
         * repeats row 0, whose loss may be infinite */
        flv loss = flv_sel_neg(vy, zero, flv_mul(vsw, flv_sub(flv_log1p(others), vxy)));
        float *l = t->bl + q * FL_W;
        flv_store(l, loss);
        if (a->loss.data)
            for (int64_t j = 0; j < t->bnr[q]; j++)
                if (!(t->bskip[q] >> j & 1u)) fl_put_scalar(&a->loss, t->bi0[q], t->bi1[q] + j, (double)l[j]);
    }
    fl_rsum_add_f32s(&acc->ce.s, t->bl, (int64_t)t->nb * FL_W);
    t->nb = 0;
}

/* One lane's class y: its class as a float (-1 when ignored) and weight 1 (0 when ignored);
 * counts it valid, or marks the tile bad for an out-of-range class. */
FL_ALWAYS_INLINE void fl_ce_lane_class(int64_t y, int64_t ign, int64_t c, float *yf, float *sw, int64_t *badrow,
                                      int64_t *nv)
{
    int64_t use = y != ign;
    *badrow |= use & ((uint64_t)y >= (uint64_t)c);
    *nv += use;
    *yf = use ? (float)y : -1.0f;
    *sw = use ? 1.0f : 0.0f;
}

/* A tile's sums of fl_ce_online_t, lane-wise, in nacc float32 accumulators (2, or 4 past
 * FL_CE_TILE_NACC4_C classes; a constant) of at most 32 terms each, class k into accumulator
 * k mod nacc, joined pairwise: *cnt the logits equal to the lane's max m, *rest the other
 * exponentials exp(x - m) (stored in gt too, when not NULL), *vxy the logit of the lane's class
 * vy (a float; m for an ignored lane). */
FL_ALWAYS_INLINE void fl_ce_tile_sums(const float *xt, float *gt, int64_t c, flv m, flv vy, int nacc, flv *cnt,
                                      flv *rest, flv *vxy)
{
    flv zero = flv_set1(0.0f), one = flv_set1(1.0f), half = flv_set1(0.5f), kf = zero, n = zero, xy = m;
    flv r[4] = {zero, zero, zero, zero};
    for (int64_t k = 0; k < c; k += nacc) {
        FL_UNROLL(4)
        for (int h = 0; h < nacc; h++) {
            if (k + h == c) break;
            flv x = flv_load(xt + (k + h) * FL_W), d = flv_sub(x, m), e = flv_exp_neg_fast(d);
            if (gt) flv_store(gt + (k + h) * FL_W, e);
            r[h] = flv_add(r[h], flv_sel_neg(d, e, zero));
            n = flv_add(n, flv_sel_neg(d, zero, one));
            xy = flv_sel_neg(flv_sub(flv_abs(flv_sub(vy, kf)), half), x, xy);
            kf = flv_add(kf, one);
        }
    }
    *cnt = n;
    *rest = nacc == 4 ? flv_add(flv_add(r[0], r[1]), flv_add(r[2], r[3])) : flv_add(r[0], r[1]);
    *vxy = xy;
}

/* nr <= FL_W rows (i0, i1 ... i1 + nr - 1) with FL_W rows in the lanes: float32 logits, class
 * indices, c <= FL_CE_TILE_MAX_C, no label smoothing or z-loss (fl_ce_lanes_ok). The loss of a
 * row is the same as fl_ce_index_f32's to rounding: -log p_y = log1p(n_max - 1 + rest) - (x_y - m)
 * in float32 lanes, a sum of two non-negative terms. The losses join the task's sums a batch
 * of tiles at a time (fl_ce_tiles_flush). Ignored rows take part as lanes of weight 0 whose loss and gradient are
 * selected to 0, as are the lanes past nr; x_y is picked by a compare per class rather than a
 * gather from the tile, whose stores would still be in flight. Returns 0, touching nothing,
 * when a row has an out-of-range class: the caller then takes the rows one by one; else 1,
 * with the lanes whose rows the caller must take one by one in *skip (a non-finite max). */
static int fl_ce_tile_f32(const fl_ce_ctx *ctx, int64_t i0, int64_t i1, int64_t nr, fl_ce_acc *acc, fl_ce_tiles *t,
                          unsigned *skip)
{
    const fl_ce_args *a = ctx->a;
    int64_t c = ctx->g.c;
    /* yf[j]: row j's class as a float (exact, c <= FL_CE_TILE_MAX_C), -1 for an ignored row or a lane past nr */
    float yf[FL_W], sw[FL_W];
    const char *tp = fl_row_ptr(&a->target, i0, i1);
    int64_t ts = a->target.s1, ign = a->ignore_index, badrow = 0, nv = 0;
    int weighted = a->weight || a->sample_weight.data;
    if (nr == FL_W && ts == 1 && a->target.dtype == FL_I64 && (uint64_t)ign >= (uint64_t)c) {
        /* the common layout, with an ignore_index that is not a class. Every class in [0, c)
         * (so none ignored) is one OR-reduction and a conversion, loops the compiler
         * vectorises; otherwise lane by lane */
        const int64_t *yp = (const int64_t *)(const void *)tp;
        uint64_t out = 0;
        for (int64_t j = 0; j < FL_W; j++) out |= (uint64_t)((uint64_t)yp[j] >= (uint64_t)c);
        if (!out) {
            for (int64_t j = 0; j < FL_W; j++) {
                yf[j] = (float)(int32_t)yp[j];  /* exact: 0 <= y < c <= FL_CE_TILE_MAX_C */
                sw[j] = 1.0f;
            }
            nv = FL_W;
        } else {
            for (int64_t j = 0; j < FL_W; j++) fl_ce_lane_class(yp[j], ign, c, yf + j, sw + j, &badrow, &nv);
        }
    } else {
        for (int64_t j = 0; j < FL_W; j++) {
            int64_t y = j >= nr                     ? ign
                        : a->target.dtype == FL_I64 ? ((const int64_t *)(const void *)tp)[j * ts]
                                                    : (int64_t)((const int32_t *)(const void *)tp)[j * ts];
            fl_ce_lane_class(y, ign, c, yf + j, sw + j, &badrow, &nv);
        }
    }
    if (badrow) return 0;
    const int32_t *gidx = nr == FL_W ? t->gidx : t->gidx_part;
    fl_tile_load((const float *)(void *)fl_row_ptr(&a->x, i0, i1), a->x.s1, a->x.sc, c, nr, gidx, t->xt);
    flv m = fl_tile_max(t->xt, c);
    /* rows whose max is not finite (a NaN, +inf, all -inf) go one by one after the tile (*skip):
     * here they are lanes of weight 0, like ignored rows, so the tile's other rows keep the
     * same arithmetic whatever their neighbours hold (lanes past nr are ignored already) */
    unsigned bad = ~flv_mask_ge(flv_set1(3.40282347e38f), flv_abs(m)) & (unsigned)((1ull << nr) - 1u);
    *skip = bad;
    for (int64_t j = 0; bad && j < nr; j++) {
        if (!(bad >> j & 1u)) continue;
        nv -= yf[j] >= 0.0f;
        yf[j] = -1.0f;
        sw[j] = 0.0f;
    }
    /* the rows are the tile's now: their weights into the denominators, a tile at a time (the
     * lanes of ignored rows and past nr add 0) */
    acc->n_valid += nv;
    if (weighted) {
        double ds[FL_W], dw[FL_W];
        for (int64_t j = 0; j < FL_W; j++) {
            int use = j < nr && yf[j] >= 0.0f;
            double s = use && a->sample_weight.data ? *(const double *)fl_row_ptr(&a->sample_weight, i0, i1 + j) : 1.0;
            dw[j] = use ? s * (a->weight ? a->weight[(int64_t)yf[j]] : 1.0) : 0.0;
            ds[j] = use ? s : 0.0;
            sw[j] = (float)dw[j];
        }
        if (a->weight) fl_rsum_buf_add_n(&acc->d1, dw, FL_W);
        if (a->sample_weight.data) fl_rsum_buf_add_n(&acc->d2, ds, FL_W);
    }
    /* the sums of fl_ce_online_t, lane-wise */
    flv zero = flv_set1(0.0f), one = flv_set1(1.0f), half = flv_set1(0.5f), vy = flv_load(yf);
    flv cnt, rest, vxy;
    int grad = a->grad.data != NULL;
    if (c > FL_CE_TILE_NACC4_C) fl_ce_tile_sums(t->xt, grad ? t->gt : NULL, c, m, vy, 4, &cnt, &rest, &vxy);
    else fl_ce_tile_sums(t->xt, grad ? t->gt : NULL, c, m, vy, 2, &cnt, &rest, &vxy);
    vxy = flv_sub(vxy, m);
    flv vsw = flv_load(sw);
    flv others = flv_add(flv_sub(cnt, one), rest); /* S - 1 when y holds the max */
    if (t->nb == FL_CE_BATCH) fl_ce_tiles_flush(ctx, t, acc);
    int q = t->nb++;
    flv_store(t->bo + q * FL_W, others);
    flv_store(t->bx + q * FL_W, vxy);
    flv_store(t->bw + q * FL_W, vsw);
    flv_store(t->by + q * FL_W, vy);
    t->bi0[q] = i0;
    t->bi1[q] = i1;
    t->bnr[q] = nr;
    t->bskip[q] = bad;
    if (grad) {
        /* g_c = s*c1*w_y*(p_c - [c == y]); for the target, S - e_y is kept exact as above
         * when y holds the max. Unused lanes take alpha = +0, selected rather than from their
         * weight 0: the scale is infinite when a mean has no valid row. */
        flv S = flv_add(cnt, rest), scale = flv_mul(flv_set1((float)a->grad_scale_ce), vsw);
        flv alpha = flv_sel_neg(vy, zero, flv_div(scale, S));
        flv gy = flv_neg(flv_mul(alpha, flv_sel_neg(vxy, flv_sub(S, flv_exp_neg_fast(vxy)), others)));
        flv kf = zero;
        for (int64_t k = 0; k < c; k++) {
            flv g = flv_mul(flv_load(t->gt + k * FL_W), alpha);
            flv_store(t->gt + k * FL_W, flv_sel_neg(flv_sub(flv_abs(flv_sub(vy, kf)), half), gy, g));
            kf = flv_add(kf, one);
        }
        fl_tile_store((float *)(void *)fl_row_ptr(&a->grad, i0, i1), a->grad.s1, a->grad.sc, c, nr,
                      a->grad.s1 == c && a->grad.sc == 1 ? t->oidx : NULL, t->gt);
    }
    return 1;
}

/* Can the rows go through fl_ce_tile_f32? */
static int fl_ce_lanes_ok(const fl_ce_args *a, fl_grid g, int index)
{
    if (FL_W == 1 || !index || a->targets_only || a->x.dtype != FL_F32 || a->label_smoothing > 0.0 || a->z_loss > 0.0)
        return 0;
    if (!fl_tile_layout_ok(a->x.s1, g.c, FL_CE_TILE_MAX_C)) return 0;
    /* any float32 gradient layout is stored from the tile (fl_tile_store) */
    if (a->grad.data && a->grad.dtype != FL_F32) return 0;
    return 1;
}

#endif
