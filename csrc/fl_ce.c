/* fl_ce.c: fused cross-entropy: per-row logsumexp, loss and optionally the gradient, in one
 * sweep per row. Compiled once per ISA; every symbol is FL_FN(name).
 *
 * A row is read from memory once (class-index targets, float32 compute type; float16 and
 * bfloat16 rows are read in place and widened in registers, fl_xrow): pass 1 walks it in
 * blocks of 1024 elements, takes each block's max and sums its exp(x - max) from L1 (an online
 * logsumexp, fl_ce_online_t), storing the exponentials in a scratch row when a gradient is
 * wanted; pass 2 reads that scratch row back from cache and writes each gradient element once
 * (non-temporal stores when the gradient is large). The gradient row may be the logits row
 * itself: what the loss needs from the logits (the target's logit, weighted sums of the row)
 * is taken before pass 2. No N x C temporary is ever made. With few classes (C <=
 * FL_LANES_MAX_C) rows go FL_W at a time through the SIMD lanes instead (fl_ce_tile_f32).
 *
 * Row gradient, with p = softmax(x), e_c = exp(x_c - m), S = sum_c e_c, c1 and c2 the
 * scales of the cross-entropy and z-loss parts (1/D1 and 1/D2 under "mean"), k = eps/C:
 *   class index y:  g_c = s*(c1*((1-eps)*w_y*(p_c - [c==y]) + k*(W*p_c - w_c)) + c2*2z*lse*p_c)
 *   probabilities:  g_c = s*(c1*(T*p_c - w_c*t'_c) + c2*2z*lse*p_c),   T = sum_c w_c*t'_c
 * so g_c = alpha*e_c - beta*w_c(*t'_c): one fused multiply-add per element. For the target
 * class, p_y - 1 is recomputed in double as -(S - e_y)/S from a sum that keeps the max's 1
 * apart (fl_ce_online_t), so it and the loss keep their relative accuracy when p_y is close
 * to 1 (the case a trained model is in).
 *
 * Reductions: each block of rows (fl_rows_per_block) adds its rows in compensated float64
 * sums and stores one partial per block; the partials are combined in block order, so the
 * result is bitwise the same for every thread count.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fastlogits.h"
#include "fl_atomic.h"
#include "fl_kernels.h"
#include "fl_pool.h"
#include "fl_rowio.h"
#include "fl_rowmath.h"
#include "fl_rowmath_f64.h"
#include "fl_tile.h"

/* Neumaier's compensated sum; an infinite or nan total is returned as it is */
typedef struct { double s, c; } fl_ksum;

static inline void fl_kadd(fl_ksum *k, double v)
{
    double t = k->s + v;
    k->c += fabs(k->s) >= fabs(v) ? (k->s - t) + v : (v - t) + k->s;
    k->s = t;
}

static inline double fl_kval(fl_ksum k) { return isfinite(k.s) ? k.s + k.c : k.s; }

/* the per-block partials */
enum { FL_P_CE, FL_P_Z, FL_P_D1, FL_P_D2, FL_P_NV, FL_NPART };

typedef struct {
    const fl_ce_args *a;
    fl_grid g;
    int f64;           /* compute in double (float64 logits) */
    int index;         /* class-index targets (else probabilities) */
    const float *wf;   /* class weights as float for the float32 gradient pass; NULL: unweighted */
    double wsum;       /* W = sum_c w_c */
    int64_t rpb;       /* rows per block */
    double *part;      /* FL_NPART partials per block */
    int64_t *bad;      /* per block: first row with an out-of-range class index, or -1 */
    int stream;        /* write a contiguous float32 gradient with non-temporal stores */
    int lanes;         /* small C: rows in the SIMD lanes (fl_ce_tile_f32) */
    fl_atomic_int failed; /* set by a task that could not allocate its scratch (several may, at once) */
} fl_ce_ctx;

typedef struct { double ce, z; } fl_ce_row;

/* ---------------- row helpers shared by both compute types ---------------- */

/* class index of row (i0, i1) */
static inline int64_t fl_ce_class(const fl_arr *t, int64_t i0, int64_t i1)
{
    const char *p = fl_row_ptr(t, i0, i1);
    return t->dtype == FL_I32 ? (int64_t) * (const int32_t *)p : *(const int64_t *)p;
}

/* Write v into every element of the gradient row (0 for ignored rows, nan for bad rows). */
static void fl_ce_fill_grad(const fl_ce_ctx *ctx, int64_t i0, int64_t i1, double v, void *scratch)
{
    const fl_arr *ga = &ctx->a->grad;
    int64_t c = ctx->g.c;
    if (!ga->data) return;
    char *grow = fl_row_ptr(ga, i0, i1);
    if (ctx->f64) {
        double *g = fl_row_dst_f64(ga, grow, (double *)scratch + c);
        for (int64_t k = 0; k < c; k++) g[k] = v;
        fl_row_out_f64(ga, grow, c, g);
    } else {
        float *g = fl_row_dst_f32(ga, grow, (float *)scratch + c);
        for (int64_t k = 0; k < c; k++) g[k] = (float)v;
        fl_row_out_f32(ga, grow, c, g);
    }
}

/* A row whose max is nan, +inf or -inf (all -inf): its softmax is undefined, so its loss
 * and gradient are nan, as in PyTorch. */
static fl_ce_row fl_ce_bad_row(const fl_ce_ctx *ctx, int64_t i0, int64_t i1, void *scratch)
{
    fl_ce_fill_grad(ctx, i0, i1, NAN, scratch);
    return (fl_ce_row){NAN, 0.0};
}

static inline double fl_ce_zterm(const fl_ce_args *a, double s, double lse)
{
    return a->z_loss > 0.0 ? s * a->z_loss * lse * lse : 0.0;
}

/* the z-loss part of the gradient coefficient of p_c: s*c2*2z*lse */
static inline double fl_ce_zcoef(const fl_ce_args *a, double s, double lse)
{
    return a->z_loss > 0.0 ? s * a->grad_scale_z * 2.0 * a->z_loss * lse : 0.0;
}

/* The sum S = n_max + rest of a row's exponentials (see fl_ce_online_t) and its log. */
typedef struct { double n_max, rest, S, logS; } fl_ce_sum;

static inline fl_ce_sum fl_ce_make_sum(double n_max, double rest)
{
    double S = n_max + rest;
    return (fl_ce_sum){n_max, rest, S, n_max == 1.0 ? fl_log1p_d(rest) : fl_log_d(S)};
}

/* Loss of a class-index row: xy = x_y - m, sw = sum_c w_c*(x_c - m). */
static fl_ce_row fl_ce_index_loss(const fl_ce_ctx *ctx, double s, double wy, double xy, fl_ce_sum S, double sw,
                                  double lse)
{
    const fl_ce_args *a = ctx->a;
    double eps = a->label_smoothing, cy = (1.0 - eps) * wy;
    double ce = 0.0;
    if (cy != 0.0) ce = cy * (S.logS - xy); /* -log p_y */
    if (eps > 0.0) ce += eps / (double)ctx->g.c * (ctx->wsum * S.logS - sw);
    return (fl_ce_row){s * ce, fl_ce_zterm(a, s, lse)};
}

/* Gradient coefficients of a class-index row: g_c = alpha*e_c - beta*w_c, and g_y itself
 * (ey: the exponential of the target class as it was stored; xy = x_y - m). */
static void fl_ce_index_coefs(const fl_ce_ctx *ctx, double s, double wy, double ey, double xy, fl_ce_sum S,
                              double lse, double *alpha, double *beta, double *gy)
{
    const fl_ce_args *a = ctx->a;
    double eps = a->label_smoothing, cy = (1.0 - eps) * wy, c1 = a->grad_scale_ce;
    double k = eps > 0.0 ? eps / (double)ctx->g.c : 0.0;
    double zc = fl_ce_zcoef(a, s, lse), py = ey / S.S;
    /* S - e_y: exact from the split sum when y holds the max (then e_y = 1) */
    double others = xy == 0.0 ? (S.n_max - 1.0) + S.rest : S.S - ey;
    *alpha = (s * c1 * (cy + k * ctx->wsum) + zc) / S.S;
    *beta = s * c1 * k;
    *gy = s * c1 * (cy * (-others / S.S) + k * (ctx->wsum * py - wy)) + zc * py;
}

/* ---------------- float32 rows (float32, float16, bfloat16 logits) ---------------- */

/* Rows are summed in blocks of FL_CE_BLOCK elements (4 KB of float32): the block's max is taken first,
 * which brings it into L1, then its exponentials are summed from there, so a row is read from
 * memory once and that read overlaps the exponentials (an online logsumexp). The blocks are
 * fixed by the row length alone, so the result does not depend on the thread count. */
#define FL_CE_BLOCK 1024

static int64_t fl_ce_nblocks(int64_t c) { return (c + FL_CE_BLOCK - 1) / FL_CE_BLOCK; }

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
 * among the sums' exponentials (fl_ahead_touch). x is of dtype dt (fl_xrow). */
FL_ALWAYS_INLINE float fl_ce_online_t(const void *x, int64_t c, float *e, float *bm, double *n_max, double *rest,
                                      fl_pend *pend, int32_t dt)
{
    float m = -INFINITY;
    double nm = 0.0, rs = 0.0;
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
        /* a block with no logit far below the max (no -inf or masked entry) takes the
         * exponential without the clamp and the subnormal branch */
        float *eb = e ? e + k : NULL;
        double nb = 0.0, rb;
        if (lo >= m + FL_EXPF_NORMAL_LO)
            rb = mb < m ? fl_rsumexp_below_t(xb, n, m, eb, ahead, 1, dt) : fl_rsumexp_t(xb, n, m, eb, &nb, 0, ahead, 1, dt);
        else
            rb = mb < m ? fl_rsumexp_below_t(xb, n, m, eb, ahead, 0, dt) : fl_rsumexp_t(xb, n, m, eb, &nb, 0, ahead, 0, dt);
        nm += nb;
        rs += rb;
    }
    *n_max = nm;
    *rest = rs;
    return m;
}

/* Bring the exponentials of blocks summed under an earlier, smaller running max to the final max m. */
static void fl_ce_rescale(float *e, int64_t c, const float *bm, float m)
{
    for (int64_t b = 0, k = 0; k < c; b++, k += FL_CE_BLOCK)
        if (bm[b] != m)
            fl_rscale_f32(e + k, c - k < FL_CE_BLOCK ? c - k : FL_CE_BLOCK,
                          (float)fl_exp_d((double)bm[b] - (double)m));
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
    float *e = !g ? NULL : pend->y && pend->src == scratch + 2 * c ? e2 : scratch + 2 * c;
    double n_max, rest;
    float m = fl_x_dispatch(x.dt, fl_ce_online_t, x.p, c, e, bm, &n_max, &rest, pend);
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
        fl_ce_rescale(e, c, bm, m);
        fl_ce_index_coefs(ctx, s, wy, (double)e[y], xy, S, lse, &alpha, &beta, &gy);
        fl_pend p = {g, e, ctx->wf, c, 0, y, FL_PEND_CE, (float)alpha, (float)beta, (float)gy,
                     0.0, 0.0, FL_F32, direct ? a->grad.dtype : FL_F32};
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

/* ---------------- float64 rows ---------------- */

/* The n_max + rest sum of fl_ce_online_t for double rows (two passes), rest in four compensated lanes */
static double fl_ce_sumexp_f64(const double *x, int64_t n, double m, double *y, double *n_max)
{
    fl_ksum acc[4] = {{0, 0}, {0, 0}, {0, 0}, {0, 0}};
    int64_t count = 0;
    for (int64_t k = 0; k < n; k++) {
        double xk = x[k], e = fl_exp_sub_d(xk, m); /* x[k] read once: y may be x (in place) */
        int top = xk == m;
        if (y) y[k] = e;
        count += top;
        fl_kadd(&acc[k & 3], top ? 0.0 : e);
    }
    *n_max = (double)count;
    return (fl_kval(acc[0]) + fl_kval(acc[1])) + (fl_kval(acc[2]) + fl_kval(acc[3]));
}

static double fl_ce_wshift_f64(const double *x, const double *w, int64_t c, double m)
{
    double acc[4] = {0, 0, 0, 0};
    for (int64_t k = 0; k < c; k++) {
        double wk = w ? w[k] : 1.0;
        acc[k & 3] += wk != 0.0 ? wk * (x[k] - m) : 0.0;
    }
    return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

static fl_ce_row fl_ce_index_f64(const fl_ce_ctx *ctx, int64_t i0, int64_t i1, int64_t y, double s, double *scratch)
{
    const fl_ce_args *a = ctx->a;
    int64_t c = ctx->g.c;
    const double *x = fl_row_in_f64(&a->x, fl_row_ptr(&a->x, i0, i1), c, scratch);
    char *grow = a->grad.data ? fl_row_ptr(&a->grad, i0, i1) : NULL;
    double *g = grow ? fl_row_dst_f64(&a->grad, grow, scratch + c) : NULL;
    double m = fl_rmax_f64(x, c);
    if (!isfinite(m)) return fl_ce_bad_row(ctx, i0, i1, scratch);
    double wy = a->weight ? a->weight[y] : 1.0;
    double xy = x[y] - m;
    double sw = a->label_smoothing > 0.0 ? fl_ce_wshift_f64(x, a->weight, c, m) : 0.0;
    double n_max, rest = fl_ce_sumexp_f64(x, c, m, g, &n_max);
    fl_ce_sum S = fl_ce_make_sum(n_max, rest);
    double lse = m + S.logS;
    fl_ce_row r = fl_ce_index_loss(ctx, s, wy, xy, S, sw, lse);
    if (g) {
        double alpha, beta, gy;
        fl_ce_index_coefs(ctx, s, wy, g[y], xy, S, lse, &alpha, &beta, &gy);
        const double *w = a->weight;
        if (beta == 0.0)
            for (int64_t k = 0; k < c; k++) g[k] *= alpha;
        else if (!w)
            for (int64_t k = 0; k < c; k++) g[k] = alpha * g[k] - beta;
        else
            for (int64_t k = 0; k < c; k++) g[k] = alpha * g[k] - beta * w[k];
        g[y] = gy;
        fl_row_out_f64(&a->grad, grow, c, g);
    }
    return r;
}

static fl_ce_row fl_ce_prob_f64(const fl_ce_ctx *ctx, int64_t i0, int64_t i1, double s, double *scratch)
{
    const fl_ce_args *a = ctx->a;
    int64_t c = ctx->g.c;
    const double *x = fl_row_in_f64(&a->x, fl_row_ptr(&a->x, i0, i1), c, scratch);
    const double *t = fl_row_in_f64(&a->target, fl_row_ptr(&a->target, i0, i1), c, scratch + 2 * c);
    char *grow = a->grad.data ? fl_row_ptr(&a->grad, i0, i1) : NULL;
    double *g = grow ? fl_row_dst_f64(&a->grad, grow, scratch + c) : NULL;
    double m = fl_rmax_f64(x, c);
    if (!isfinite(m)) return fl_ce_bad_row(ctx, i0, i1, scratch);
    const double *w = a->weight;
    double eps = a->label_smoothing, keep = 1.0 - eps, k = eps / (double)c;
    /* compensated: plain running sums were 300 ULP off on a 70000-class row. D is -inf when a
     * positive probability sits on a -inf logit: the plain sum keeps that value, the
     * compensation would turn it into nan. */
    fl_csum8 st = {{0}, {0}}, sd = {{0}, {0}};
    double plain_d = 0.0;
    for (int64_t j = 0; j < c; j++) {
        double wt = (keep * t[j] + k) * (w ? w[j] : 1.0);
        double dj = wt != 0.0 ? wt * (x[j] - m) : 0.0;
        fl_csum8_add(&st, (int)(j & 7), wt);
        fl_csum8_add(&sd, (int)(j & 7), dj);
        plain_d += dj;
    }
    double T = fl_csum8_total(&st), D = isfinite(plain_d) ? fl_csum8_total(&sd) : plain_d;
    double n_max, rest = fl_ce_sumexp_f64(x, c, m, g, &n_max);
    fl_ce_sum S = fl_ce_make_sum(n_max, rest);
    double lse = m + S.logS;
    fl_ce_row r = {s * (T * S.logS - D), fl_ce_zterm(a, s, lse)};
    if (g) {
        double beta = s * a->grad_scale_ce, alpha = (beta * T + fl_ce_zcoef(a, s, lse)) / S.S;
        for (int64_t j = 0; j < c; j++) g[j] = alpha * g[j] - beta * ((keep * t[j] + k) * (w ? w[j] : 1.0));
        fl_row_out_f64(&a->grad, grow, c, g);
    }
    return r;
}

/* ---------------- driver ---------------- */

/* A probability row with no classes: the cross-entropy is an empty sum; lse = -inf, so a
 * positive z_loss makes the row's z part infinite. */
static fl_ce_row fl_ce_prob_empty(const fl_ce_args *a, double s)
{
    return (fl_ce_row){0.0, a->z_loss > 0.0 ? s * a->z_loss * INFINITY : 0.0};
}

static fl_ce_row fl_ce_prob_row(const fl_ce_ctx *ctx, int64_t i0, int64_t i1, double s, void *scratch)
{
    if (ctx->g.c == 0) return fl_ce_prob_empty(ctx->a, s);
    return ctx->f64 ? fl_ce_prob_f64(ctx, i0, i1, s, (double *)scratch) : fl_ce_prob_f32(ctx, i0, i1, s, (float *)scratch);
}

/* One row of a block: its loss and gradient, added to the block's partial sums. */
static void fl_ce_one_row(fl_ce_ctx *ctx, int64_t i0, int64_t i1, int64_t r, fl_ksum *acc, int64_t *bad, void *scratch,
                          fl_pend *pend)
{
    const fl_ce_args *a = ctx->a;
    int64_t c = ctx->g.c;
    double s = a->sample_weight.data ? *(const double *)fl_row_ptr(&a->sample_weight, i0, i1) : 1.0;
    fl_ce_row lr = {0.0, 0.0};
    if (ctx->index) {
        int64_t y = fl_ce_class(&a->target, i0, i1);
        int use = y != a->ignore_index;
        if (use && (y < 0 || y >= c)) {
            /* reported by the caller; the row is skipped like an ignored one */
            if (*bad < 0) *bad = r;
            use = 0;
        }
        if (use) {
            fl_kadd(&acc[FL_P_D1], s * (a->weight ? a->weight[y] : 1.0));
            fl_kadd(&acc[FL_P_D2], s);
            fl_kadd(&acc[FL_P_NV], 1.0);
        }
        if (!a->targets_only) {
            if (!use)
                fl_ce_fill_grad(ctx, i0, i1, 0.0, scratch);
            else if (ctx->f64)
                lr = fl_ce_index_f64(ctx, i0, i1, y, s, (double *)scratch);
            else
                lr = fl_ce_index_f32(ctx, i0, i1, y, s, (float *)scratch, pend);
        }
    } else {
        lr = fl_ce_prob_row(ctx, i0, i1, s, scratch);
    }
    fl_kadd(&acc[FL_P_CE], lr.ce);
    fl_kadd(&acc[FL_P_Z], lr.z);
    if (a->loss.data) fl_put_scalar(&a->loss, i0, i1, lr.ce + lr.z);
}

/* Tiles whose losses wait for fl_ce_tiles_flush: the last step of a tile's loss, a log1p, ends
 * a long chain of dependent operations (gathers, max, exponentials, sums); taken for a batch
 * of tiles at once, the chains of several tiles overlap instead of one tile's chain stalling
 * the next (0.35 -> 0.27 ms on 65536 x 2). */
#define FL_CE_BATCH 8

/* Per-task scratch of the row-in-lanes path: two tiles, the tile index tables, and the batch
 * of pending losses: lane inputs others, x_y - m, weight and class (bo, bx, bw, by: FL_W each
 * per tile) and each tile's rows. */
typedef struct {
    float *xt, *gt;
    int32_t *gidx, *gidx_part, *oidx;
    float bo[FL_CE_BATCH * FL_W], bx[FL_CE_BATCH * FL_W], bw[FL_CE_BATCH * FL_W], by[FL_CE_BATCH * FL_W];
    int64_t bi0[FL_CE_BATCH], bi1[FL_CE_BATCH], bnr[FL_CE_BATCH];
    int nb;
} fl_ce_tiles;

/* The losses of the pending tiles, in tile order, into lsum (and the per-row losses). */
static void fl_ce_tiles_flush(const fl_ce_ctx *ctx, fl_ce_tiles *t, fl_dacc *lsum)
{
    const fl_ce_args *a = ctx->a;
    flv zero = flv_set1(0.0f);
    for (int q = 0; q < t->nb; q++) {
        flv vy = flv_load(t->by + q * FL_W), vxy = flv_load(t->bx + q * FL_W);
        flv vsw = flv_load(t->bw + q * FL_W), others = flv_load(t->bo + q * FL_W);
        /* unused lanes are selected out of the sum, not multiplied by 0: a lane past nr
         * repeats row 0, whose loss may be infinite */
        flv loss = flv_sel_neg(vy, zero, flv_mul(vsw, flv_sub(flv_log1p(others), vxy)));
        *lsum = fl_dacc_add(*lsum, loss);
        if (a->loss.data) {
            float l[FL_W];
            flv_store(l, loss);
            for (int64_t j = 0; j < t->bnr[q]; j++) fl_put_scalar(&a->loss, t->bi0[q], t->bi1[q] + j, (double)l[j]);
        }
    }
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

/* nr <= FL_W rows (i0, i1 ... i1 + nr - 1) with FL_W rows in the lanes: float32 logits, class
 * indices, c <= FL_LANES_MAX_C, no label smoothing or z-loss (fl_ce_lanes_ok). The loss of a
 * row is the same as fl_ce_index_f32's to rounding: -log p_y = log1p(n_max - 1 + rest) - (x_y - m)
 * in float32 lanes, a sum of two non-negative terms. The losses join the block's sum through
 * float64 lanes (lsum). Ignored rows take part as lanes of weight 0 whose loss and gradient are
 * selected to 0, as are the lanes past nr; x_y is picked by a compare per class rather than a
 * gather from the tile, whose stores would still be in flight. Returns 0, touching nothing,
 * when a row has an out-of-range class or a lane a non-finite max: the caller then takes those
 * rows one by one. */
static int fl_ce_tile_f32(const fl_ce_ctx *ctx, int64_t i0, int64_t i1, int64_t nr, fl_ksum *acc, fl_dacc *lsum,
                          int64_t *nvalid, fl_ce_tiles *t)
{
    const fl_ce_args *a = ctx->a;
    int64_t c = ctx->g.c;
    /* yf[j]: row j's class as a float (exact, c <= 64), -1 for an ignored row or a lane past nr */
    float yf[FL_W], sw[FL_W];
    const char *tp = fl_row_ptr(&a->target, i0, i1);
    int64_t ts = a->target.s1, ign = a->ignore_index, badrow = 0, nv = 0;
    int weighted = a->weight || a->sample_weight.data;
    if (nr == FL_W && ts == 1 && a->target.dtype == FL_I64) {
        /* the common layout, as one loop the compiler vectorises */
        const int64_t *yp = (const int64_t *)(const void *)tp;
        for (int64_t j = 0; j < FL_W; j++) fl_ce_lane_class(yp[j], ign, c, yf + j, sw + j, &badrow, &nv);
    } else {
        for (int64_t j = 0; j < FL_W; j++) {
            int64_t y = j >= nr                     ? ign
                        : a->target.dtype == FL_I64 ? ((const int64_t *)(const void *)tp)[j * ts]
                                                    : (int64_t)((const int32_t *)(const void *)tp)[j * ts];
            fl_ce_lane_class(y, ign, c, yf + j, sw + j, &badrow, &nv);
        }
    }
    if (badrow) return 0;
    double d1 = 0.0, d2 = 0.0;
    if (weighted) {
        for (int64_t j = 0; j < nr; j++) {
            if (yf[j] < 0.0f) continue;
            double s = a->sample_weight.data ? *(const double *)fl_row_ptr(&a->sample_weight, i0, i1 + j) : 1.0;
            double w = s * (a->weight ? a->weight[(int64_t)yf[j]] : 1.0);
            sw[j] = (float)w;
            d1 += w;
            d2 += s;
        }
    }
    const int32_t *gidx = nr == FL_W ? t->gidx : t->gidx_part;
    fl_tile_load((const float *)(void *)fl_row_ptr(&a->x, i0, i1), a->x.s1, a->x.sc, c, nr, gidx, t->xt);
    flv m = fl_tile_max(t->xt, c);
    if (!flv_all_finite(m)) return 0; /* lanes past nr repeat row 0 or hold 0 */
    /* the sums of fl_ce_online_t, lane-wise: two float32 accumulators of at most 32 terms,
     * classes alternating between them */
    flv zero = flv_set1(0.0f), one = flv_set1(1.0f), half = flv_set1(0.5f), vy = flv_load(yf);
    flv cnt = zero, r0 = zero, r1 = zero, vxy = m, kf = zero;
    int grad = a->grad.data != NULL;
    int64_t k = 0;
    for (; k + 2 <= c; k += 2) {
        flv x0 = flv_load(t->xt + k * FL_W), x1 = flv_load(t->xt + (k + 1) * FL_W);
        flv d0 = flv_sub(x0, m), d1v = flv_sub(x1, m);
        flv e0 = flv_exp_neg_fast(d0), e1 = flv_exp_neg_fast(d1v);
        if (grad) {
            flv_store(t->gt + k * FL_W, e0);
            flv_store(t->gt + (k + 1) * FL_W, e1);
        }
        r0 = flv_add(r0, flv_sel_neg(d0, e0, zero));
        r1 = flv_add(r1, flv_sel_neg(d1v, e1, zero));
        cnt = flv_add(cnt, flv_add(flv_sel_neg(d0, zero, one), flv_sel_neg(d1v, zero, one)));
        vxy = flv_sel_neg(flv_sub(flv_abs(flv_sub(vy, kf)), half), x0, vxy);
        kf = flv_add(kf, one);
        vxy = flv_sel_neg(flv_sub(flv_abs(flv_sub(vy, kf)), half), x1, vxy);
        kf = flv_add(kf, one);
    }
    if (k < c) {
        flv x0 = flv_load(t->xt + k * FL_W), d0 = flv_sub(x0, m), e0 = flv_exp_neg_fast(d0);
        if (grad) flv_store(t->gt + k * FL_W, e0);
        r0 = flv_add(r0, flv_sel_neg(d0, e0, zero));
        cnt = flv_add(cnt, flv_sel_neg(d0, zero, one));
        vxy = flv_sel_neg(flv_sub(flv_abs(flv_sub(vy, kf)), half), x0, vxy);
    }
    vxy = flv_sub(vxy, m);
    flv rest = flv_add(r0, r1), vsw = flv_load(sw);
    flv others = flv_add(flv_sub(cnt, one), rest); /* S - 1 when y holds the max */
    if (t->nb == FL_CE_BATCH) fl_ce_tiles_flush(ctx, t, lsum);
    int q = t->nb++;
    flv_store(t->bo + q * FL_W, others);
    flv_store(t->bx + q * FL_W, vxy);
    flv_store(t->bw + q * FL_W, vsw);
    flv_store(t->by + q * FL_W, vy);
    t->bi0[q] = i0;
    t->bi1[q] = i1;
    t->bnr[q] = nr;
    if (weighted) {
        fl_kadd(&acc[FL_P_D1], d1);
        fl_kadd(&acc[FL_P_D2], d2);
    }
    *nvalid += nv;
    if (grad) {
        /* g_c = s*c1*w_y*(p_c - [c == y]); for the target, S - e_y is kept exact as above
         * when y holds the max. Unused lanes take alpha = +0, selected rather than from their
         * weight 0: the scale is infinite when a mean has no valid row. */
        flv S = flv_add(cnt, rest), scale = flv_mul(flv_set1((float)a->grad_scale_ce), vsw);
        flv alpha = flv_sel_neg(vy, zero, flv_div(scale, S));
        flv gy = flv_neg(flv_mul(alpha, flv_sel_neg(vxy, flv_sub(S, flv_exp_neg_fast(vxy)), others)));
        kf = zero;
        for (k = 0; k < c; k++) {
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
    if (!fl_tile_layout_ok(a->x.s1, g.c)) return 0;
    /* any float32 gradient layout is stored from the tile (fl_tile_store) */
    if (a->grad.data && a->grad.dtype != FL_F32) return 0;
    return 1;
}

/* Valid rows (a class index in range, not ignore_index) of the class indices t[0], t[s], ...
 * t[(n - 1) * s]; *nbad counts the others that are not ignored. One branch-free loop per
 * index type, which the compiler vectorises. */
#define FL_CE_COUNT_VALID(T)                                                                      \
    static int64_t fl_ce_count_##T(const T *t, int64_t s, int64_t n, int64_t c, int64_t ign, int64_t *nbad) \
    {                                                                                             \
        int64_t nv = 0, nb = 0;                                                                   \
        for (int64_t j = 0; j < n; j++) {                                                         \
            int64_t y = (int64_t)t[j * s], use = y != ign, in = (uint64_t)y < (uint64_t)c;        \
            nv += use & in;                                                                       \
            nb += use & !in;                                                                      \
        }                                                                                         \
        *nbad = nb;                                                                               \
        return nv;                                                                                \
    }
FL_CE_COUNT_VALID(int64_t)
FL_CE_COUNT_VALID(int32_t)

/* The valid rows of rows r0 .. r1 - 1, taken a run of one i0 at a time; *bad becomes the first
 * row with an out-of-range class, if any (rescanned row by row: an error path). */
static int64_t fl_ce_count_valid(const fl_ce_ctx *ctx, int64_t r0, int64_t r1, int64_t *bad)
{
    const fl_arr *t = &ctx->a->target;
    int64_t n1 = ctx->g.n1, c = ctx->g.c, ign = ctx->a->ignore_index, nv = 0;
    for (int64_t r = r0; r < r1;) {
        int64_t i0 = r / n1, i1 = r % n1, len = r1 - r < n1 - i1 ? r1 - r : n1 - i1, nbad;
        const void *p = fl_row_ptr(t, i0, i1);
        nv += t->dtype == FL_I64 ? fl_ce_count_int64_t((const int64_t *)p, t->s1, len, c, ign, &nbad)
                                 : fl_ce_count_int32_t((const int32_t *)p, t->s1, len, c, ign, &nbad);
        for (int64_t j = 0; nbad && *bad < 0 && j < len; j++) {
            int64_t y = fl_ce_class(t, i0, i1 + j);
            if (y != ign && (y < 0 || y >= c)) *bad = r + j;
        }
        r += len;
    }
    return nv;
}

/* One block of rows: per-row losses (written when asked) and the block's partial sums. */
static void fl_ce_block(fl_ce_ctx *ctx, int64_t b, void *scratch, fl_ce_tiles *tiles, fl_pend *pend)
{
    int64_t n1 = ctx->g.n1, nrows = ctx->g.n0 * n1;
    int64_t r0 = b * ctx->rpb, r1 = r0 + ctx->rpb < nrows ? r0 + ctx->rpb : nrows;
    int64_t i0 = r0 / n1, i1 = r0 % n1, bad = -1;
    fl_ksum acc[FL_NPART];
    memset(acc, 0, sizeof(acc));
    fl_dacc lsum = fl_dacc_zero();
    int64_t nvalid = 0; /* rows of the tiles: each adds 1 to n_valid, and to D1 and D2 when unweighted */
    if (ctx->a->targets_only && ctx->index && !ctx->a->weight && !ctx->a->sample_weight.data) {
        /* the denominators alone, unweighted: a count of the valid rows (exact in an integer),
         * added below as the tiles' rows are */
        nvalid = fl_ce_count_valid(ctx, r0, r1, &bad);
        r0 = r1;
    }
    for (int64_t r = r0; r < r1;) {
        int64_t nr = 1;
        if (tiles) {
            /* a tile: up to FL_W rows of the same i0 */
            nr = r1 - r < n1 - i1 ? r1 - r : n1 - i1;
            nr = nr < FL_W ? nr : FL_W;
            if (nr < FL_W)
                for (int64_t j = 0; j < FL_W; j++) tiles->gidx_part[j] = j < nr ? (int32_t)(j * ctx->a->x.s1) : 0;
            if (!fl_ce_tile_f32(ctx, i0, i1, nr, acc, &lsum, &nvalid, tiles))
                for (int64_t j = 0; j < nr; j++) fl_ce_one_row(ctx, i0, i1 + j, r + j, acc, &bad, scratch, pend);
        } else {
            fl_ce_one_row(ctx, i0, i1, r, acc, &bad, scratch, pend);
        }
        r += nr;
        i1 += nr;
        if (i1 == n1) { i1 = 0; i0++; }
    }
    if (tiles) fl_ce_tiles_flush(ctx, tiles, &lsum);
    fl_kadd(&acc[FL_P_CE], fl_dacc_sum(lsum));
    fl_kadd(&acc[FL_P_NV], (double)nvalid);
    if (!ctx->a->weight && !ctx->a->sample_weight.data) {
        fl_kadd(&acc[FL_P_D1], (double)nvalid);
        fl_kadd(&acc[FL_P_D2], (double)nvalid);
    }
    for (int q = 0; q < FL_NPART; q++) ctx->part[b * FL_NPART + q] = fl_kval(acc[q]);
    ctx->bad[b] = bad;
}

static void fl_ce_task(void *vctx, int64_t b0, int64_t b1)
{
    fl_ce_ctx *ctx = (fl_ce_ctx *)vctx;
    void *scratch = NULL;
    if (!ctx->a->targets_only) {
        /* logits row, gradient row, exponentials or target row of the compute type, block
         * maxima, a second row of exponentials (a pending streamed gradient's) */
        size_t c = (size_t)(ctx->g.c > 0 ? ctx->g.c : 1);
        scratch = malloc((4 * c + (size_t)fl_ce_nblocks((int64_t)c)) * (ctx->f64 ? sizeof(double) : sizeof(float)));
        if (!scratch) { fl_atomic_store(&ctx->failed, 1); return; }
    }
    fl_ce_tiles tiles, *tp = NULL;
    void *tile_mem = NULL;
    if (ctx->lanes) {
        size_t n = (size_t)ctx->g.c * FL_W;
        tile_mem = malloc(2 * n * sizeof(float) + (2 * FL_W + n) * sizeof(int32_t));
        if (!tile_mem) { free(scratch); fl_atomic_store(&ctx->failed, 1); return; }
        tiles.xt = (float *)tile_mem;
        tiles.gt = tiles.xt + n;
        tiles.gidx = (int32_t *)(void *)(tiles.gt + n);
        tiles.gidx_part = tiles.gidx + FL_W;
        tiles.oidx = tiles.gidx_part + FL_W;
        tiles.nb = 0;
        fl_tile_index(ctx->a->x.s1, ctx->g.c, tiles.gidx, tiles.oidx);
        tp = &tiles;
    }
    fl_pend pend = {NULL, NULL, NULL, 0, 0, -1, FL_PEND_CE, 0.0f, 0.0f, 0.0f, 0.0, 0.0, FL_F32, FL_F32};
    for (int64_t b = b0; b < b1; b++) fl_ce_block(ctx, b, scratch, tp, &pend);
    fl_pend_drain(&pend, ctx->g.c);
    if (ctx->stream) fl_stream_fence();
    free(tile_mem);
    free(scratch);
}

/* combine the per-block partials in block order */
static void fl_ce_combine(const fl_ce_ctx *ctx, int64_t nb, fl_ce_result *res)
{
    double tot[FL_NPART];
    for (int q = 0; q < FL_NPART; q++) {
        fl_ksum k = {0.0, 0.0};
        for (int64_t b = 0; b < nb; b++) fl_kadd(&k, ctx->part[b * FL_NPART + q]);
        tot[q] = fl_kval(k);
    }
    res->ce_sum = tot[FL_P_CE];
    res->z_sum = tot[FL_P_Z];
    res->d1 = tot[FL_P_D1];
    res->d2 = tot[FL_P_D2];
    res->n_valid = tot[FL_P_NV];
    for (int64_t b = 0; b < nb; b++)
        if (ctx->bad[b] >= 0) { res->first_bad = ctx->bad[b]; break; }
}

int FL_FN(cross_entropy)(const fl_ce_args *a, fl_grid g, fl_ce_result *res)
{
    memset(res, 0, sizeof(*res));
    res->first_bad = -1;
    int64_t nrows = g.n0 * g.n1;
    if (nrows <= 0) return FL_OK;
    fl_ce_ctx ctx;
    memset(&ctx, 0, sizeof(ctx));
    ctx.a = a;
    ctx.g = g;
    ctx.f64 = a->x.dtype == FL_F64;
    ctx.index = a->target.dtype == FL_I64 || a->target.dtype == FL_I32;
    ctx.rpb = fl_rows_per_block(g.c);
    ctx.lanes = fl_ce_lanes_ok(a, g, ctx.index);
    ctx.stream = a->grad.data && fl_stream_ok(&a->grad, nrows, g.c);
    int64_t nb = (nrows + ctx.rpb - 1) / ctx.rpb;
    fl_ksum w = {0.0, 0.0};
    for (int64_t k = 0; k < g.c; k++) fl_kadd(&w, a->weight ? a->weight[k] : 1.0);
    ctx.wsum = fl_kval(w);
    ctx.part = (double *)malloc((size_t)nb * FL_NPART * sizeof(double));
    ctx.bad = (int64_t *)malloc((size_t)nb * sizeof(int64_t));
    float *wf = NULL;
    if (a->weight && !ctx.f64 && g.c > 0) {
        wf = (float *)malloc((size_t)g.c * sizeof(float));
        if (wf)
            for (int64_t k = 0; k < g.c; k++) wf[k] = (float)a->weight[k];
    }
    ctx.wf = wf;
    int status = FL_OK;
    if (!ctx.part || !ctx.bad || (a->weight && !ctx.f64 && g.c > 0 && !wf)) {
        status = FL_ENOMEM;
    } else {
        fl_parallel_for(nb, fl_ce_task, &ctx);
        if (fl_atomic_load(&ctx.failed)) status = FL_ENOMEM;
        else fl_ce_combine(&ctx, nb, res);
    }
    free(wf);
    free(ctx.bad);
    free(ctx.part);
    return status;
}
