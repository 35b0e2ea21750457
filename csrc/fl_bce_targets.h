/* fl_bce_targets.h: the binary losses' targets (fl_bce.c), read a piece at a time in their own
 * dtype (float32, float64, float16, bfloat16, bool, int8 to int64) into the compute type, and
 * validated on the way: floats must lie in [0, 1] (NaN fails), integers and bools be 0 or 1.
 * Contiguous float32 targets are used in place (the float32 lanes check them as they read
 * them). Compiled once per ISA, into fl_bce.c.
 */
#ifndef FL_BCE_TARGETS_H
#define FL_BCE_TARGETS_H

#include <stdint.h>
#include "fastlogits.h"
#include "fl_rowio.h"

static inline int fl_in01(double v) { return (v >= 0.0) & (v <= 1.0); } /* nan: 0 */

/* buf[k] = target k as CT; ok &= its validity (the loop is the same for every dtype) */
#define FL_READ_TARGETS(T, VAL, VALID)                                              \
    do {                                                                            \
        const T *s_ = (const T *)p;                                                 \
        for (int64_t k = 0; k < n; k++) {                                           \
            T v = s_[k * sc];                                                       \
            ok &= (VALID);                                                          \
            buf[k] = (VAL);                                                         \
        }                                                                           \
    } while (0)

#define FL_TARGET_SWITCH(CT)                                                                  \
    switch (a->dtype) {                                                                       \
    case FL_F32: FL_READ_TARGETS(float, (CT)v, fl_in01(v)); break;                          \
    case FL_F64: FL_READ_TARGETS(double, (CT)v, fl_in01(v)); break;                         \
    case FL_F16: FL_READ_TARGETS(uint16_t, (CT)fl_f16_to_f32(v), fl_in01(fl_f16_to_f32(v))); break; \
    case FL_BF16: FL_READ_TARGETS(uint16_t, (CT)fl_bf16_to_f32(v), fl_in01(fl_bf16_to_f32(v))); break; \
    case FL_I64: FL_READ_TARGETS(int64_t, (CT)v, (v == 0) | (v == 1)); break;               \
    case FL_I32: FL_READ_TARGETS(int32_t, (CT)v, (v == 0) | (v == 1)); break;               \
    case FL_I16: FL_READ_TARGETS(int16_t, (CT)v, (v == 0) | (v == 1)); break;               \
    case FL_I8: FL_READ_TARGETS(int8_t, (CT)v, (v == 0) | (v == 1)); break;                 \
    case FL_BOOL: FL_READ_TARGETS(uint8_t, (CT)v, v <= 1); break;                           \
    default: ok = 0; break;                                                                   \
    }

/* Are the targets of a used in place by fl_lanes_t (contiguous float32)? */
static inline int fl_targets_in_place_f32(const fl_arr *a) { return a->dtype == FL_F32 && a->sc == 1; }

/* The n targets at p as contiguous float: in place for contiguous float32 (which the lanes
 * check as they read them, unless check is set here), else converted into buf. Returns 0 when
 * one of those it checked is not a valid binary target. */
static int fl_targets_f32(const fl_arr *a, const char *p, int64_t n, float *buf, const float **out, int check)
{
    int64_t sc = a->sc;
    int ok = 1;
    if (fl_targets_in_place_f32(a)) {
        const float *s = (const float *)p;
        if (check)
            for (int64_t k = 0; k < n; k++) ok &= (s[k] >= 0.0f) & (s[k] <= 1.0f);
        *out = s;
        return ok;
    }
    FL_TARGET_SWITCH(float)
    *out = buf;
    return ok;
}

static int fl_targets_f64(const fl_arr *a, const char *p, int64_t n, double *buf, const double **out)
{
    int64_t sc = a->sc;
    int ok = 1;
    if (a->dtype == FL_F64 && sc == 1) {
        const double *s = (const double *)p;
        for (int64_t k = 0; k < n; k++) ok &= fl_in01(s[k]);
        *out = s;
        return ok;
    }
    FL_TARGET_SWITCH(double)
    *out = buf;
    return ok;
}

#endif
