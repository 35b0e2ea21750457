/* fl_rowio.h: reading and writing one row of an operand in a compute type.
 *
 * Kernels compute on contiguous rows of float (float32, half-precision and bfloat16 operands)
 * or double (when an operand is float64). A row that is already float32 or float64 with unit
 * class stride is used in place; any other row is gathered into (or scattered from) a
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

/* Above this many bytes of float32 output, write it with non-temporal stores: it would not
 * stay in cache anyway, and streaming stores spare the read of each output line. */
#define FL_STREAM_BYTES ((int64_t)8 << 20)

/* Should an output of n0*n1 rows of c floats be streamed? (contiguous float32 rows only) */
static inline int fl_stream_ok(const fl_arr *y, int64_t nrows, int64_t c)
{
    return fl_row_is_f32(y) && nrows * c * (int64_t)sizeof(float) >= FL_STREAM_BYTES;
}
static inline int fl_row_is_f64(const fl_arr *a) { return a->dtype == FL_F64 && a->sc == 1; }

static inline void fl_gather_f32(const fl_arr *a, const char *row, int64_t c, float *dst)
{
    int64_t sc = a->sc;
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
}

/* The row of a as contiguous float32: in place when possible, else gathered into buf. */
static inline const float *fl_row_in_f32(const fl_arr *a, const char *row, int64_t c, float *buf)
{
    if (fl_row_is_f32(a)) return (const float *)row;
    fl_gather_f32(a, row, c, buf);
    return buf;
}

static inline const double *fl_row_in_f64(const fl_arr *a, const char *row, int64_t c, double *buf)
{
    int64_t sc = a->sc;
    if (fl_row_is_f64(a)) return (const double *)row;
    switch (a->dtype) {
    case FL_F64: { const double *p = (const double *)row; for (int64_t k = 0; k < c; k++) buf[k] = p[k * sc]; break; }
    case FL_F32: { const float *p = (const float *)row; for (int64_t k = 0; k < c; k++) buf[k] = (double)p[k * sc]; break; }
    case FL_F16: { const uint16_t *p = (const uint16_t *)row; for (int64_t k = 0; k < c; k++) buf[k] = (double)fl_f16_to_f32(p[k * sc]); break; }
    case FL_BF16: { const uint16_t *p = (const uint16_t *)row; for (int64_t k = 0; k < c; k++) buf[k] = (double)fl_bf16_to_f32(p[k * sc]); break; }
    default: break;
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
    case FL_F16: { uint16_t *p = (uint16_t *)row; for (int64_t k = 0; k < c; k++) p[k * sc] = fl_f32_to_f16((float)src[k]); break; }
    case FL_BF16: { uint16_t *p = (uint16_t *)row; for (int64_t k = 0; k < c; k++) p[k * sc] = fl_f32_to_bf16((float)src[k]); break; }
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
    case FL_F16: *(uint16_t *)p = fl_f32_to_f16((float)v); break;
    case FL_BF16: *(uint16_t *)p = fl_f32_to_bf16((float)v); break;
    default: break;
    }
}

/* Rows are handed to threads in fixed blocks of about FL_BLOCK_ELEMS elements: the partition
 * depends only on the shape, never on the thread count, so per-block partial results combined
 * in block order are bitwise the same for any number of threads. */
#define FL_BLOCK_ELEMS 16384
static inline int64_t fl_rows_per_block(int64_t c)
{
    int64_t r = FL_BLOCK_ELEMS / (c > 0 ? c : 1);
    return r > 0 ? r : 1;
}

#endif
