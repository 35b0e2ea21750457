/* fl_sigmoid.c: sigmoid and log_sigmoid, elementwise. Compiled once per ISA; every exported
 * symbol is FL_FN(name).
 *
 * Rows of contiguous elements are computed in place in FL_W float32 lanes (float16/bfloat16
 * widened as loaded and narrowed as stored) or in float64; a grid that is one contiguous run is
 * cut into blocks of FL_BLOCK_ELEMS elements whatever its row length, so short rows pay no
 * per-row overhead and a 1-D input is shared by the threads. Such a run into a float32 output
 * the caller reuses (fl_stream_flat_ok: not fresh, 8 MB or more by default) is written with
 * non-temporal stores, which spare the read of each output line (4096 x 32000 out=, one thread: AVX-512
 * 92 -> 76-82 ms, AVX2 80 -> 62-64). Half-precision outputs are not: on AVX2 their 16-byte
 * non-temporal stores made sigmoid float16 2x slower (107 -> 222 ms), and AVX-512 gained
 * nothing (docs/performance.md). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "fastlogits.h"
#include "fl_kernels.h"
#include "fl_postdrv.h"
#include "fl_sigmoid_math.h"

/* ---------------- sigmoid and log_sigmoid ---------------- */

/* the sigmoid or log-sigmoid of the nv vectors v (in place), whose -|x| are na: plain, no lane
 * of the group is below fl_sig_plain_lo() (fl_vsig_plain), and they take the plain forms and the
 * exponential without its subnormal test; otherwise the general exponential and the tiny forms
 * (the same bits in the lanes without a tiny t) */
FL_ALWAYS_INLINE void fl_vsig_group(flv *v, const flv *na, int nv, int plain, int logm)
{
    if (plain) {
        FL_UNROLL(4)
        for (int j = 0; j < nv; j++) {
            flv t = flv_exp_neg_normal(na[j]);
            v[j] = logm ? fl_vlog_sigmoid_t(v[j], t) : fl_vsigmoid_t(v[j], t);
        }
    } else {
        FL_UNROLL(4)
        for (int j = 0; j < nv; j++) {
            flv t = flv_exp_neg(na[j]);
            v[j] = logm ? fl_vlog_sigmoid_tiny_t(v[j], t) : fl_vsigmoid_tiny_t(v[j], t);
        }
    }
}

/* the FL_W lanes v at y + k: a non-temporal store when `stream` (y + k aligned), else plain */
FL_ALWAYS_INLINE void fl_xstore_full(void *y, int64_t k, flv v, int stream, int32_t dt)
{
    if (stream) fl_xstream(y, k, v, dt);
    else fl_xstore_part(y, k, v, FL_W, dt);
}

/* y = sigmoid(x) or log_sigmoid(x) over n contiguous elements, x and y both of dtype dt. The
 * tiny-lane test is taken once for four vectors (their -|x|'s min), not once a vector. With
 * `stream` (a constant at each call: y aligned to a vector) the full vectors are written with
 * non-temporal stores. */
FL_ALWAYS_INLINE void fl_elementwise_span_t(const void *x, void *y, int64_t n, int logm, int stream, int32_t dt)
{
    int64_t k = 0;
    flv lo = fl_sig_plain_lo();
    /* four independent vectors a step, side by side (see FL_UNROLL) */
    for (; k + 4 * FL_W <= n; k += 4 * FL_W) {
        flv v[4], na[4];
        FL_UNROLL(4)
        for (int j = 0; j < 4; j++) {
            v[j] = fl_xload(x, k + j * FL_W, dt);
            na[j] = fl_vmabs(v[j]);
        }
        flv nm = flv_min_ord(flv_min_ord(na[0], na[1]), flv_min_ord(na[2], na[3]));
        fl_vsig_group(v, na, 4, fl_vsig_plain(nm, lo), logm);
        FL_UNROLL(4)
        for (int j = 0; j < 4; j++) fl_xstore_full(y, k + j * FL_W, v[j], stream, dt);
    }
    for (; k + FL_W <= n; k += FL_W) {
        flv v = fl_xload(x, k, dt), na = fl_vmabs(v);
        fl_vsig_group(&v, &na, 1, fl_vsig_plain(na, lo), logm);
        fl_xstore_full(y, k, v, stream, dt);
    }
    if (k < n) {
        flv v = fl_xload_part(x, k, n - k, 0.0f, dt), na = fl_vmabs(v);
        fl_vsig_group(&v, &na, 1, fl_vsig_plain(na, lo), logm);
        fl_xstore_part(y, k, v, n - k, dt);
    }
}

static void fl_elementwise_span(const void *x, void *y, int64_t n, int logm, int32_t dt)
{
    fl_x_dispatch(dt, fl_elementwise_span_t, x, y, n, logm, 0);
}

/* The same into a float32 output written with non-temporal stores: the elements before the
 * first vector-aligned one in y with plain stores, the rest from there. */
static void fl_elementwise_span_stream(const float *x, float *y, int64_t n, int logm)
{
    int64_t head = (int64_t)(((uintptr_t)0 - (uintptr_t)y) % (FL_W * sizeof(float)) / sizeof(float));
    head = head < n ? head : n;
    fl_elementwise_span_t(x, y, head, logm, 0, FL_F32);
    fl_elementwise_span_t(x + head, y + head, n - head, logm, 1, FL_F32);
}

/* Are x and y rows of contiguous elements of one dtype the float32 kernels read in place? */
static int fl_rows_same_x(const fl_arr *x, const fl_arr *y)
{
    return x->dtype == y->dtype && fl_row_is_x(x) && fl_row_is_x(y);
}

/* the float64 twin (the compiler vectorises the loops) */
static void fl_elementwise_span_f64(const double *x, double *y, int64_t n, int logm)
{
    if (logm)
        for (int64_t k = 0; k < n; k++) y[k] = fl_log_sigmoid_d(x[k]);
    else
        for (int64_t k = 0; k < n; k++) y[k] = fl_sigmoid_d(x[k]);
}

static void fl_elementwise_row(fl_post_ctx *ctx, int64_t i0, int64_t i1, void *scratch)
{
    int64_t c = ctx->g.c;
    const char *xrow = fl_row_ptr(ctx->x, i0, i1);
    char *yrow = fl_row_ptr(ctx->y, i0, i1);
    int logm = ctx->op == FL_LOG_SIGMOID;
    if (!ctx->f64 && fl_rows_same_x(ctx->x, ctx->y)) {
        fl_elementwise_span(xrow, yrow, c, logm, ctx->x->dtype);
    } else if (!ctx->f64) {
        float *bx = (float *)scratch, *by = bx + c;
        const float *x = fl_row_in_f32(ctx->x, xrow, c, bx);
        float *y = fl_row_dst_f32(ctx->y, yrow, by);
        fl_elementwise_span(x, y, c, logm, FL_F32);
        fl_row_out_f32(ctx->y, yrow, c, y);
    } else {
        double *bx = (double *)scratch, *by = bx + c;
        const double *x = fl_row_in_f64(ctx->x, xrow, c, bx);
        double *y = fl_row_dst_f64(ctx->y, yrow, by);
        fl_elementwise_span_f64(x, y, c, logm);
        fl_row_out_f64(ctx->y, yrow, c, y);
    }
}

/* Is the whole grid of a one run of contiguous elements (rows back to back)? Then it is one
 * span, cut into blocks of FL_BLOCK_ELEMS whatever the row length: short rows do not pay a
 * call each, and one long row (a 1-D input) is shared by the threads. */
static int fl_grid_flat(const fl_arr *a, fl_grid g)
{
    return a->sc == 1 && (g.n1 == 1 || a->s1 == g.c) && (g.n0 == 1 || a->s0 == g.n1 * g.c);
}

static void fl_elementwise_flat(const fl_post_ctx *ctx, int64_t b0, int64_t b1)
{
    int64_t k0 = b0 * FL_BLOCK_ELEMS, k1 = b1 * FL_BLOCK_ELEMS < ctx->flat_n ? b1 * FL_BLOCK_ELEMS : ctx->flat_n;
    int logm = ctx->op == FL_LOG_SIGMOID;
    if (ctx->f64)
        fl_elementwise_span_f64((const double *)ctx->x->data + k0, (double *)ctx->y->data + k0, k1 - k0, logm);
    else if (ctx->stream)
        fl_elementwise_span_stream((const float *)ctx->x->data + k0, (float *)ctx->y->data + k0, k1 - k0, logm);
    else
        fl_elementwise_span((const char *)ctx->x->data + k0 * (int64_t)fl_xsize(ctx->x->dtype),
                            (char *)ctx->y->data + k0 * (int64_t)fl_xsize(ctx->x->dtype), k1 - k0, logm, ctx->x->dtype);
}

static void fl_elementwise_task(void *vctx, int64_t b0, int64_t b1)
{
    fl_post_ctx *ctx = (fl_post_ctx *)vctx;
    if (ctx->flat_n) fl_elementwise_flat(ctx, b0, b1);
    else fl_run_rows(ctx, b0, b1, fl_scratch2(ctx), fl_elementwise_row);
    if (ctx->stream) fl_stream_fence();
}

int FL_FN(elementwise)(const fl_arr *x, const fl_arr *y, fl_grid g, int op)
{
    fl_post_ctx ctx = {x, y, NULL, g, op, 0, 0.0, x->dtype == FL_F64 || y->dtype == FL_F64, 0, 0, 0};
    int64_t n = g.n0 * g.n1 * g.c;
    int same = ctx.f64 ? x->dtype == FL_F64 && y->dtype == FL_F64 : fl_rows_same_x(x, y);
    if (n > 0 && same && fl_grid_flat(x, g) && fl_grid_flat(y, g)) {
        ctx.flat_n = n;
        ctx.stream = !ctx.f64 && y->dtype == FL_F32 && fl_stream_flat_ok(y, n);
        fl_parallel_for((n + FL_BLOCK_ELEMS - 1) / FL_BLOCK_ELEMS, fl_elementwise_task, &ctx);
        return fl_atomic_load(&ctx.failed) ? FL_ENOMEM : FL_OK;
    }
    return fl_drive(&ctx, fl_elementwise_task);
}
