/* fl_ce_core.h: what the files of the cross-entropy kernel share (fl_ce.c includes them all):
 * the call's context, a row's loss parts, the per-task accumulators of the reduced sums, and
 * the arithmetic of a row's loss and gradient coefficients common to both compute types.
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
 * Reduced sums: each task adds its rows' values (s_i * loss_i, s_i * z-loss_i, and under
 * weights the denominators' s_i * w[y_i] and s_i) to order-independent sums (fl_rsum.h)
 * through small row buffers, and counts the valid rows exactly. Compiled once per ISA.
 */
#ifndef FL_CE_CORE_H
#define FL_CE_CORE_H

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fastlogits.h"
#include "fl_atomic.h"
#include "fl_kernels.h"
#include "fl_rowio.h"
#include "fl_rowmath.h"
#include "fl_rsum.h"
#include "fl_lse_row.h"

typedef struct {
    const fl_ce_args *a;
    fl_grid g;
    int f64;           /* compute in double (float64 logits) */
    int index;         /* class-index targets (else probabilities) */
    const float *wf;   /* class weights as float for the float32 gradient pass; NULL: unweighted */
    double wsum;       /* W = sum_c w_c */
    int64_t rpb;       /* rows per block */
    fl_ce_result *slot; /* one partial result per stripe of blocks (fl_stripes.h) */
    int stream;        /* write a contiguous float32 gradient with non-temporal stores */
    int lanes;         /* small C: rows in the SIMD lanes (fl_ce_tile_f32) */
    fl_atomic_int failed; /* set by a task that could not allocate its scratch (several may, at once) */
} fl_ce_ctx;

/* A task's sums: the rows' loss parts and denominators waiting in buffers, and the valid rows.
 * d2 = sum s_i takes values only with sample weights (else it is n_valid); d1 = sum s_i w[y_i]
 * only with class weights (else it is d2). */
typedef struct {
    fl_rsum_buf ce, z, d1, d2;
    int64_t n_valid;
} fl_ce_acc;

/* A valid row of sample weight s (1 when there are none) and s * w[y] (sw) into the
 * denominators. */
static inline void fl_ce_acc_row(const fl_ce_args *a, fl_ce_acc *acc, double s, double sw)
{
    acc->n_valid++;
    if (a->weight) fl_rsum_buf_add(&acc->d1, sw);
    if (a->sample_weight.data) fl_rsum_buf_add(&acc->d2, s);
}

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

#endif
