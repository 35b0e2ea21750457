/* fl_stream.c: STREAM-like read and copy kernels. The benchmarks measure the machine's memory
 * bandwidth with them in the same run as the kernels, so "% of bandwidth" is honest on
 * whatever machine runs it. Compiled once per ISA like the kernels. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "fl_kernels.h"
#include "fl_pool.h"
#include "fl_simd.h"

#define FL_STREAM_BLOCK (1 << 16) /* elements per block */

typedef struct {
    const float *src;
    float *dst;
    int64_t n;
    double *partial; /* read: one sum per block, combined in block order */
} fl_stream_ctx;

static void fl_read_task(void *vctx, int64_t b0, int64_t b1)
{
    fl_stream_ctx *ctx = (fl_stream_ctx *)vctx;
    for (int64_t b = b0; b < b1; b++) {
        int64_t k = b * FL_STREAM_BLOCK, end = k + FL_STREAM_BLOCK < ctx->n ? k + FL_STREAM_BLOCK : ctx->n;
        /* four accumulators hide the add latency, so the loads are the only limit */
        flv a0 = flv_set1(0.0f), a1 = a0, a2 = a0, a3 = a0;
        for (; k + 4 * FL_W <= end; k += 4 * FL_W) {
            a0 = flv_add(a0, flv_load(ctx->src + k));
            a1 = flv_add(a1, flv_load(ctx->src + k + FL_W));
            a2 = flv_add(a2, flv_load(ctx->src + k + 2 * FL_W));
            a3 = flv_add(a3, flv_load(ctx->src + k + 3 * FL_W));
        }
        double s = flv_hsum_d(flv_add(flv_add(a0, a1), flv_add(a2, a3)));
        for (; k < end; k++) s += ctx->src[k];
        ctx->partial[b] = s;
    }
}

static void fl_copy_task(void *vctx, int64_t b0, int64_t b1)
{
    fl_stream_ctx *ctx = (fl_stream_ctx *)vctx;
    int64_t k = b0 * FL_STREAM_BLOCK, end = b1 * FL_STREAM_BLOCK < ctx->n ? b1 * FL_STREAM_BLOCK : ctx->n;
    /* plain stores up to the first vector-aligned destination, then non-temporal ones */
    for (; k < end && ((uintptr_t)(ctx->dst + k) % (FL_W * sizeof(float))) != 0; k++) ctx->dst[k] = ctx->src[k];
    for (; k + FL_W <= end; k += FL_W) flv_stream(ctx->dst + k, flv_load(ctx->src + k));
    for (; k < end; k++) ctx->dst[k] = ctx->src[k];
    fl_stream_fence();
}

double FL_FN(stream_read)(const float *src, int64_t n)
{
    int64_t nb = (n + FL_STREAM_BLOCK - 1) / FL_STREAM_BLOCK;
    double *partial = (double *)malloc((size_t)(nb > 0 ? nb : 1) * sizeof(double));
    if (!partial) return NAN;
    fl_stream_ctx ctx = {src, NULL, n, partial};
    fl_parallel_for(nb, fl_read_task, &ctx);
    double s = 0.0;
    for (int64_t b = 0; b < nb; b++) s += partial[b];
    free(partial);
    return s;
}

void FL_FN(stream_copy)(float *dst, const float *src, int64_t n)
{
    fl_stream_ctx ctx = {src, dst, n, NULL};
    fl_parallel_for((n + FL_STREAM_BLOCK - 1) / FL_STREAM_BLOCK, fl_copy_task, &ctx);
}
