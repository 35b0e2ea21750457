/* fl_lse_row.h: the logsumexp of one long row in a single read, the core of the
 * cross-entropy's float32-type rows (fl_ce_f32.h) and of the per-sequence scores (fl_seq.c):
 * an online logsumexp over fixed blocks of the row (fl_ce_online_t) and the split sum of
 * exponentials it returns with its logarithm (fl_ce_make_sum); and logsumexp's own first try
 * and the entropy's sums over long float32 rows, by the same blocks (fl_lse_online_shift_t,
 * fl_ent_online_shift_t, fl_reduce.c). Compiled once per ISA.
 */
#ifndef FL_LSE_ROW_H
#define FL_LSE_ROW_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "fl_pend.h"
#include "fl_rowio.h"
#include "fl_rowmath.h"
#include "fl_scalar_math.h"

/* Rows are summed in blocks of FL_CE_BLOCK elements (4 KB of float32): the block's max is taken first,
 * which brings it into L1, then its exponentials are summed from there, so a row is read from
 * memory once and that read overlaps the exponentials (an online logsumexp). The blocks are
 * fixed by the row length alone, so the result does not depend on the thread count. */
#define FL_CE_BLOCK 1024

/* One pass over a row: its max m and the sum of exp(x_k - m) split as n_max + rest. n_max
 * counts the elements equal to the max (their exponential is exactly 1) and rest sums the
 * others in double, so rest stays accurate relative to itself: when the target holds the
 * max, -log p_y = log1p(n_max - 1 + rest) and 1 - p_y = (n_max - 1 + rest)/S keep their
 * relative accuracy however close p_y is to 1. When a block raises the running max, the sum
 * so far is rescaled by exp(old - new) (in double; the old max's ones become part of rest).
 * The exponentials are not TwoSum-corrected: |x - m| < 104 where they matter, so they are
 * right to 104 * 2^-24 relative, inside the losses' 1e-5.
 * If e is not NULL it receives exp(x_k - bm[b]) of each block b, bm[b] the running max then
 * (fl_ce_rescale brings them to the final max). A nan or +inf element returns at once with
 * that value; an all -inf row returns -inf. A pending row (pend) is written a step at a time
 * among the sums' exponentials (fl_ahead_touch). x is of dtype dt (fl_xrow). *row_lo (when not
 * NULL) receives the row's min, from the blocks' (-inf for an all -inf row). */
FL_ALWAYS_INLINE float fl_ce_online_t(const void *x, int64_t c, float *e, float *bm, double *n_max, double *rest,
                                      float *row_lo, fl_pend *pend, int32_t dt)
{
    float m = -INFINITY, low = INFINITY;
    double nm = 0.0, rs = 0.0;
    int gap = 0; /* a block met a logit in the gap: the others take the general sums (fl_rsumexp_loss_t) */
    int64_t esz = (int64_t)fl_xsize(dt);
    *n_max = *rest = 0.0;
    for (int64_t b = 0, k = 0; k < c; b++, k += FL_CE_BLOCK) {
        int64_t n = c - k < FL_CE_BLOCK ? c - k : FL_CE_BLOCK;
        const char *xb = (const char *)x + k * esz;
        float lo, mb = fl_rmaxmin_t(xb, n, &lo, dt);
        /* the next block is on another page, where the hardware prefetcher stops: have it
         * fetched while this one's exponentials are computed from L1. After the last block,
         * the next block is the start of the next row when rows are contiguous (a prefetch of
         * memory that is not the next row is only wasted, never a fault). */
        int64_t after = c - k - n; /* elements of the row after this block */
        int64_t fetch = after > FL_CE_BLOCK ? FL_CE_BLOCK : after > 0 ? after : n;
        fl_ahead ahead = {xb + n * esz, fetch * esz, esz, pend};
        if (mb != mb || mb == INFINITY) return mb; /* no defined softmax: the caller's bad row */
        low = lo < low ? lo : low;
        if (mb > m) {
            rs = m == -INFINITY ? 0.0 : (nm + rs) * fl_exp_d((double)m - (double)mb);
            nm = 0.0;
            m = mb;
        }
        if (bm) bm[b] = m;
        if (m == -INFINITY) {
            /* nothing but -inf so far: these exponentials are 0 whatever the max turns out to be */
            if (e) memset(e + k, 0, (size_t)n * sizeof(float));
            continue;
        }
        /* a block with no logit far below the max takes the exponential without the clamp and
         * the subnormal branch, a block with masked entries (-inf) the masked one (fl_exp_mode) */
        float *eb = e ? e + k : NULL;
        double nb, rb = fl_rsumexp_loss_t(xb, n, m, eb, &nb, mb < m, ahead, fl_exp_mode(m, lo), &gap, dt);
        nm += nb;
        rs += rb;
    }
    *n_max = nm;
    *rest = rs;
    if (row_lo) *row_lo = low;
    return m;
}

/* What a block of n elements at xb fetches while its exponentials are computed: the next block
 * of the row (after: the elements left after this block), or `next` after the last one. */
static inline fl_ahead fl_block_ahead(const char *xb, int64_t n, int64_t after, int64_t esz, fl_ahead next)
{
    if (!after) return next;
    fl_ahead a = {xb + n * esz, (after < FL_CE_BLOCK ? after : FL_CE_BLOCK) * esz, esz, NULL};
    return a;
}

/* logsumexp's first try (fl_rsumexp_fast_shift_t) over a long row in one read, block by block
 * as fl_ce_online_t: each block's max and min first (bringing it into L1), then its scaled
 * exponentials exp(x_k) 2^-sn against the running max, the next block fetched meanwhile
 * (`next`: the next row's first block after the last one). When a block raises the max, the
 * sum so far and the old max's ties (cm each) are rescaled by 2^(sn_old - sn_new), exactly.
 * The two-pass form summed the row from L2 after a pass for its max (4096 x 32000: 60 ms
 * against the cross-entropy's 43 on the same rows, AVX-512). Returns the scaled sum of the
 * entries below the max, *m the max, *n_eq its ties, *cm its scaled exponential, as
 * fl_rsumexp_fast_shift_t; or FL_SUM_GAP where a block is not for the fast exponentials (a NaN
 * or an infinity, a max beyond FL_SHIFT_MMAX, the general mode, a logit in the gap) or the row
 * is all -inf: the caller then takes the two-pass path. The blocks are fixed by the row length
 * alone, so the result does not depend on the thread count. */
FL_ALWAYS_INLINE double fl_lse_online_shift_t(const void *x, int64_t c, float *m, double *n_eq, double *cm,
                                              fl_ahead next, int32_t dt)
{
    float mr = -INFINITY, sn = 0.0f;
    double acc = 0.0, ties = 0.0, cmr = 0.0;
    int64_t esz = (int64_t)fl_xsize(dt);
    for (int64_t k = 0; k < c; k += FL_CE_BLOCK) {
        int64_t n = c - k < FL_CE_BLOCK ? c - k : FL_CE_BLOCK, after = c - k - n;
        const char *xb = (const char *)x + k * esz;
        float lo, mb = fl_rmaxmin_t(xb, n, &lo, dt);
        if (mb != mb) return FL_SUM_GAP;
        if (mb > mr) {
            if (!(fabsf(mb) <= FL_SHIFT_MMAX)) return FL_SUM_GAP;
            float snb = fl_rintf(mb * FL_LOG2E_F);
            acc = mr == -INFINITY ? 0.0 : ldexp(acc + ties * cmr, (int)(sn - snb));
            ties = 0.0;
            mr = mb;
            sn = snb;
        }
        if (mr == -INFINITY) continue; /* nothing but -inf so far: 0 whatever the max turns out to be */
        int mode = fl_exp_mode(mr, lo);
        if (mode == FL_EXP_GENERAL) return FL_SUM_GAP;
        fl_ahead ahead = fl_block_ahead(xb, n, after, esz, next);
        double nb, rb = fl_rsumexp_fast_shift_t(xb, n, mr, &nb, &cmr, mode == FL_EXP_MASKED, ahead, dt);
        if (rb == FL_SUM_GAP) return FL_SUM_GAP;
        acc += rb;
        ties += nb;
    }
    if (mr == -INFINITY) return FL_SUM_GAP;
    *m = mr;
    *n_eq = ties;
    *cm = cmr;
    return acc;
}

/* The entropy's sums (fl_rsumexp_shift_t with FL_SUM_TIES and FL_SUM_DOT) over a long float32-type
 * row in one read, block by block as fl_lse_online_shift_t: the ties n_eq of the running max
 * m, the rest and dot = sum_k p_k (x_k - m), p_k = exp(x_k - m), relative to it. When a block
 * raises the max from m to m' (d = m - m' < 0, f = exp(d) in double) the sums so far become
 * rest' = f (n_eq + rest) and dot' = f (dot + d (n_eq + rest)), both terms of dot' of one sign,
 * so the rescaling rounds a few times in double, far below the float32 exponentials' error.
 * The two-pass form read the row from memory for its max, then from L2 for the sums. Returns
 * the rest, *m, *n_eq and *dot; or FL_SUM_GAP where a block is not for the exact-reduction
 * exponentials in FL_EXP_NORMAL mode (a NaN or an infinity, a max beyond FL_SHIFT_MMAX, a
 * logit more than 86 below the running max) or the row is all -inf: the caller then takes the
 * two-pass path. The blocks are fixed by the row length alone. */
FL_ALWAYS_INLINE double fl_ent_online_shift_t(const void *x, int64_t c, float *m, double *n_eq, double *dot,
                                              fl_ahead next, int32_t dt)
{
    float mr = -INFINITY;
    double ties = 0.0, rest = 0.0, dr = 0.0;
    int64_t esz = (int64_t)fl_xsize(dt);
    for (int64_t k = 0; k < c; k += FL_CE_BLOCK) {
        int64_t n = c - k < FL_CE_BLOCK ? c - k : FL_CE_BLOCK, after = c - k - n;
        const char *xb = (const char *)x + k * esz;
        float lo, mb = fl_rmaxmin_t(xb, n, &lo, dt);
        if (!(fabsf(mb) <= FL_SHIFT_MMAX)) return FL_SUM_GAP;
        if (mb > mr) {
            if (mr != -INFINITY) {
                double d = (double)mr - (double)mb, f = fl_exp_d(d), s = ties + rest;
                dr = f * (dr + d * s);
                rest = f * s;
                ties = 0.0;
            }
            mr = mb;
        }
        if (fl_exp_mode(mr, lo) != FL_EXP_NORMAL) return FL_SUM_GAP;
        fl_ahead ahead = fl_block_ahead(xb, n, after, esz, next);
        double nb, scale, db, rb = fl_rsumexp_shift_t(xb, n, mr, NULL, &nb, &scale, &db, FL_SUM_TIES | FL_SUM_DOT, ahead, dt);
        rest += rb;
        ties += nb;
        dr += db;
    }
    *m = mr;
    *n_eq = ties;
    *dot = dr;
    return rest;
}

/* The sum S = n_max + rest of a row's exponentials (see fl_ce_online_t) and its log. */
typedef struct { double n_max, rest, S, logS; } fl_ce_sum;

static inline fl_ce_sum fl_ce_make_sum(double n_max, double rest)
{
    double S = n_max + rest;
    return (fl_ce_sum){n_max, rest, S, n_max == 1.0 ? fl_log1p_d(rest) : fl_log_d(S)};
}

#endif
