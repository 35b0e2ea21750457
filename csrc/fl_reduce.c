/* fl_reduce.c: logsumexp and entropy, the row reductions of the softmax family. Compiled once
 * per ISA; every exported symbol is FL_FN(name).
 *
 * A row's max, then its sum of exponentials split as n_eq + rest (the entries equal to the
 * max apart), so log(sum) = log1p((n_eq - 1) + rest) stays accurate for peaked rows (logsumexp
 * first tries a cheaper sum, and reads float32 rows longer than a block once: fl_lse_fast_put,
 * fl_lse_long_row); rows whose logsumexp cancels (|m + log s| small) are redone in double
 * (float32 rows) or double-double (float64 rows). The entropy is log s - sum p_k (x_k - m) / s
 * from shifted values, so rows of ties do not cancel; its float32 rows longer than a block are
 * read once too (fl_ent_long_row). Rows of few classes go FL_W at a time in the lanes
 * (fl_tile.h); their logsumexp is computed in float32 with an error bound per lane, and the
 * rows whose bound is not small against their result are queued and computed in double, FL_W
 * at a time. */
#include <math.h>
#include <stdlib.h>

#include "fastlogits.h"
#include "fl_dd.h"
#include "fl_kernels.h"
#include "fl_lse_row.h"
#include "fl_postdrv.h"
#include "fl_rowmath_f64.h"

/* The widest rows of the entropy's tiles (logsumexp's: FL_LSE_TILE_MAX_C): past FL_LANES_MAX_C,
 * where they are faster than the row path (Zen 4, AVX-512, 10,000,000 logits, row path ->
 * tiles, ms: 65 classes 21.6 -> 10.4, 96: 15.8 -> 11.9, 112: 14.6 -> 12.9, 128: 12.4 -> 12.9).
 * The row path takes the tiles' TwoSum formulas for rows this wide (fl_shift_mode), so a row a
 * tile hands back keeps its bits. */
#define FL_ENTROPY_TILE_MAX_C 112

/* ---------------- logsumexp and entropy ---------------- */

/* logsumexp and entropy of one row from its max m, the parts n_eq + rest of the sum s of
 * exp(x - m) and, for the entropy, dot = sum p_k (x_k - m) with p_k = exp(x_k - m):
 * H = log s - dot/s. */
static double fl_reduce_finish(int what, double m, double n_eq, double rest, double dot)
{
    double log_s = fl_log_sum(n_eq, rest);
    if (what == FL_LOGSUMEXP) return m + log_s;
    return log_s - dot / (n_eq + rest);
}

/* A row whose max is not finite. logsumexp: -inf (empty or all -inf), +inf, or NaN. entropy:
 * 0 for an empty row (a sum of nothing), NaN otherwise (the softmax is NaN). */
static double fl_reduce_special(int what, double m, int64_t c)
{
    if (what == FL_LOGSUMEXP) return m;
    return c == 0 ? 0.0 : NAN;
}

/* The entropy of a float32 row in double throughout: for results below 1e-30, where the
 * float32 exponentials of the small terms are subnormal and too coarse. */
FL_ALWAYS_INLINE double fl_entropy_precise_t(const void *x, int64_t n, float m, int32_t dt)
{
    fl_csum8 rest = {{0}, {0}}, dot = {{0}, {0}};
    int64_t cnt = 0;
    for (int64_t k = 0; k < n; k++) {
        float xk = fl_xget(x, k, dt);
        if (xk >= m) {
            cnt++;
        } else if (xk > -INFINITY) {
            double d = (double)xk - (double)m, e = fl_exp_d(d);
            fl_csum8_add(&rest, (int)(k & 7), e);
            fl_csum8_add(&dot, (int)(k & 7), e * d);
        }
    }
    double r = fl_csum8_total(&rest);
    return fl_log_sum((double)cnt, r) - fl_csum8_total(&dot) / ((double)cnt + r);
}

/* The entropy of a float64 row whose result is below 2^-960. There the row has one max
 * (ties give at least log 2) and its other probabilities are below 2^-960 too, so their
 * exponentials reach double's subnormals, where exp(d) * (1 - d) lost up to |d| / 2 ULP of
 * the result (0 for 1.8e-321 from the row {-2322.55, -1577.41}: 372 ULP; found by the fuzz
 * harness). With r = sum_k e_k and the dot product sum_k e_k d_k below 2^-960, the entropy
 * log1p(r) - dot / (1 + r) is r - dot to a relative 2^-960; each e_k is computed scaled by
 * 2^-E, E the exponent of the largest (clamped at -1300: a row whose second logit is further
 * down has an entropy below 2^-1075 and the result 0 either way), and the sum is scaled
 * back once. d_k = x_k - m carries its rounding error into the exponential and the product,
 * as fl_rdot_shift_f64. */
static double fl_entropy_tiny_f64(const double *x, int64_t n, double m)
{
    double m2 = -INFINITY;
    for (int64_t k = 0; k < n; k++) m2 = x[k] < m && x[k] > m2 ? x[k] : m2;
    if (m2 == -INFINITY) return 0.0;
    double e2 = fl_rint((m2 - m) * FL_LOG2E_D);
    e2 = e2 < -1300.0 ? -1300.0 : e2;
    fl_csum8 acc = {{0}, {0}};
    for (int64_t k = 0; k < n; k++) {
        if (!(x[k] < m) || x[k] == -INFINITY) continue;
        /* a = d - e2 log 2 in two parts (e2 times the high part of log 2 is exact) */
        fl_dd d = fl_dd_two_sum(x[k], -m), a = fl_dd_two_sum(d.hi, -e2 * FL_LN2_HI_D);
        a = fl_dd_two_sum(a.hi, (a.lo + d.lo) - e2 * FL_LN2_LO_D);
        double e = fl_exp_dx_d(a.hi, a.lo);
        fl_dd prod = fl_dd_two_prod(e, -d.hi);
        fl_csum8_add(&acc, (int)(k & 7), e);
        fl_csum8_add(&acc, (int)(k & 7), prod.hi);
        fl_csum8_add(&acc, (int)(k & 7), prod.lo - e * d.lo);
    }
    return ldexp(fl_csum8_total(&acc), (int)e2);
}

/* Has a float32 row's logsumexp v, computed in double from its max m, cancelled so far that
 * double's rounding (a few 2^-53 of |m|) could be ULPs of the float32 result? (below 2^-20 |m|;
 * such rows are redone in double-double) */
static inline int fl_lse_f32_cancelled(double v, float m)
{
    return fabs(v) < 0x1p-20 * fabs((double)m);
}

/* fl_dd_logsumexp of a float32 row x (any input dtype), widened into a row of c doubles
 * allocated here: the case is rare (the max and log S cancel below 2^-20 of the max), and a
 * row of doubles in every task's scratch doubled the kernel's memory (a row of 2^31 classes
 * then asked for 32 GiB and failed). NaN, and the call fails, when it cannot be allocated. */
static double fl_lse_f32_dd(fl_post_ctx *ctx, fl_xrow x, int64_t c, float m)
{
    double *row = (double *)malloc((size_t)c * sizeof(double));
    if (!row) {
        fl_atomic_store(&ctx->failed, 1);
        return NAN;
    }
    for (int64_t k = 0; k < c; k++) row[k] = (double)fl_x_dispatch(x.dt, fl_xget, x.p, k);
    double v = fl_dd_logsumexp(row, c, (double)m);
    free(row);
    return v;
}

/* logsumexp from the first try's sums (fl_rsumexp_fast_shift_t, fl_lse_online_shift_t: the
 * row's max m, the scaled sum acc of the entries below it, its n_eq ties and their scaled
 * exponential cm), written where its error bound allows; 0 when the row needs the precise sums.
 * T = acc + n_eq cm is c S within FL_FAST_REST_ERR * 2^-24 (relative), c = exp(m - sn ln2), so
 * log S = log T - (m - sn ln2) and v = sn ln2 + log T within that (absolute); where this is
 * below 3 * 2^-24 |v| (under 3 ULP of the float32 result, 3.5 with its rounding) v stands. The
 * exponential of c in double and the division by it were a quarter of logsumexp 8192 x 1000
 * (perf, AVX-512: a chain of 30 dependent operations a row); they are taken only where the split
 * sum n_eq + rest is needed: a peaked row, whose rest's error moves log S by that error times
 * rest/S only. */
static int fl_lse_fast_put(fl_post_ctx *ctx, int64_t i0, int64_t i1, float m, double acc, double n_eq, double cm)
{
    double sn_ln2 = (double)fl_rintf(m * FL_LOG2E_F) * 0.69314718055994530942;
    double v = sn_ln2 + fl_log_d(acc + n_eq * cm);
    if (!(FL_FAST_REST_ERR <= 3.0 * fabs(v))) {
        double rest = acc / fl_exp_d((double)m - sn_ln2);
        v = fl_reduce_finish(FL_LOGSUMEXP, m, n_eq, rest, 0.0);
        if (!(FL_FAST_REST_ERR * rest <= 3.0 * fabs(v) * (n_eq + rest))) return 0;
    }
    fl_put_scalar(ctx->y, i0, i1, v);
    return 1;
}

/* logsumexp of a float32 row longer than a block: the first try in one read, written where it
 * stands; 0 for the rows it does not take (then the two-pass path). Half-precision rows keep
 * the two passes (their row is half the bytes): in one read they ran 46 -> 57 ms on AVX2 (4096 x
 * 32000; AVX-512 35 -> 33). Not inlined: in fl_reduce_row it slowed the entropy's rows there. */
static FL_NOINLINE int fl_lse_long_row(fl_post_ctx *ctx, int64_t i0, int64_t i1, fl_xrow x, const char *xrow)
{
    fl_ahead next = fl_post_ahead(ctx, xrow, NULL);
    next.n = next.n < FL_CE_BLOCK * next.esz ? next.n : FL_CE_BLOCK * next.esz;
    float m;
    double n_eq, cm, acc = fl_lse_online_shift_t(x.p, ctx->g.c, &m, &n_eq, &cm, next, FL_F32);
    return acc != FL_SUM_GAP && fl_lse_fast_put(ctx, i0, i1, m, acc, n_eq, cm);
}

/* The entropy of a float32 row longer than a block in one read (fl_ent_online_shift_t), written
 * where it stands; 0 for the rows it does not take (then the two passes), and for results
 * below 1e-30 (then fl_entropy_precise_t, after them). Not inlined, as fl_lse_long_row. */
static FL_NOINLINE int fl_ent_long_row(fl_post_ctx *ctx, int64_t i0, int64_t i1, fl_xrow x, const char *xrow)
{
    fl_ahead next = fl_post_ahead(ctx, xrow, NULL);
    next.n = next.n < FL_CE_BLOCK * next.esz ? next.n : FL_CE_BLOCK * next.esz;
    float m;
    double n_eq, dot, rest = fl_ent_online_shift_t(x.p, ctx->g.c, &m, &n_eq, &dot, next, FL_F32);
    if (rest == FL_SUM_GAP) return 0;
    double v = fl_reduce_finish(FL_ENTROPY, m, n_eq, rest, dot);
    if (!(v >= 1e-30)) return 0;
    fl_put_scalar(ctx->y, i0, i1, v);
    return 1;
}

static void fl_reduce_row(fl_post_ctx *ctx, int64_t i0, int64_t i1, void *scratch)
{
    int64_t c = ctx->g.c;
    const char *xrow = fl_row_ptr(ctx->x, i0, i1);
    double v;
    if (!ctx->f64) {
        float *bx = (float *)scratch, *bp = bx + c;
        fl_xrow x = fl_row_in_x(ctx->x, xrow, c, bx);
        if (ctx->op == FL_LOGSUMEXP && c > FL_CE_BLOCK && x.dt == FL_F32 && fl_lse_long_row(ctx, i0, i1, x, xrow))
            return;
        if (ctx->op == FL_ENTROPY && c > FL_CE_BLOCK && x.dt == FL_F32 && fl_ent_long_row(ctx, i0, i1, x, xrow))
            return;
        float lo, m = fl_x_dispatch(x.dt, fl_rmaxmin_t, x.p, c, &lo);
        fl_ahead ahead = fl_post_ahead(ctx, xrow, NULL);
        if (!isfinite(m)) {
            v = fl_reduce_special(ctx->op, m, c);
        } else {
            int ent = ctx->op == FL_ENTROPY;
            /* logsumexp's tiles hand no row back, but its rows of other dtypes keep the bits
             * they had when its tiles ended at FL_LANES_MAX_C */
            int shift = fl_shift_mode(m, lo, c, ent ? FL_ENTROPY_TILE_MAX_C : FL_LANES_MAX_C);
            float *e = ent ? bp : NULL;
            if (!ent && shift) {
                /* the cheaper sums first (fl_lse_fast_put); else the precise sums below redo
                 * the row */
                double n_eq = 0.0, cm = 0.0, acc = shift == FL_EXP_MASKED
                                       ? fl_x_dispatch(x.dt, fl_rsumexp_fast_shift_t, x.p, c, m, &n_eq, &cm, 1, ahead)
                                       : fl_x_dispatch(x.dt, fl_rsumexp_fast_shift_t, x.p, c, m, &n_eq, &cm, 0, ahead);
                if (acc == FL_SUM_GAP) shift = FL_EXP_GENERAL;
                else if (fl_lse_fast_put(ctx, i0, i1, m, acc, n_eq, cm)) return;
            }
            /* rows of moderate logits: the entropy's dot product in the same pass as the sums;
             * other rows keep their exponentials in bp for a second pass */
            double n_eq = 0.0, scale = 1.0, dot = 0.0, rest = FL_SUM_GAP;
            if (shift == FL_EXP_NORMAL)
                rest = ent ? fl_x_dispatch(x.dt, fl_rsumexp_shift_t, x.p, c, m, NULL, &n_eq, &scale, &dot,
                                           FL_SUM_TIES | FL_SUM_DOT, ahead)
                           : fl_x_dispatch(x.dt, fl_rsumexp_shift_t, x.p, c, m, NULL, &n_eq, &scale, NULL, FL_SUM_TIES,
                                           ahead);
            else if (shift == FL_EXP_MASKED)
                rest = ent ? fl_x_dispatch(x.dt, fl_rsumexp_shift_t, x.p, c, m, NULL, &n_eq, &scale, &dot,
                                           FL_SUM_TIES | FL_SUM_DOT | FL_SUM_MASKED, ahead)
                           : fl_x_dispatch(x.dt, fl_rsumexp_shift_t, x.p, c, m, NULL, &n_eq, &scale, NULL,
                                           FL_SUM_TIES | FL_SUM_MASKED, ahead);
            if (rest == FL_SUM_GAP) {
                /* the TwoSum path (a masked row with a logit in the gap, too) */
                if (lo >= m + FL_EXPF_NORMAL_LO)
                    rest = fl_x_dispatch(x.dt, fl_rsumexp_t, x.p, c, m, e, &n_eq, 1, ahead, FL_EXP_NORMAL);
                else
                    rest = fl_x_dispatch(x.dt, fl_rsumexp_t, x.p, c, m, e, &n_eq, 1, ahead, FL_EXP_GENERAL);
                if (ent) dot = fl_x_dispatch(x.dt, fl_rdot_shift_t, x.p, bp, c, m);
            }
            v = fl_reduce_finish(ctx->op, m, n_eq, rest, dot);
            /* the float32 exponentials leave log s off by up to about 2^-22 * rest/s: where
             * that is not small against the logsumexp (|v| < rest/s, m and log s cancelled),
             * redo the sum in double; so too where |v| is so small (m = 0, a rest of
             * subnormal exponentials) that their rounding to multiples of 2^-149 is not */
            if (!ent && (fabs(v) < rest / (n_eq + rest) || fabs(v) < 0x1p-90)) {
                rest = fl_x_dispatch(x.dt, fl_rsumexp_precise_t, x.p, c, m, &n_eq);
                v = fl_reduce_finish(ctx->op, m, n_eq, rest, 0.0);
                if (fl_lse_f32_cancelled(v, m)) v = fl_lse_f32_dd(ctx, x, c, m);
            }
            if (ent && v < 1e-30) v = fl_x_dispatch(x.dt, fl_entropy_precise_t, x.p, c, m);
        }
    } else {
        double *bx = (double *)scratch, *bp = bx + c;
        const double *x = fl_row_in_f64(ctx->x, xrow, c, bx);
        double m = fl_rmax_f64(x, c);
        if (!isfinite(m)) {
            v = fl_reduce_special(ctx->op, m, c);
        } else {
            int ent = ctx->op == FL_ENTROPY;
            double n_eq, rest = fl_rsumexp_f64(x, c, m, ent ? bp : NULL, &n_eq, NULL);
            v = fl_reduce_finish(ctx->op, m, n_eq, rest, ent ? fl_rdot_shift_f64(x, bp, c, m) : 0.0);
            if (ent && v < 0x1p-960) v = fl_entropy_tiny_f64(x, c, m);
            /* m and log s cancelled by more than a third: double cannot hold the 4 ULP bound
             * there, so redo the row in double-double */
            if (!ent && 1.5 * fabs(v) < fabs(m) + fl_log_sum(n_eq, rest)) v = fl_dd_logsumexp(x, c, m);
        }
    }
    fl_put_scalar(ctx->y, i0, i1, v);
}

/* the results of a tile's nr rows: one vector store where the output is float32 with unit
 * stride along the rows (one value a row, no dtype dispatch: a tenth of logsumexp 65536x2's
 * instructions went to the per-row stores), else row by row */
static void fl_put_tile(const fl_arr *y, int64_t i0, int64_t i1, int64_t nr, const double *v)
{
    if (y->dtype == FL_F32 && y->s1 == 1) {
        float f[FL_W];
        for (int j = 0; j < FL_W; j++) f[j] = (float)v[j];
        flv_store_part((float *)(void *)fl_row_ptr(y, i0, i1), flv_load(f), nr);
        return;
    }
    for (int64_t j = 0; j < nr; j++) fl_put_scalar(y, i0, i1 + j, v[j]);
}

/* The queued rows' logsumexp in double: the sums of exp(x - m) in double, compensated
 * (fl_tile_sumexp_precise), and m + log S rounded once. Lanes of the queue past nq repeat its
 * first row. */
static void fl_logsumexp_queue_done(fl_post_ctx *ctx, const fl_post_tiles *t)
{
    int64_t c = ctx->g.c, n = t->q->nq;
    if (!n) return;
    for (int64_t k = 0; k < c; k++)
        for (int64_t j = n; j < FL_W; j++) t->qt[k * FL_W + j] = t->qt[k * FL_W];
    float mv[FL_W];
    double n_eq[FL_W], rest[FL_W];
    flv_store(mv, fl_tile_max(t->qt, c));
    if (c == 2) {
        /* S = 1 + exp(lo - m) exactly (two equal logits: 1 + 1), lo - m exact in double */
        for (int j = 0; j < FL_W; j++) {
            double a = (double)t->qt[j], b = (double)t->qt[FL_W + j], lo = a < b ? a : b;
            n_eq[j] = 1.0;
            rest[j] = fl_exp_d(lo - (double)mv[j]);
        }
    } else {
        fl_tile_sumexp_precise(t->qt, c, mv, n_eq, rest);
    }
    double vq[FL_W];
    for (int j = 0; j < FL_W; j++) vq[j] = (double)mv[j] + fl_log_sum(n_eq[j], rest[j]); /* vectorised */
    for (int64_t j = 0; j < n; j++) {
        double v = vq[j];
        if (fl_lse_f32_cancelled(v, mv[j])) {
            double row[FL_LSE_TILE_MAX_C];
            for (int64_t k = 0; k < c; k++) row[k] = (double)t->qt[k * FL_W + j];
            v = fl_dd_logsumexp(row, c, (double)mv[j]);
        }
        int64_t i0, i1;
        fl_tile_queue_place(ctx, t->q, (int)j, &i0, &i1);
        fl_put_scalar(ctx->y, i0, i1, v);
    }
    t->q->nq = 0;
}

/* A logsumexp tile's results vf (nr rows from (i0, i1), logits in xt) into the output, and the
 * rows whose bits are set in redo into the queue (their values written again when the queue is
 * done) */
static void fl_logsumexp_tile_put(fl_post_ctx *ctx, int64_t i0, int64_t i1, int64_t nr, const fl_post_tiles *t,
                                  const float *xt, const float *vf, unsigned redo)
{
    const fl_arr *y = ctx->y;
    if (y->dtype == FL_F32 && y->s1 == 1) {
        flv_store_part((float *)(void *)fl_row_ptr(y, i0, i1), flv_load(vf), nr);
    } else {
        double v[FL_W];
        for (int j = 0; j < FL_W; j++) v[j] = (double)vf[j];
        fl_put_tile(y, i0, i1, nr, v);
    }
    fl_tile_queue_rows(ctx, t, xt, fl_logsumexp_queue_done, i0, i1, redo & (unsigned)((1ull << nr) - 1u));
}

/* logsumexp of a tile in float32 lanes (fl_tile_logsumexp, fl_tile_logsumexp2 for two classes);
 * the rows whose error bound is not small enough against their result go to the queue, and
 * are computed in double a queue at a time. Rows with a non-finite max are the tile's too, so
 * no row is ever handed back: a row's arithmetic does not depend on its neighbours. */
static int fl_logsumexp_tile(fl_post_ctx *ctx, int64_t i0, int64_t i1, int64_t nr, const fl_post_tiles *t, void *scratch)
{
    (void)scratch;
    int64_t c = ctx->g.c;
    fl_post_tile_load(ctx, i0, i1, nr, t);
    float vf[FL_W];
    unsigned redo = c == 2 ? fl_tile_logsumexp2(t->xt, vf) : fl_tile_logsumexp(t->xt, c, vf);
    fl_logsumexp_tile_put(ctx, i0, i1, nr, t, t->xt, vf, redo);
    return 1;
}

/* fl_logsumexp_tile for two whole tiles side by side (fl_tile_pair_fn) */
static int fl_logsumexp_tile_pair(fl_post_ctx *ctx, int64_t i0, int64_t i1, const fl_post_tiles *t, void *scratch)
{
    (void)scratch;
    int64_t c = ctx->g.c;
    fl_post_tile_load(ctx, i0, i1, FL_W, t);
    fl_post_tile_load_to(ctx, i0, i1 + FL_W, FL_W, t, t->xt2);
    float vf[2][FL_W];
    unsigned redo[2];
    if (c == 2) {
        redo[0] = fl_tile_logsumexp2(t->xt, vf[0]);
        redo[1] = fl_tile_logsumexp2(t->xt2, vf[1]);
    } else {
        const float *xt[2] = {t->xt, t->xt2};
        float *v[2] = {vf[0], vf[1]};
        fl_tile_logsumexp_pair(xt, c, v, redo);
    }
    fl_logsumexp_tile_put(ctx, i0, i1, FL_W, t, t->xt, vf[0], redo[0]);
    fl_logsumexp_tile_put(ctx, i0, i1 + FL_W, FL_W, t, t->xt2, vf[1], redo[1]);
    return 1;
}

/* A tile's entropies from its sums (exponentials in yt, logits in xt): dot = sum_k e_k * (x_k - m)
 * in double lane by lane, as fl_reduce_row. A lane whose entropy is below 1e-30 is redone from
 * its row as there (float32 products lose it). */
static void fl_entropy_tile_finish(fl_post_ctx *ctx, int64_t i0, int64_t i1, int64_t nr, const float *xt,
                                   const float *yt, flv m, const float *n_eq, const double *rest, void *scratch)
{
    int64_t c = ctx->g.c;
    float mv[FL_W];
    double dot[FL_W], v[FL_W];
    flv_store(mv, m);
    for (int j = 0; j < FL_W; j++) dot[j] = 0.0;
    for (int64_t k = 0; k < c; k++) {
        const float *xk = xt + k * FL_W, *ek = yt + k * FL_W;
        for (int j = 0; j < FL_W; j++) dot[j] += (double)ek[j] * fl_clamp_shift_d((double)xk[j] - (double)mv[j]);
    }
    for (int j = 0; j < FL_W; j++) v[j] = fl_log_sum((double)n_eq[j], rest[j]) - dot[j] / ((double)n_eq[j] + rest[j]);
    for (int64_t j = 0; j < nr; j++) {
        if (v[j] < 1e-30) {
            float *row = (float *)scratch;
            for (int64_t k = 0; k < c; k++) row[k] = xt[k * FL_W + j];
            v[j] = fl_entropy_precise_t(row, c, mv[j], FL_F32);
        }
    }
    fl_put_tile(ctx->y, i0, i1, nr, v);
}

/* Entropy of FL_W rows in the lanes: the sums of fl_tile_sums (exponentials kept), then
 * fl_entropy_tile_finish. */
static int fl_entropy_tile(fl_post_ctx *ctx, int64_t i0, int64_t i1, int64_t nr, const fl_post_tiles *t, void *scratch)
{
    flv m;
    float n_eq[FL_W];
    double rest[FL_W];
    if (!fl_tile_sums(ctx, i0, i1, nr, t, 1, &m, n_eq, rest)) return 0;
    fl_entropy_tile_finish(ctx, i0, i1, nr, t->xt, t->yt, m, n_eq, rest, scratch);
    return 1;
}

/* fl_entropy_tile for two whole tiles side by side (fl_tile_pair_fn) */
static int fl_entropy_tile_pair(fl_post_ctx *ctx, int64_t i0, int64_t i1, const fl_post_tiles *t, void *scratch)
{
    flv m[2];
    float n_eq[2][FL_W];
    double rest[2][FL_W];
    if (!fl_tile_sums_pair(ctx, i0, i1, t, 1, m, n_eq, rest)) return 0;
    fl_entropy_tile_finish(ctx, i0, i1, FL_W, t->xt, t->yt, m[0], n_eq[0], rest[0], scratch);
    fl_entropy_tile_finish(ctx, i0, i1 + FL_W, FL_W, t->xt2, t->yt2, m[1], n_eq[1], rest[1], scratch);
    return 1;
}

/* the widest rows whose tiles go two at a time (fl_tile_pair_fn; logsumexp's pairs sum in two
 * partials, fl_tile_logsumexp_pair) */
#define FL_LOGSUMEXP_PAIR_MAX_C FL_LSE_TILE_NACC4_C
#define FL_ENTROPY_PAIR_MAX_C 16

static void fl_reduce_task(void *vctx, int64_t b0, int64_t b1)
{
    fl_post_ctx *ctx = (fl_post_ctx *)vctx;
    size_t bytes = fl_scratch2(ctx);
    if (!ctx->f64 && ctx->op == FL_LOGSUMEXP && fl_post_lanes_ok(ctx, NULL, FL_LSE_TILE_MAX_C))
        fl_run_tiles_q(ctx, b0, b1, bytes, fl_reduce_row, fl_logsumexp_tile,
                       ctx->g.c <= FL_LOGSUMEXP_PAIR_MAX_C ? fl_logsumexp_tile_pair : NULL, fl_logsumexp_queue_done);
    else if (!ctx->f64 && ctx->op != FL_LOGSUMEXP && fl_post_lanes_ok(ctx, NULL, FL_ENTROPY_TILE_MAX_C))
        fl_run_tiles_q(ctx, b0, b1, bytes, fl_reduce_row, fl_entropy_tile,
                       ctx->g.c <= FL_ENTROPY_PAIR_MAX_C ? fl_entropy_tile_pair : NULL, NULL);
    else
        fl_run_rows(ctx, b0, b1, bytes, fl_reduce_row);
}

int FL_FN(row_reduce)(const fl_arr *x, const fl_arr *out, fl_grid g, int what)
{
    fl_post_ctx ctx = {x, out, NULL, g, what, 0, 0.0, x->dtype == FL_F64 || out->dtype == FL_F64, 0, 0, 0};
    return fl_drive(&ctx, fl_reduce_task);
}
