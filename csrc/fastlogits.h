/* fastlogits.h: the C interface of the kernels. Plain C11: pointers, sizes and strides in.
 *
 * Every kernel sees its operands as a grid of rows: row (i0, i1) of an operand starts at
 * element data + i0*s0 + i1*s1 and its k-th class at + k*sc (strides in elements, any sign).
 * Two grid levels are enough for any axis of a contiguous array (the dimensions before and
 * after the class axis); the Python layer merges dimensions into that form, or copies the rare
 * layout that cannot be merged. All operands of one call share the grid (n0, n1).
 * Sizes and indices are 64-bit throughout.
 */
#ifndef FASTLOGITS_H
#define FASTLOGITS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { FL_F32 = 0, FL_F64 = 1, FL_F16 = 2, FL_BF16 = 3, FL_I64 = 4, FL_BOOL = 5 } fl_dtype;

typedef struct {
    void *data;       /* element (0, 0, class 0) */
    int32_t dtype;    /* fl_dtype */
    int64_t s0, s1;   /* row-grid strides, elements */
    int64_t sc;       /* class stride, elements */
} fl_arr;

typedef struct {
    int64_t n0, n1;   /* row grid */
    int64_t c;        /* classes per row */
} fl_grid;

/* status codes */
#define FL_OK 0
#define FL_ENOMEM 1

/* postprocessing, in fl_post.c */
enum { FL_SOFTMAX = 0, FL_LOG_SOFTMAX = 1 };
enum { FL_LOGSUMEXP = 0, FL_ENTROPY = 1 };
enum { FL_SIGMOID = 0, FL_LOG_SIGMOID = 1 };

int fl_softmax(const fl_arr *x, const fl_arr *y, fl_grid g, int mode);
/* per-row reduction: out is indexed by the row grid only (its sc is unused) */
int fl_row_reduce(const fl_arr *x, const fl_arr *out, fl_grid g, int what);
int fl_elementwise(const fl_arr *x, const fl_arr *y, fl_grid g, int op);
/* out: int64 row grid */
int fl_argmax(const fl_arr *x, const fl_arr *out, fl_grid g);
/* values: x's dtype or wider, k classes per row; indices: int64 */
int fl_topk(const fl_arr *x, const fl_arr *values, const fl_arr *indices, fl_grid g, int64_t k);
/* out: bool, x > threshold_logit (double) */
int fl_threshold(const fl_arr *x, const fl_arr *out, fl_grid g, double threshold_logit);

/* offline scoring, in fl_score.c */
enum { FL_SCORE_SOFTMAX = 0, FL_SCORE_SIGMOID = 1 };
/* the running sums of fl_score, in this order, followed by three sums per ECE bin b (see
 * fl_score.c): weight*(correct - conf) at NSUMS + b, weight at NSUMS + bins + b, weight*conf at
 * NSUMS + 2*bins + b */
enum {
    FL_SCORE_W = 0,        /* total weight (sigmoid mode: over elements) */
    FL_SCORE_NLL = 1,
    FL_SCORE_CORRECT = 2,
    FL_SCORE_HIT = 3,      /* target in the top k (softmax mode) */
    FL_SCORE_BRIER = 4,
    FL_SCORE_ENT = 5,
    FL_SCORE_GAP = 6,      /* E_p[z] - z_y (softmax) or (p - y) z (sigmoid), z = x / T */
    FL_SCORE_NSUMS = 7
};
typedef struct {
    int32_t mode;          /* FL_SCORE_SOFTMAX or FL_SCORE_SIGMOID */
    int32_t want_rank;     /* compute the rank of the target (accuracy, top-k, ECE), softmax mode */
    int64_t k;             /* top-k */
    int64_t bins;          /* ECE bins, >= 1 */
    double temperature;    /* > 0 */
    int64_t period;        /* fixed blocks: rows come in periods of this many rows... */
    int64_t block_rows;    /* ...each split into blocks of this many (<= period) */
} fl_score_opts;
/* Score the rows of the grid. target: int64 per row (softmax) or bool per element (sigmoid,
 * same class stride semantics as x); weight: float64 per row, or NULL for weights of 1.
 * acc holds 2*(FL_SCORE_NSUMS + 3*bins) doubles, (sum, compensation) pairs, updated in place
 * in block order (the value of a sum is sum + compensation). */
int fl_score(const fl_arr *x, const fl_arr *target, const fl_arr *weight, fl_grid g,
             const fl_score_opts *o, double *acc);

/* runtime dispatch, in fl_dispatch.c */
const char *fl_isa_name(void);           /* the path in use */
int fl_isa_select(const char *name);     /* 0: selected; 1: unknown name; 2: not supported here */
const char *fl_isa_best(void);           /* the best path this CPU supports */

#ifdef __cplusplus
}
#endif
#endif
