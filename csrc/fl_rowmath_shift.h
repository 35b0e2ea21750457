/* fl_rowmath_shift.h: the exact-reduction (shift) sums of a float32 row, included by
 * fl_rowmath.h (see its design note): which rows take them (fl_shift_mode), the ties with the
 * max, the precise sums of softmax, log_softmax, logsumexp and entropy (fl_rsumexp_shift_t) and
 * logsumexp's cheaper first try (fl_rsumexp_fast_shift_t), for rows with masked logits too.
 * Compiled once per ISA, with FL_W lanes. */
#ifndef FL_ROWMATH_SHIFT_H
#define FL_ROWMATH_SHIFT_H

/* Can a row of c classes, max m and min lo take the exact-reduction exponentials of
 * fl_rsumexp_shift_t, and in which mode (fl_exp_mode)? FL_EXP_NORMAL: its logits lie in
 * [m - 86, m], within [-150, 64] where flv_exp_shift_normal holds, and x * log2(e) - sn in
 * [-125, 1]. FL_EXP_MASKED: the same for the logits in that range, and the others (masked,
 * -inf) below the gap, where exp(x - m) < 2^-150 and every result rounds as if they were not
 * there (a softmax of 0, nothing added to a sum, 0 to the entropy's dot product): the masked
 * exponentials give them 0 exactly (FL_SUM_MASKED), and a row that holds a logit in the gap
 * after all (FL_SUM_GAP) takes the TwoSum path. FL_EXP_GENERAL (0): the TwoSum path. Beyond
 * |m| = 64 the float32 exponentials of x itself would leave the reduction's tested range; such
 * rows take the TwoSum path. So do rows of at most tile_max_c classes, the widest rows of the
 * calling kernel's tiles (fl_tile.h): those compute with the TwoSum formulas, and a row that a
 * tile hands back (a tile holding a NaN row, say) must come out with the same bits as in the
 * tile, or a row's result would depend on its neighbours. */
#define FL_SHIFT_MMAX 64.0f
static inline int fl_shift_mode(float m, float lo, int64_t c, int64_t tile_max_c)
{
    return c > tile_max_c && fabsf(m) <= FL_SHIFT_MMAX ? fl_exp_mode(m, lo) : FL_EXP_GENERAL;
}

/* the ties of a vector holding some x >= m (m the row's max, in every lane; x == m): counted,
 * and their exponentials taken out of e (they join the count, not the rest). Without a branch
 * per lane: a scalar loop over the lanes, on every row's max and its last partial vector,
 * mispredicted its way to 5% of fl.score's per-class time (perf, 1000 classes). */
static inline flv fl_take_ties(flv xv, flv m, flv e, int64_t *ties)
{
    for (unsigned msk = flv_mask_ge(xv, m); msk; msk &= msk - 1) (*ties)++;
    return flv_zero_ge(xv, m, e);
}

/* What fl_rsumexp_shift_t computes besides the sum, a constant at each call site:
 *   FL_SUM_STORE  y receives the exponentials
 *   FL_SUM_TIES   the entries equal to the max are counted apart (n_eq) and left out of the
 *                 rest, as fl_rsumexp_t does; without it (nor FL_SUM_DOT) *n_eq = 0, the rest
 *                 is the whole sum and it stays scaled (*scale = 1), which is all the softmax
 *                 needs: its maxima's exponentials are stored and scaled like the others, so
 *                 the sum that divides them holds them too, and its 1/S needs no c (whose
 *                 exponential in double was on every row's chain of dependent operations)
 *   FL_SUM_DOT    *dot receives the entropy's sum_k exp(x_k - m) * (x_k - m), as
 *                 fl_rdot_shift_t (float64 lanes, each step rounded once) but in the same
 *                 pass, from the exponentials in registers: a second pass over the logits
 *                 and the stored exponentials was a quarter of the entropy's instructions
 *   FL_SUM_MASKED the row's mode is FL_EXP_MASKED (fl_shift_mode): the masked exponentials
 *                 (0 below the gap; the ties and the dot product see the logits themselves,
 *                 where a 0 times a -inf shift adds 0), FL_SUM_GAP for a row holding a logit
 *                 in the gap, found within FL_GAP_CHECK elements of it */
enum { FL_SUM_STORE = 1, FL_SUM_TIES = 2, FL_SUM_DOT = 4, FL_SUM_MASKED = 8 };
#define FL_GAP_CHECK 1024

/* fl_take_ties for four vectors of a finite row: one comparison of their max finds the
 * (rare) step that holds ties; a comparison and a branch per vector were a sixth of
 * logsumexp's instructions. Inlined and unrolled so that xv and e stay in registers (a loop
 * over them kept both arrays on the stack: AVX-512 logsumexp ran 15% slower). */
FL_ALWAYS_INLINE void fl_take_ties4(const flv *xv, flv m, flv *e, int64_t *ties)
{
    if (!flv_any_ge(flv_max_ord(flv_max_ord(xv[0], xv[1]), flv_max_ord(xv[2], xv[3])), m)) return;
    FL_UNROLL(4)
    for (int j = 0; j < 4; j++)
        if (flv_any_ge(xv[j], m)) e[j] = fl_take_ties(xv[j], m, e[j], ties);
}

/* fl_rsumexp_t with precise set, for a row that fl_shift_mode admits: e_k = exp(x_k) * 2^-sn,
 * sn = round(m log2 e), by the exact reduction of flv_exp_shift_normal, and e_k = c *
 * exp(x_k - m) with c = exp(m - sn ln2) in [0.7, 1.42], returned in *scale. Returns the rest
 * and *n_eq as fl_rsumexp_t does (the rest divided by c in double; the whole sum times c, scale
 * 1, without FL_SUM_TIES and FL_SUM_DOT); y receives the e_k, scaled
 * by c, and *dot the entropy's sum divided by c, as opts asks (FL_SUM_*). Per vector: the
 * exponential, with FL_SUM_TIES one comparison for ties (which only a vector holding the max
 * takes further, fl_take_ties), and the float64 sum: the TwoSum correction's seven vector
 * operations and the two selects of the counting are gone. */
FL_ALWAYS_INLINE double fl_rsumexp_shift_t(const void *x, int64_t n, float m, float *y, double *n_eq, double *scale,
                                           double *dot, int opts, fl_ahead ahead, int32_t dt)
{
    float sn = fl_rintf(m * FL_LOG2E_F);
    flv vm = flv_set1(m), vsn = flv_set1(sn), gap = flv_set1(INFINITY);
    flv vlo = flv_set1(m + FL_EXPF_NORMAL_LO), vmid = flv_set1(m + FL_EXPF_GAP_MID);
    fl_dacc acc = fl_dacc_zero(), adot = acc;
    int64_t k = 0, ties = 0;
    for (; k + 4 * FL_W <= n; k += 4 * FL_W) {
        if ((opts & FL_SUM_MASKED) && k % FL_GAP_CHECK == 0 && fl_gap_met(gap)) return FL_SUM_GAP;
        fl_ahead_touch(ahead, k, 4 * FL_W);
        flv xv[4], e[4];
        FL_UNROLL(4)
        for (int j = 0; j < 4; j++) {
            xv[j] = fl_xload(x, k + j * FL_W, dt);
            e[j] = (opts & FL_SUM_MASKED) ? flv_exp_shift_masked(xv[j], vsn, vlo, vmid, &gap)
                                          : flv_exp_shift_normal(xv[j], vsn);
        }
        if (opts & FL_SUM_STORE) {
            FL_UNROLL(4)
            for (int j = 0; j < 4; j++) flv_store(y + k + j * FL_W, e[j]);
        }
        if (opts & FL_SUM_TIES) fl_take_ties4(xv, vm, e, &ties);
        FL_UNROLL(4)
        for (int j = 0; j < 4; j++) {
            /* a tie's product is 0 (x - m = 0) with its exponential or without */
            if (opts & FL_SUM_DOT) adot = fl_dacc_add_prod(adot, e[j], xv[j], (double)m);
            acc = fl_dacc_add(acc, e[j]);
        }
    }
    for (; k < n; k += FL_W) {
        /* the last vectors, the final one partial: its fill lanes (m itself, a valid argument)
         * are taken out with the ties and not counted, or zeroed */
        int64_t len = n - k < FL_W ? n - k : FL_W;
        fl_ahead_touch(ahead, k, FL_W);
        flv xv = fl_xload_part(x, k, len, m, dt);
        flv e = (opts & FL_SUM_MASKED) ? flv_exp_shift_masked(xv, vsn, vlo, vmid, &gap) : flv_exp_shift_normal(xv, vsn);
        if (opts & FL_SUM_STORE) flv_store_part(y + k, e, len);
        if (opts & FL_SUM_DOT) adot = fl_dacc_add_prod(adot, e, xv, (double)m); /* the fill lanes add 0 */
        if (opts & FL_SUM_TIES) {
            if (flv_any_ge(xv, vm)) {
                ties -= FL_W - len;
                e = fl_take_ties(xv, vm, e, &ties);
            }
        } else if (len < FL_W) {
            float es[FL_W];
            flv_store(es, e);
            e = flv_load_part(es, len, 0.0f);
        }
        acc = fl_dacc_add(acc, e);
    }
    if ((opts & FL_SUM_MASKED) && fl_gap_met(gap)) return FL_SUM_GAP;
    if (!(opts & (FL_SUM_TIES | FL_SUM_DOT))) {
        *scale = 1.0; /* the sum stays scaled */
        *n_eq = 0.0;
        return fl_dacc_sum(acc);
    }
    double c = fl_exp_d((double)m - (double)sn * 0.69314718055994530942);
    *scale = c;
    *n_eq = (double)ties;
    if (opts & FL_SUM_DOT) *dot = fl_dacc_sum(adot) / c;
    return fl_dacc_sum(acc) / c;
}

/* logsumexp's first try: the sums of fl_rsumexp_shift_t by the degree-5 exponential
 * (flv_exp_fast_shift_normal, 1.95 ULP) and float32 partial sums, FL_SUM_CHUNK vectors at a time
 * in four partials before the float64 lanes, as the cross-entropy's sums (a vector goes
 * through at most 12 float32 roundings: 10 in its partial, 2 joining them), no y. Returns the
 * sum of the scaled exponentials exp(x_k) 2^-sn of the entries below the max, not divided by
 * c = exp(m - sn ln2); *n_eq counts the ties and *cm receives the same exponential of m itself
 * (c to 1.95 ULP of float32). T = rest + n_eq * cm is then c * S within FL_FAST_REST_ERR *
 * 2^-24, relatively, and logsumexp = sn ln2 + log T needs no exponential in double
 * (fl_reduce_row keeps it where that error is well inside its 4 ULP). masked: the row's mode is
 * FL_EXP_MASKED (as FL_SUM_MASKED: FL_SUM_GAP for a row holding a logit in the gap). */
#define FL_FAST_REST_ERR 17.0
FL_ALWAYS_INLINE double fl_rsumexp_fast_shift_t(const void *x, int64_t n, float m, double *n_eq, double *cm,
                                                int masked, fl_ahead ahead, int32_t dt)
{
    float sn = fl_rintf(m * FL_LOG2E_F);
    flv vm = flv_set1(m), vsn = flv_set1(sn), zero = flv_set1(0.0f), gap = flv_set1(INFINITY);
    flv vlo = flv_set1(m + FL_EXPF_NORMAL_LO), vmid = flv_set1(m + FL_EXPF_GAP_MID);
    fl_dacc acc = fl_dacc_zero();
    int64_t k = 0, ties = 0;
        while (k + FL_W <= n) {
        flv part[4] = {zero, zero, zero, zero};
        int64_t end = k + FL_SUM_CHUNK * FL_W < n ? k + FL_SUM_CHUNK * FL_W : n;
        if (masked && fl_gap_met(gap)) return FL_SUM_GAP;
        for (; k + 4 * FL_W <= end; k += 4 * FL_W) {
            fl_ahead_touch(ahead, k, 4 * FL_W);
            flv xv[4], e[4];
            FL_UNROLL(4)
            for (int j = 0; j < 4; j++) {
                xv[j] = fl_xload(x, k + j * FL_W, dt);
                e[j] = masked ? flv_exp_fast_shift_masked(xv[j], vsn, vlo, vmid, &gap)
                              : flv_exp_fast_shift_normal(xv[j], vsn);
            }
            fl_take_ties4(xv, vm, e, &ties);
            FL_UNROLL(4)
            for (int j = 0; j < 4; j++) part[j] = flv_add(part[j], e[j]);
        }
        for (; k + FL_W <= end; k += FL_W) {
            fl_ahead_touch(ahead, k, FL_W);
            flv xv = fl_xload(x, k, dt);
            flv e = masked ? flv_exp_fast_shift_masked(xv, vsn, vlo, vmid, &gap) : flv_exp_fast_shift_normal(xv, vsn);
            if (flv_any_ge(xv, vm)) e = fl_take_ties(xv, vm, e, &ties);
            part[0] = flv_add(part[0], e);
        }
        acc = fl_dacc_add(acc, flv_add(flv_add(part[0], part[1]), flv_add(part[2], part[3])));
    }
    if (k < n) {
        /* the fill lanes (m itself) are taken out with the ties and not counted */
        flv xv = fl_xload_part(x, k, n - k, m, dt);
        flv e = masked ? flv_exp_fast_shift_masked(xv, vsn, vlo, vmid, &gap) : flv_exp_fast_shift_normal(xv, vsn);
        ties -= FL_W - (n - k);
        acc = fl_dacc_add(acc, fl_take_ties(xv, vm, e, &ties));
    }
    if (masked && fl_gap_met(gap)) return FL_SUM_GAP;
    float cv[FL_W];
    flv_store(cv, flv_exp_fast_shift_normal(vm, vsn));
    *cm = (double)cv[0];
    *n_eq = (double)ties;
    return fl_dacc_sum(acc);
}

#endif
