/* fl_ce_f32.h: cross-entropy rows of the float32 compute type (float32, float16 and bfloat16
 * logits), one row at a time (fl_ce.c includes it after fl_ce_core.h).
 *
 * A row is read from memory once (class-index targets; float16 and bfloat16 rows are read in
 * place and widened in registers, fl_xrow): pass 1 walks it in blocks of FL_CE_BLOCK elements,
 * takes each block's max and sums its exp(x - max) from L1 (an online logsumexp,
 * fl_ce_online_t in fl_lse_row.h), storing the exponentials in a scratch row when a gradient
 * is wanted; pass 2 reads that scratch row back from cache and writes each gradient element
 * once (non-temporal stores when the gradient is large: fl_pend.h). The gradient row may be
 * the logits row itself: what the loss needs from the logits (the target's logit, weighted
 * sums of the row) is taken before pass 2. Probability targets take the row's max, its weighted dot products and its
 * sum of exponentials in separate passes from cache. Compiled once per ISA.
 */
#ifndef FL_CE_F32_H
#define FL_CE_F32_H

#include "fl_ce_core.h"

static int64_t fl_ce_nblocks(int64_t c) { return (c + FL_CE_BLOCK - 1) / FL_CE_BLOCK; }

/* Rows whose exponentials may be subnormal (a logit lo more than about 86 below the max m: a
 * margin of 1 below float32's normal range for the factor times e_k) scale them by flv_mul_tiny:
 * the bits of a plain product, without x86's microcode assist for a subnormal operand or result
 * (40-50 ns a vector), which made the gradient of rows of a wide spread 9x slower. log_factor:
 * the log of a factor (<= 1) the exponentials are further multiplied by. */
static inline int fl_ce_tiny(float lo, float m, double log_factor)
{
    return (double)lo - (double)m + log_factor < -86.0;
}

/* e *= f for n floats; tiny: by flv_mul_tiny (fl_ce_tiny) */
static void fl_ce_scale(float *e, int64_t n, float f, int tiny)
{
    flv vf = flv_set1(f);
    int64_t j = 0;
    for (; j + FL_W <= n; j += FL_W) {
        flv v = flv_load(e + j);
        flv_store(e + j, tiny ? flv_mul_tiny(v, vf) : flv_mul(v, vf));
    }
    if (j < n) {
        flv v = flv_load_part(e + j, n - j, 0.0f);
        flv_store_part(e + j, tiny ? flv_mul_tiny(v, vf) : flv_mul(v, vf), n - j);
    }
}

/* Bring the exponentials of blocks summed under an earlier, smaller running max to the final
 * max m (each times exp(bm - m) <= 1). */
static void fl_ce_rescale(float *e, int64_t c, const float *bm, float m, int tiny)
{
    for (int64_t b = 0, k = 0; k < c; b++, k += FL_CE_BLOCK)
        if (bm[b] != m)
            fl_ce_scale(e + k, c - k < FL_CE_BLOCK ? c - k : FL_CE_BLOCK, (float)fl_exp_d((double)bm[b] - (double)m),
                        tiny);
}

/* How a class-index row's gradient g_k = alpha*e_k - beta is written (fl_pend.h): rows whose
 * exponentials may be subnormal (fl_ce_tiny) without x86's assist where the bits allow it:
 * alpha * e_k by flv_mul_tiny without smoothing or class weights (beta = 0), or the e_k of
 * alpha * e_k < 2^-100 taken as 0 with smoothing (beta >= 2^-70, no class weights); else the
 * fused form. */
static inline int fl_ce_pend_kind(const fl_ce_ctx *ctx, float lo, float m, float alpha, float beta)
{
    if (ctx->wf) return FL_PEND_CE;
    if (beta == 0.0f && alpha > 0.0f && fl_ce_tiny(lo, m, fl_log_d(alpha))) return FL_PEND_CE_TINY;
    if (beta >= 0x1p-70f && alpha > 0.0f && fl_ce_tiny(lo, m, 0.0)) return FL_PEND_CE_FLOOR;
    return FL_PEND_CE;
}

/* sum over c of w_c*(x_c - m) in double, skipping w_c = 0 (so a -inf logit of weight 0 adds 0) */
FL_ALWAYS_INLINE double fl_ce_wshift_t(const void *x, const double *w, int64_t c, float m, int32_t dt)
{
    double acc[4] = {0, 0, 0, 0};
    int64_t k = 0;
    if (!w) {
        for (; k + 4 <= c; k += 4)
            for (int j = 0; j < 4; j++) acc[j] += (double)fl_xget(x, k + j, dt) - (double)m;
        for (; k < c; k++) acc[0] += (double)fl_xget(x, k, dt) - (double)m;
    } else {
        for (; k < c; k++) acc[k & 3] += w[k] != 0.0 ? w[k] * ((double)fl_xget(x, k, dt) - (double)m) : 0.0;
    }
    return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

/* A class-index row of the float32 compute type (logits read as fl_row_in_x gives them).
 * Scratch: the gathered row (strided rows only), the gradient row
 * when the output cannot take it in place, the exponentials, the block maxima, a second row of
 * exponentials. A streamed gradient is left pending in pend (its exponentials in whichever
 * exponential row pend does not hold), written during the next row's first pass. */
static fl_ce_row fl_ce_index_f32(const fl_ce_ctx *ctx, int64_t i0, int64_t i1, int64_t y, double s, float *scratch,
                                 fl_pend *pend)
{
    const fl_ce_args *a = ctx->a;
    int64_t c = ctx->g.c;
    fl_xrow x = fl_row_in_x(&a->x, fl_row_ptr(&a->x, i0, i1), c, scratch);
    char *grow = a->grad.data ? fl_row_ptr(&a->grad, i0, i1) : NULL;
    int direct = grow && fl_row_is_x(&a->grad); /* written into its row, narrowed as it goes */
    void *g = !grow ? NULL : direct ? (void *)grow : (void *)(scratch + c);
    float *bm = scratch + 3 * c, *e2 = bm + fl_ce_nblocks(c);
    /* the exponentials: in the float32 gradient row itself when it is written with plain stores
     * and is not the logits' row (its lines are then read for ownership among the exponentials,
     * and the gradient is computed in place from L2, as softmax does: AMD Zen 4, 4096 x 32000
     * out= on AVX2 87 -> 69 ms, fresh outputs on AVX-512 105 -> 95); else a scratch row (the
     * one a pending row does not hold) */
    float *e = !g                                                   ? NULL
               : direct && !ctx->stream && a->grad.dtype == FL_F32 && g != (const void *)x.p ? (float *)g
               : pend->y && pend->src == scratch + 2 * c            ? e2
                                                                    : scratch + 2 * c;
    double n_max, rest;
    float lo = -INFINITY, m = fl_x_dispatch(x.dt, fl_ce_online_t, x.p, c, e, bm, &n_max, &rest, &lo, pend);
    if (!isfinite(m)) return fl_ce_bad_row(ctx, i0, i1, scratch);
    double wy = a->weight ? a->weight[y] : 1.0;
    /* before the gradient, which may overwrite x (in place) */
    double xy = (double)fl_x_dispatch(x.dt, fl_xget, x.p, y) - (double)m;
    double sw = a->label_smoothing > 0.0 ? fl_x_dispatch(x.dt, fl_ce_wshift_t, x.p, a->weight, c, m) : 0.0;
    fl_ce_sum S = fl_ce_make_sum(n_max, rest);
    double lse = (double)m + S.logS;
    fl_ce_row r = fl_ce_index_loss(ctx, s, wy, xy, S, sw, lse);
    if (g) {
        double alpha, beta, gy;
        fl_ce_rescale(e, c, bm, m, fl_ce_tiny(lo, m, 0.0));
        fl_ce_index_coefs(ctx, s, wy, (double)e[y], xy, S, lse, &alpha, &beta, &gy);
        fl_pend p = {g, e, ctx->wf, c, 0, y, fl_ce_pend_kind(ctx, lo, m, (float)alpha, (float)beta), (float)alpha,
                     (float)beta, (float)gy, 0.0, 0.0, FL_F32, direct ? a->grad.dtype : FL_F32};
        if (ctx->stream && direct) {
            fl_pend_drain(pend, c);
            *pend = p;
        } else {
            fl_pend_write_plain(&p);
            if (!direct) fl_row_out_f32(&a->grad, grow, c, (const float *)g);
        }
    }
    return r;
}

/* The probability row as float32 (fl_row_in_f32 reads the float32 and half types; a float64
 * target next to float32 logits is rounded here). */
static const float *fl_ce_target_f32(const fl_arr *t, const char *row, int64_t c, float *buf)
{
    if (t->dtype != FL_F64) return fl_row_in_f32(t, row, c, buf);
    const double *p = (const double *)row;
    for (int64_t k = 0; k < c; k++) buf[k] = (float)p[k * t->sc];
    return buf;
}

/* T = sum_c wt_c and D = sum_c wt_c*(x_c - m) with wt_c = w_c*t'_c, t'_c = keep*t_c + k;
 * terms with wt_c = 0 add 0 to D (0 * log 0 = 0) */
FL_ALWAYS_INLINE void fl_ce_tdot_t(const void *x, const float *t, const double *w, int64_t c, float m,
                                   double keep, double k, double *T, double *D, int32_t dt)
{
    double st = 0.0, sd = 0.0;
    for (int64_t j = 0; j < c; j++) {
        double wt = (keep * (double)t[j] + k) * (w ? w[j] : 1.0);
        st += wt;
        sd += wt != 0.0 ? wt * ((double)fl_xget(x, j, dt) - (double)m) : 0.0;
    }
    *T = st;
    *D = sd;
}

/* g_c = alpha*g_c - beta*w_c*(keep*t_c + k), in place */
static void fl_ce_prob_grad_f32(float *g, const float *t, const float *w, int64_t c, float alpha, float beta,
                                float keep, float k)
{
    flv va = flv_set1(alpha), vb = flv_set1(-beta), vkeep = flv_set1(keep), vk = flv_set1(k);
    int64_t j = 0;
    for (; j + FL_W <= c; j += FL_W) {
        flv wt = flv_fma(flv_load(t + j), vkeep, vk);
        if (w) wt = flv_mul(wt, flv_load(w + j));
        flv_store(g + j, flv_fma(flv_load(g + j), va, flv_mul(vb, wt)));
    }
    if (j < c) {
        flv wt = flv_fma(flv_load_part(t + j, c - j, 0.0f), vkeep, vk);
        if (w) wt = flv_mul(wt, flv_load_part(w + j, c - j, 0.0f));
        flv_store_part(g + j, flv_fma(flv_load_part(g + j, c - j, 0.0f), va, flv_mul(vb, wt)), c - j);
    }
}

static fl_ce_row fl_ce_prob_f32(const fl_ce_ctx *ctx, int64_t i0, int64_t i1, double s, float *scratch)
{
    const fl_ce_args *a = ctx->a;
    int64_t c = ctx->g.c;
    fl_xrow x = fl_row_in_x(&a->x, fl_row_ptr(&a->x, i0, i1), c, scratch);
    const float *t = fl_ce_target_f32(&a->target, fl_row_ptr(&a->target, i0, i1), c, scratch + 2 * c);
    char *grow = a->grad.data ? fl_row_ptr(&a->grad, i0, i1) : NULL;
    float *g = grow ? fl_row_dst_f32(&a->grad, grow, scratch + c) : NULL;
    float m = fl_x_dispatch(x.dt, fl_rmax_t, x.p, c);
    if (!isfinite(m)) return fl_ce_bad_row(ctx, i0, i1, scratch);
    double eps = a->label_smoothing, keep = 1.0 - eps, k = eps / (double)c, T, D;
    fl_x_dispatch(x.dt, fl_ce_tdot_t, x.p, t, a->weight, c, m, keep, k, &T, &D);
    double n_max, rest = fl_x_dispatch(x.dt, fl_rsumexp_t, x.p, c, m, g, &n_max, 0, fl_ahead_none(), 0);
    fl_ce_sum S = fl_ce_make_sum(n_max, rest);
    double lse = (double)m + S.logS;
    fl_ce_row r = {s * (T * S.logS - D), fl_ce_zterm(a, s, lse)};
    if (g) {
        double beta = s * a->grad_scale_ce, alpha = (beta * T + fl_ce_zcoef(a, s, lse)) / S.S;
        fl_ce_prob_grad_f32(g, t, ctx->wf, c, (float)alpha, (float)beta, (float)keep, (float)k);
        fl_row_out_f32(&a->grad, grow, c, g);
    }
    return r;
}

#endif
