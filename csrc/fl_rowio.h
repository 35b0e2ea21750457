/* fl_rowio.h: reading and writing one row of an operand in a compute type.
 *
 * Kernels compute on contiguous rows of float (float32, half-precision and bfloat16 operands)
 * or double (when an operand is float64). A row of float32 or float64 with unit class stride
 * is used in place, and so is a float16 or bfloat16 one where a kernel reads it through
 * fl_xrow (widened in registers); any other row is gathered into (or scattered from) a
 * per-thread scratch row, converting as it goes. So every dtype and every layout reaches the
 * same arithmetic, and a row is read from memory once.
 */
#ifndef FL_ROWIO_H
#define FL_ROWIO_H

#include <stddef.h>
#include <stdint.h>
#include "fastlogits.h"
#include "fl_half.h"
#include "fl_simd.h"

static inline size_t fl_esize(int32_t dtype)
{
    switch (dtype) {
    case FL_F64: case FL_I64: return 8;
    case FL_F16: case FL_BF16: case FL_I16: return 2;
    case FL_BOOL: case FL_I8: return 1;
    default: return 4;
    }
}

/* element offset of row r = (i0, i1) of a */
static inline char *fl_row_ptr(const fl_arr *a, int64_t i0, int64_t i1)
{
    return (char *)a->data + (i0 * a->s0 + i1 * a->s1) * (int64_t)fl_esize(a->dtype);
}

/* Does the row of a hold contiguous floats of the compute type (so it can be used in place)? */
static inline int fl_row_is_f32(const fl_arr *a) { return a->dtype == FL_F32 && a->sc == 1; }

/* Are the rows of a contiguous elements of a float type the float32 kernels read and write in
 * place (float32, float16, bfloat16; see fl_xrow)? */
static inline int fl_row_is_x(const fl_arr *a)
{
    return a->sc == 1 && (a->dtype == FL_F32 || a->dtype == FL_F16 || a->dtype == FL_BF16);
}

/* Should an output be written with non-temporal stores? A large output would not stay in cache
 * anyway, and streaming stores spare the read of each output line, on the CPUs where they pay
 * (fl_stream_policy, by vendor: a bound on the output's bytes; for rows, bounds on a row's
 * bytes and the vector store's, and whether rows that the kernel's plain path computes in the
 * output itself stream). Not a fresh output (fl_arr.fresh): the first store to each of its
 * pages faults and the system zeroes the page, which leaves its lines in cache, where a
 * non-temporal store must evict each one (softmax 4096 x 32000 into a fresh output: 170 ms
 * streamed, 144 ms plain; into a reused one: 73 ms streamed, 98 ms plain, Intel;
 * docs/performance.md). Rows of fl_row_is_x only. */
static inline int fl_stream_test(const fl_arr *y, int64_t nrows, int64_t c, int rows, int in_place)
{
    int64_t min[4], esz = (int64_t)fl_esize(y->dtype), row = c * esz;
    fl_stream_policy(min);
    if (y->fresh || !fl_row_is_x(y) || min[0] < 0 || nrows * row < min[0]) return 0;
    return !rows || (row >= min[1] && FL_W * esz >= min[2] && (!in_place || min[3]));
}
/* an output of nrows rows of c elements; in_place: the kernel's plain path computes each row
 * in the output row itself (its exponentials stored there, then scaled or shifted in place) */
static inline int fl_stream_ok(const fl_arr *y, int64_t nrows, int64_t c, int in_place)
{
    return fl_stream_test(y, nrows, c, 1, in_place);
}
/* an elementwise kernel's output as one flat run of n elements */
static inline int fl_stream_flat_ok(const fl_arr *y, int64_t n) { return fl_stream_test(y, 1, n, 0, 0); }

static inline int fl_row_is_f64(const fl_arr *a) { return a->dtype == FL_F64 && a->sc == 1; }

/* A row broadcast along its classes (stride 0, e.g. a BCE weight of shape (N, 1)) is read as
 * its one value and then filled by a loop that vectorises: the strided loops took 0.3 ns an
 * element there (weight (64, 1) cost bce_with_logits 64 x 32000 half again its time). */
static inline void fl_gather_f32(const fl_arr *a, const char *row, int64_t n, float *dst)
{
    int64_t sc = a->sc, c = sc == 0 && n > 0 ? 1 : n;
    if (a->dtype == FL_F32) {
        const float *p = (const float *)row;
        for (int64_t k = 0; k < c; k++) dst[k] = p[k * sc];
    } else if (a->dtype == FL_F16 || a->dtype == FL_BF16) {
        const uint16_t *p = (const uint16_t *)row;
        if (sc == 1) {
            int64_t k = 0;
            if (a->dtype == FL_F16)
                for (; k + FL_W <= c; k += FL_W) flv_store(dst + k, flv_load_f16(p + k));
            else
                for (; k + FL_W <= c; k += FL_W) flv_store(dst + k, flv_load_bf16(p + k));
            for (; k < c; k++)
                dst[k] = a->dtype == FL_F16 ? fl_f16_to_f32(p[k]) : fl_bf16_to_f32(p[k]);
        } else if (a->dtype == FL_F16) {
            for (int64_t k = 0; k < c; k++) dst[k] = fl_f16_to_f32(p[k * sc]);
        } else {
            for (int64_t k = 0; k < c; k++) dst[k] = fl_bf16_to_f32(p[k * sc]);
        }
    }
    if (sc == 0 && n > 0) {
        float v = dst[0];
        for (int64_t k = 1; k < n; k++) dst[k] = v;
    }
}

/* The row of a as contiguous float32: in place when possible, else gathered into buf. */
static inline const float *fl_row_in_f32(const fl_arr *a, const char *row, int64_t c, float *buf)
{
    if (fl_row_is_f32(a)) return (const float *)row;
    fl_gather_f32(a, row, c, buf);
    return buf;
}

/* ---------- rows read as they are: float32, float16, bfloat16 ----------
 *
 * A row of logits with contiguous classes is read in place in its own dtype dt (FL_F32,
 * FL_F16 or FL_BF16), each vector widened to float32 in registers as it is loaded: a
 * half-precision row is never copied to a float32 row first, so it moves half the bytes. The
 * row functions taking (const void *x, int32_t dt) have always-inlined cores that callers
 * instantiate with a constant dt (fl_x_dispatch), so each dtype gets its own loops. */
typedef struct { const void *p; int32_t dt; } fl_xrow;

/* the row of a to compute on: in place when its classes are contiguous, else gathered into
 * buf as float32 */
static inline fl_xrow fl_row_in_x(const fl_arr *a, const char *row, int64_t c, float *buf)
{
    fl_xrow r = {row, a->dtype};
    if (fl_row_is_x(a)) return r;
    r.p = fl_row_in_f32(a, row, c, buf);
    r.dt = FL_F32;
    return r;
}

static inline size_t fl_xsize(int32_t dt) { return dt == FL_F32 ? 4 : 2; }

/* element k of x, widened */
FL_ALWAYS_INLINE float fl_xget(const void *x, int64_t k, int32_t dt)
{
    if (dt == FL_F16) return fl_f16_to_f32(((const uint16_t *)x)[k]);
    if (dt == FL_BF16) return fl_bf16_to_f32(((const uint16_t *)x)[k]);
    return ((const float *)x)[k];
}

/* FL_W elements of x from k, widened for arithmetic (a signalling NaN may come out quiet) */
FL_ALWAYS_INLINE flv fl_xload(const void *x, int64_t k, int32_t dt)
{
    if (dt == FL_F16) return flv_load_f16_arith((const uint16_t *)x + k);
    if (dt == FL_BF16) return flv_load_bf16((const uint16_t *)x + k);
    return flv_load((const float *)x + k);
}

/* the n < FL_W elements of x from k, the other lanes fill */
FL_ALWAYS_INLINE flv fl_xload_part(const void *x, int64_t k, int64_t n, float fill, int32_t dt)
{
    if (dt == FL_F32) return flv_load_part((const float *)x + k, n, fill);
    float v[FL_W];
    for (int64_t j = 0; j < FL_W; j++) v[j] = j < n ? fl_xget(x, k + j, dt) : fill;
    return flv_load(v);
}

/* store FL_W lanes (the first n when n < FL_W) at y + k, narrowed to dt */
FL_ALWAYS_INLINE void fl_xstore_part(void *y, int64_t k, flv v, int64_t n, int32_t dt)
{
    if (dt == FL_F32) {
        if (n >= FL_W) flv_store((float *)y + k, v);
        else flv_store_part((float *)y + k, v, n);
        return;
    }
    uint16_t *p = (uint16_t *)y + k;
    if (n >= FL_W) {
        if (dt == FL_F16) flv_store_f16(p, v);
        else flv_store_bf16(p, v);
        return;
    }
    float t[FL_W];
    flv_store(t, v);
    for (int64_t j = 0; j < n; j++) p[j] = dt == FL_F16 ? fl_f32_to_f16(t[j]) : fl_f32_to_bf16(t[j]);
}

/* y[k] = v narrowed to dt */
FL_ALWAYS_INLINE void fl_xput(void *y, int64_t k, float v, int32_t dt)
{
    if (dt == FL_F16) ((uint16_t *)y)[k] = fl_f32_to_f16(v);
    else if (dt == FL_BF16) ((uint16_t *)y)[k] = fl_f32_to_bf16(v);
    else ((float *)y)[k] = v;
}

/* FL_W lanes at y + k narrowed to dt, with a non-temporal store (y + k aligned to FL_W
 * elements of dt) */
FL_ALWAYS_INLINE void fl_xstream(void *y, int64_t k, flv v, int32_t dt)
{
    if (dt == FL_F16) flv_stream_f16((uint16_t *)y + k, v);
    else if (dt == FL_BF16) flv_stream_bf16((uint16_t *)y + k, v);
    else flv_stream((float *)y + k, v);
}

/* fn(args..., dt) with dt a constant: the instance of an always-inlined row core for the
 * dtype of a row (fl_xrow.dt) */
#define fl_x_dispatch(dt, fn, ...)                                                                         \
    ((dt) == FL_F16 ? fn(__VA_ARGS__, FL_F16) : (dt) == FL_BF16 ? fn(__VA_ARGS__, FL_BF16) : fn(__VA_ARGS__, FL_F32))

static inline const double *fl_row_in_f64(const fl_arr *a, const char *row, int64_t n, double *buf)
{
    int64_t sc = a->sc, c = sc == 0 && n > 0 ? 1 : n;  /* a broadcast row: one value, filled (fl_gather_f32) */
    if (fl_row_is_f64(a)) return (const double *)row;
    switch (a->dtype) {
    case FL_F64: { const double *p = (const double *)row; for (int64_t k = 0; k < c; k++) buf[k] = p[k * sc]; break; }
    case FL_F32: { const float *p = (const float *)row; for (int64_t k = 0; k < c; k++) buf[k] = (double)p[k * sc]; break; }
    case FL_F16: { const uint16_t *p = (const uint16_t *)row; for (int64_t k = 0; k < c; k++) buf[k] = (double)fl_f16_to_f32(p[k * sc]); break; }
    case FL_BF16: { const uint16_t *p = (const uint16_t *)row; for (int64_t k = 0; k < c; k++) buf[k] = (double)fl_bf16_to_f32(p[k * sc]); break; }
    default: break;
    }
    if (sc == 0 && n > 0) {
        double v = buf[0];
        for (int64_t k = 1; k < n; k++) buf[k] = v;
    }
    return buf;
}

/* Where to compute an output row of float32: the row itself when it is contiguous float32,
 * else buf (then fl_row_out_f32 converts and scatters it). */
static inline float *fl_row_dst_f32(const fl_arr *a, char *row, float *buf)
{
    return fl_row_is_f32(a) ? (float *)row : buf;
}

static inline double *fl_row_dst_f64(const fl_arr *a, char *row, double *buf)
{
    return fl_row_is_f64(a) ? (double *)row : buf;
}

static inline void fl_row_out_f32(const fl_arr *a, char *row, int64_t c, const float *src)
{
    int64_t sc = a->sc;
    if ((const char *)src == row) return;
    switch (a->dtype) {
    case FL_F32: { float *p = (float *)row; for (int64_t k = 0; k < c; k++) p[k * sc] = src[k]; break; }
    case FL_F16: case FL_BF16: {
        uint16_t *p = (uint16_t *)row;
        int64_t k = 0;
        if (sc == 1) {
            if (a->dtype == FL_F16)
                for (; k + FL_W <= c; k += FL_W) flv_store_f16(p + k, flv_load(src + k));
            else
                for (; k + FL_W <= c; k += FL_W) flv_store_bf16(p + k, flv_load(src + k));
        }
        for (; k < c; k++)
            p[k * sc] = a->dtype == FL_F16 ? fl_f32_to_f16(src[k]) : fl_f32_to_bf16(src[k]);
        break;
    }
    default: break;
    }
}

static inline void fl_row_out_f64(const fl_arr *a, char *row, int64_t c, const double *src)
{
    int64_t sc = a->sc;
    if ((const char *)src == row) return;
    switch (a->dtype) {
    case FL_F64: { double *p = (double *)row; for (int64_t k = 0; k < c; k++) p[k * sc] = src[k]; break; }
    case FL_F32: { float *p = (float *)row; for (int64_t k = 0; k < c; k++) p[k * sc] = (float)src[k]; break; }
    case FL_F16: { uint16_t *p = (uint16_t *)row; for (int64_t k = 0; k < c; k++) p[k * sc] = fl_f64_to_f16(src[k]); break; }
    case FL_BF16: { uint16_t *p = (uint16_t *)row; for (int64_t k = 0; k < c; k++) p[k * sc] = fl_f64_to_bf16(src[k]); break; }
    default: break;
    }
}

/* Write one scalar per row (reductions) in the output's dtype. */
static inline void fl_put_scalar(const fl_arr *a, int64_t i0, int64_t i1, double v)
{
    char *p = fl_row_ptr(a, i0, i1);
    switch (a->dtype) {
    case FL_F64: *(double *)p = v; break;
    case FL_F32: *(float *)p = (float)v; break;
    case FL_F16: *(uint16_t *)p = fl_f64_to_f16(v); break;
    case FL_BF16: *(uint16_t *)p = fl_f64_to_bf16(v); break;
    default: break;
    }
}

/* Rows are handed to threads in fixed blocks of about FL_BLOCK_ELEMS elements, the unit of
 * parallel work. It fixes no result: rows are computed independently, and what the reducing
 * kernels sum goes into order-independent sums (fl_rsum.h). */
#define FL_BLOCK_ELEMS 16384
static inline int64_t fl_rows_per_block(int64_t c)
{
    int64_t r = FL_BLOCK_ELEMS / (c > 0 ? c : 1);
    return r > 0 ? r : 1;
}

#endif
