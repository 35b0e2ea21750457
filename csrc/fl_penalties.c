/* fl_penalties.c: apply_penalties (API section 8, vLLM/OpenAI semantics), in place on a
 * row grid of logits. Compiled once per ISA; every symbol is FL_FN(name).
 *
 * A row's history of L token ids is counted in a per-thread array of V counters (zeroed once
 * per task, and reset after each row by walking the history again), so no (rows, V) count
 * array is ever made and a row costs O(L) whatever V is. Each distinct token v of the history,
 * with count n_v, gets x_v / r (x_v > 0) or x_v * r (x_v <= 0), then x_v - (f * n_v + p),
 * computed in float64 and rounded once to the logits' dtype. Negative ids are padding. Every id
 * is checked before any logit is touched: one past the vocabulary makes the call return its
 * position with nothing modified.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fastlogits.h"
#include "fl_kernels.h"
#include "fl_pool.h"
#include "fl_rowio.h"
#include "fl_scalar_math.h"

typedef struct {
    const fl_pen_args *a;
    fl_grid g;
    int64_t *bad;    /* per block: the first bad position (row * L + j) of the history, or -1 */
    int check;       /* this run checks ids (else it applies the penalties) */
    int failed;
} fl_pen_ctx;

static inline int64_t fl_pen_id(const fl_arr *h, const char *row, int64_t j)
{
    const char *p = row + j * h->sc * (int64_t)fl_esize(h->dtype);
    return h->dtype == FL_I32 ? (int64_t)*(const int32_t *)(const void *)p : *(const int64_t *)(const void *)p;
}

static inline double fl_pen_get(const fl_arr *x, char *row, int64_t v)
{
    char *p = row + v * x->sc * (int64_t)fl_esize(x->dtype);
    switch (x->dtype) {
    case FL_F64: return *(double *)(void *)p;
    case FL_F16: return (double)fl_f16_to_f32(*(uint16_t *)(void *)p);
    case FL_BF16: return (double)fl_bf16_to_f32(*(uint16_t *)(void *)p);
    default: return (double)*(float *)(void *)p;
    }
}

/* val rounded to float32 to odd: truncated toward zero, the last bit set when inexact. A
 * further rounding to nearest to half precision (11 or 8 bits, fewer than 24 - 2) is then the
 * correct rounding of val itself: one rounding, not two. */
static inline float fl_pen_round_odd(double val)
{
    float f = (float)val;
    if ((double)f == val || val != val) return f;
    uint32_t b = fl_f2u(f);
    if (fabs((double)f) > fabs(val)) b -= 1; /* rounded away from zero: step back */
    return fl_u2f(b | 1u);
}

static inline void fl_pen_set(const fl_arr *x, char *row, int64_t v, double val)
{
    char *p = row + v * x->sc * (int64_t)fl_esize(x->dtype);
    switch (x->dtype) {
    case FL_F64: *(double *)(void *)p = val; break;
    case FL_F16: *(uint16_t *)(void *)p = fl_f32_to_f16(fl_pen_round_odd(val)); break;
    case FL_BF16: *(uint16_t *)(void *)p = fl_f32_to_bf16(fl_pen_round_odd(val)); break;
    default: *(float *)(void *)p = (float)val; break;
    }
}

/* The first id of row (i0, i1) at or past V, as a position in the row, or -1 */
static int64_t fl_pen_check_row(const fl_pen_args *a, int64_t v, int64_t i0, int64_t i1)
{
    const char *h = fl_row_ptr(&a->prev, i0, i1);
    for (int64_t j = 0; j < a->len; j++)
        if (fl_pen_id(&a->prev, h, j) >= v) return j;
    return -1;
}

static void fl_pen_apply_row(const fl_pen_args *a, int64_t c, int64_t i0, int64_t i1, uint32_t *cnt)
{
    double r = *(const double *)fl_row_ptr(&a->repetition, i0, i1);
    double pres = *(const double *)fl_row_ptr(&a->presence, i0, i1);
    double freq = *(const double *)fl_row_ptr(&a->frequency, i0, i1);
    if (r == 1.0 && pres == 0.0 && freq == 0.0) return;
    const char *h = fl_row_ptr(&a->prev, i0, i1);
    char *x = fl_row_ptr(&a->x, i0, i1);
    for (int64_t j = 0; j < a->len; j++) {
        int64_t v = fl_pen_id(&a->prev, h, j);
        if (v >= 0 && v < c) cnt[v]++; /* checked before; a history changed since is not trusted */
    }
    /* each distinct id once, at its first occurrence; its counter goes back to 0 */
    for (int64_t j = 0; j < a->len; j++) {
        int64_t v = fl_pen_id(&a->prev, h, j);
        if (v < 0 || v >= c || !cnt[v]) continue;
        double val = fl_pen_get(&a->x, x, v);
        val = val > 0.0 ? val / r : val * r;
        fl_pen_set(&a->x, x, v, val - (freq * (double)cnt[v] + pres));
        cnt[v] = 0;
    }
}

static void fl_pen_task(void *vctx, int64_t b0, int64_t b1)
{
    fl_pen_ctx *ctx = (fl_pen_ctx *)vctx;
    const fl_pen_args *a = ctx->a;
    int64_t rpb = fl_rows_per_block(a->len > ctx->g.c ? a->len : ctx->g.c), nrows = ctx->g.n0 * ctx->g.n1;
    uint32_t *cnt = NULL;
    if (!ctx->check) {
        cnt = (uint32_t *)calloc((size_t)(ctx->g.c > 0 ? ctx->g.c : 1), sizeof(uint32_t));
        if (!cnt) { ctx->failed = 1; return; }
    }
    for (int64_t b = b0; b < b1; b++) {
        int64_t r0 = b * rpb, r1 = r0 + rpb < nrows ? r0 + rpb : nrows;
        if (ctx->check) ctx->bad[b] = -1;
        for (int64_t r = r0; r < r1; r++) {
            int64_t i0 = r / ctx->g.n1, i1 = r % ctx->g.n1;
            if (!ctx->check) {
                fl_pen_apply_row(a, ctx->g.c, i0, i1, cnt);
                continue;
            }
            int64_t j = fl_pen_check_row(a, ctx->g.c, i0, i1);
            if (j >= 0) { ctx->bad[b] = r * a->len + j; break; }
        }
    }
    free(cnt);
}

int FL_FN(apply_penalties)(const fl_pen_args *a, fl_grid g, int64_t *first_bad)
{
    *first_bad = -1;
    int64_t nrows = g.n0 * g.n1;
    if (nrows <= 0 || a->len <= 0) return FL_OK;
    int64_t rpb = fl_rows_per_block(a->len > g.c ? a->len : g.c), nb = (nrows + rpb - 1) / rpb;
    fl_pen_ctx ctx = {a, g, (int64_t *)malloc((size_t)nb * sizeof(int64_t)), 1, 0};
    if (!ctx.bad) return FL_ENOMEM;
    fl_parallel_for(nb, fl_pen_task, &ctx);
    for (int64_t b = 0; b < nb; b++)
        if (ctx.bad[b] >= 0) { *first_bad = ctx.bad[b]; break; }
    if (*first_bad < 0) {
        ctx.check = 0;
        fl_parallel_for(nb, fl_pen_task, &ctx);
    }
    free(ctx.bad);
    return ctx.failed ? FL_ENOMEM : FL_OK;
}
