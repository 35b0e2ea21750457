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

/* float codes are logits/outputs; the integer codes are read only as targets (values 0/1) */
typedef enum {
    FL_F32 = 0, FL_F64 = 1, FL_F16 = 2, FL_BF16 = 3, FL_I64 = 4, FL_BOOL = 5,
    FL_I32 = 6, FL_I16 = 7, FL_I8 = 8
} fl_dtype;

typedef struct {
    void *data;       /* element (0, 0, class 0) */
    int32_t dtype;    /* fl_dtype */
    int64_t s0, s1;   /* row-grid strides, elements */
    int64_t sc;       /* class stride, elements */
    int32_t fresh;    /* an output the caller has just allocated (new pages): not streamed */
} fl_arr;

typedef struct {
    int64_t n0, n1;   /* row grid */
    int64_t c;        /* classes per row */
} fl_grid;

/* An order-independent sum (csrc/fl_rsum.h): FL_RSUM_WORDS int64 words, exported as they are.
 * Every reduced sum of the kernels is one: the result is bitwise the same for any order of the
 * values, any split into partial states and any order of merging them. */
#define FL_RSUM_WORDS 8
typedef struct { int64_t w[FL_RSUM_WORDS]; } fl_rsum;

/* ISA-independent, in fl_rsum.c: make s[i] the state of an empty sum, merge other[i] into
 * into[i], finalize s[i] into out[i], deposit the n values x[0], x[stride], ... into *s;
 * fl_rsum_check_n returns the index of the first state no deposit could have made (states may
 * come from users), or -1 */
void fl_rsum_init_n(fl_rsum *s, int64_t n);
void fl_rsum_merge_n(fl_rsum *into, const fl_rsum *other, int64_t n);
void fl_rsum_value_n(const fl_rsum *s, double *out, int64_t n);
void fl_rsum_add_n(fl_rsum *s, const double *x, int64_t n, int64_t stride);
int64_t fl_rsum_check_n(const fl_rsum *s, int64_t n);

/* status codes */
#define FL_OK 0
#define FL_ENOMEM 1
#define FL_EBADTARGET 2  /* a binary target outside [0, 1] (floats), not 0/1 (integers), or nan */

/* postprocessing: fl_softmax.c, fl_reduce.c (logsumexp, entropy), fl_sigmoid.c, fl_select.c */
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

/* memory bandwidth probes, in fl_stream.c: the sum of src (a read pass), and a copy with
 * non-temporal stores */
double fl_stream_read(const float *src, int64_t n);
void fl_stream_copy(float *dst, const float *src, int64_t n);
/* the arithmetic-throughput probe of the bench's roofline, in fl_probe.c: reps passes of one
 * operation summed over 1024 floats in L1; returns the sum (time the call for the rate) */
enum { FL_PROBE_EXP = 0, FL_PROBE_DIV = 1, FL_PROBE_LOG1P = 2 };
double fl_math_probe(int what, int64_t reps);
/* binary losses, in fl_bce.c */
enum { FL_LOSS_BCE = 0, FL_LOSS_FOCAL = 1 };
typedef struct {
    int kind;            /* FL_LOSS_BCE or FL_LOSS_FOCAL */
    double alpha;        /* focal: alpha-balancing, alpha < 0 disables it */
    double gamma;        /* focal: focusing exponent, >= 0 */
    double grad_scale;   /* the gradient is multiplied by this (1/N for a mean) */
    int check_target;    /* validate targets on the fly (FL_EBADTARGET) */
    int per_element;     /* *total takes every element's loss, else each piece's (a row's) sum */
} fl_bce_opts;

/* Elementwise binary loss over the grid: x logits (float dtypes), y targets (float, bool or
 * integer dtypes, read in place), w and pw weight and pos_weight (BCE only; the compute dtype,
 * zero strides along broadcast dimensions; NULL means 1). loss and grad are optional outputs in
 * x's dtype. *total (optional) receives the sum of the per-element losses as an
 * order-independent sum: the losses of each row (of each piece of FL_BLOCK_ELEMS elements of
 * a longer row) are added in a fixed order and the row sums deposited, or every loss on its
 * own with o->per_element. */
int fl_bce(const fl_arr *x, const fl_arr *y, const fl_arr *w, const fl_arr *pw,
           const fl_arr *loss, const fl_arr *grad, fl_grid g, const fl_bce_opts *o, fl_rsum *total);
/* FL_EBADTARGET if any target of the grid is not a valid binary target, else FL_OK */
int fl_check_binary_target(const fl_arr *y, fl_grid g);
/* cross-entropy, in fl_ce.c.
 * Operands share x's row grid. An operand whose data is NULL is absent. */
typedef struct {
    fl_arr x;              /* logits */
    fl_arr target;         /* FL_I64/FL_I32 class indices (row grid only), or float probabilities (x's grid) */
    fl_arr sample_weight;  /* float64, row grid; absent: all 1 */
    fl_arr loss;           /* per-row losses (row grid, any float dtype); absent: not written */
    fl_arr grad;           /* gradient (x's grid, may be x itself); absent: not computed */
    const double *weight;  /* c contiguous class weights; NULL: all 1 */
    int64_t ignore_index;
    double label_smoothing;
    double z_loss;
    double grad_scale_ce;  /* factor of the cross-entropy part in the gradient (1/D1 under "mean") */
    double grad_scale_z;   /* factor of the z-loss part in the gradient (1/D2 under "mean") */
    int targets_only;      /* only validate class indices and sum d1, d2, n_valid (no logits read) */
} fl_ce_args;

typedef struct {
    fl_rsum ce;         /* sum over rows of s_i * cross-entropy_i */
    fl_rsum z;          /* sum over rows of s_i * z_loss * lse_i^2 */
    fl_rsum d1;         /* index targets: sum over non-ignored rows of s_i * w[y_i]; probabilities: of s_i */
    fl_rsum d2;         /* index targets: sum over non-ignored rows of s_i; probabilities: of s_i */
    int64_t n_valid;    /* number of non-ignored rows */
    int64_t first_bad;  /* first row (grid order) whose class index is out of range, or -1 */
} fl_ce_result;

int fl_cross_entropy(const fl_ce_args *args, fl_grid g, fl_ce_result *res);
/* offline scoring, in fl_score.c */
enum { FL_SCORE_SOFTMAX = 0, FL_SCORE_SIGMOID = 1 };
/* the sums of fl_score, in this order, followed by three sums per ECE bin b: the weight at
 * NSUMS + b, weight*correct at NSUMS + bins + b, weight*conf at NSUMS + 2*bins + b */
enum {
    FL_SCORE_W = 0,        /* total weight (sigmoid mode: over elements) */
    FL_SCORE_NLL = 1,
    FL_SCORE_CORRECT = 2,
    FL_SCORE_HIT = 3,      /* target in the top k (softmax mode) */
    FL_SCORE_BRIER = 4,
    FL_SCORE_ENT = 5,
    FL_SCORE_GAP = 6,      /* E_p[z] - z_y (softmax) or (p - y) z (sigmoid), z = x / T */
    FL_SCORE_TP = 7,       /* sigmoid mode: predicted positive (x > 0) and labelled 1 */
    FL_SCORE_PP = 8,       /* sigmoid mode: predicted positive */
    FL_SCORE_AP = 9,       /* sigmoid mode: labelled 1 */
    FL_SCORE_NSUMS = 10
};
/* per-class sums (fl_score_opts.per_class) */
enum { FL_PC_CONFUSION = 1, FL_PC_ECE = 2, FL_PC_AUC = 4 };
#define FL_SCORE_WANT_BINS ((int64_t)1 << FL_SCORE_NSUMS)
typedef struct {
    int32_t mode;          /* FL_SCORE_SOFTMAX or FL_SCORE_SIGMOID */
    int32_t want_rank;     /* compute the rank of the target (accuracy, top-k, ECE), softmax mode */
    int64_t k;             /* top-k */
    int64_t bins;          /* ECE bins, >= 1 */
    double temperature;    /* > 0 */
    int64_t sums;          /* the sums to fill: bit q for sum q (FL_SCORE_W...), FL_SCORE_WANT_BINS */
    int64_t ignore_index;  /* softmax mode: rows whose target equals it are skipped (sigmoid
                            * mode: the target's bytes other than 0 and 1 are) */
    int32_t per_class;     /* FL_PC_* bits; FL_PC_CONFUSION and FL_PC_ECE in softmax mode only */
    int64_t auc_bins;      /* with FL_PC_AUC: the B >= 2 thresholds j/(B-1) */
    int64_t *cm;           /* FL_PC_CONFUSION without weights: C*C counts (true, predicted), added to */
    fl_rsum *cmw;          /* FL_PC_CONFUSION with weights: C*C states, merged into */
    fl_rsum *pc;           /* per class c, states merged into at c*npc: with FL_PC_ECE per ECE bin b
                            * the weight (b), weight*[y == c] (bins + b), weight*p_c (2*bins + b);
                            * then with FL_PC_AUC per level l = 0..B (the number of thresholds
                            * <= p_c) the weight (l) and the weight of the positives (B + 1 + l) */
    int64_t *pcn;          /* per-class sums of unweighted rows, kept exact until fl_score_pc_fold
                            * moves them into pc: C*npc counts in pc's layout (the weight*p_c slots
                            * unused), added to */
    uint64_t *pcf;         /* ... and per class c and ECE bin b, at 2*(c*bins + b), the sum of p_c
                            * in units of 2^-52 (128 bits: low, high word), added to (FL_PC_ECE) */
} fl_score_opts;
/* Score the rows of the grid. target: int64 per row (softmax) or a byte per element (sigmoid,
 * same class stride semantics as x: 0 or 1, any other byte an ignored element); weight:
 * float64 per row, or NULL for weights of 1.
 * acc holds FL_SCORE_NSUMS + 3*bins order-independent sums (fl_rsum) into which the rows'
 * sums are merged; the sums not asked for in o->sums are left as they are. */
int fl_score(const fl_arr *x, const fl_arr *target, const fl_arr *weight, fl_grid g,
             const fl_score_opts *o, fl_rsum *acc);
/* The exact sums o->pcn and o->pcf of c classes deposited into the states o->pc (as exact
 * doubles), then zeroed: the per-class states then hold every row. fl_score adds a call's
 * unweighted rows to pcn and pcf, integers, rather than to the states, whose deposits cost
 * more than a small call's rows (C = 1000: about 0.2 ms a call). */
void fl_score_pc_fold(const fl_score_opts *o, int64_t c);

/* per-sequence scores of a language model, in fl_seq.c: row (i0, i1) of the grid is position
 * i1 of sequence i0 */
typedef struct {
    fl_arr x;              /* logits (float dtypes) */
    fl_arr tokens;         /* FL_I64/FL_I32 token per row (row grid only) */
    int64_t ignore_index;  /* rows whose token equals it are not scored (nor read) */
    double temperature;    /* > 0: the rows are log_softmax(x / temperature) */
} fl_seq_args;
/* For every sequence i0 < g.n0: merge the order-independent sum of its scored rows'
 * log-probabilities into logprob[i0], add their number to count[i0], and clear greedy[i0]
 * (0/1) unless every scored token is the argmax of its row (NaN largest, ties to the lowest
 * index). *first_bad: the first row (grid order) whose token is neither ignore_index nor in
 * [0, g.c) (such rows are skipped), or -1. */
int fl_sequence_scores(const fl_seq_args *a, fl_grid g, fl_rsum *logprob, int64_t *count, uint8_t *greedy,
                       int64_t *first_bad);

/* ---- decoding (API section 8), in fl_decode.c, fl_logprobs.c and fl_penalties.c ---- */
/* sample and filter_logits. Per-row settings are row-grid operands (float64 or int64). */
typedef struct {
    fl_arr x;             /* logits */
    fl_arr temperature;   /* float64 per row: > 0 (0: greedy, sample only) */
    fl_arr top_k;         /* int64 per row: <= 0 or >= C: off */
    fl_arr top_p;         /* float64 per row, in [0, 1]: 1 is off */
    fl_arr min_p;         /* float64 per row, in [0, 1]: 0 is off */
    fl_arr min_keep;      /* int64 per row: min_tokens_to_keep, >= 1 */
    fl_arr seed;          /* sample: uint64 per row (the Philox key; int64 storage) */
    fl_arr offset;        /* sample: uint64 per row (counter words 0-1) */
    fl_arr stream;        /* sample: uint64 per row (counter words 2-3); data NULL: the row's index in grid
                             order (its C-order index) */
    fl_arr out;           /* filter_logits: the filtered logits (x's grid); sample: int64 tokens (row grid) */
    fl_arr logprob;       /* sample: the drawn tokens' log-probabilities (row grid), or data NULL */
} fl_dec_args;
int fl_filter_logits(const fl_dec_args *a, fl_grid g);
/* *first_bad: the first row (grid order) with a temperature > 0 and no softmax (a NaN, a +inf,
 * or every logit -inf), or -1 */
int fl_sample(const fl_dec_args *a, fl_grid g, int64_t *first_bad);

typedef struct {
    fl_arr x;             /* logits */
    fl_arr tokens;        /* int64 or int32 per row */
    fl_arr temperature;   /* float64 per row, > 0 */
    fl_arr logprob;       /* float32 or float64 per row */
    fl_arr rank;          /* int64 per row, or data NULL */
    fl_arr top_logprob;   /* top_n per row along its class stride, float32 or float64 */
    fl_arr top_token;     /* top_n per row along its class stride, int64 */
    int64_t top_n;
} fl_lp_args;
/* *first_bad: the first row (grid order) whose token is outside [0, C), or -1 (its outputs are
 * not written) */
int fl_token_logprobs(const fl_lp_args *a, fl_grid g, int64_t *first_bad);

typedef struct {
    fl_arr x;             /* logits, modified in place */
    fl_arr prev;          /* int64 or int32 token ids: len per row along its class stride */
    fl_arr repetition, presence, frequency;  /* float64 per row */
    int64_t len;
} fl_pen_args;
/* *first_bad: the first position (row * len + j, grid order) of an id >= C, or -1; nothing is
 * modified when there is one */
int fl_apply_penalties(const fl_pen_args *a, fl_grid g, int64_t *first_bad);
/* the generator of sample, exposed for its known-answer tests: Philox-4x32 of ctr and key */
void fl_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);
/* ---- end of decoding ---- */

/* runtime dispatch, in fl_dispatch.c */
const char *fl_isa_name(void);           /* the path in use */
int fl_isa_select(const char *name);     /* 0: selected; 1: unknown name; 2: not supported here */
const char *fl_isa_best(void);           /* the best path this CPU supports */
/* The streaming policy: reused outputs (fl_arr.fresh 0) of at least out[0] bytes (-1: none)
 * are written with non-temporal stores where a kernel can stream them; output rows only when
 * they have at least out[1] bytes, the vector stores at least out[2] bytes, and, for rows a
 * kernel's plain path computes in the output row itself, only when out[3] is 1. The default
 * depends on the CPU's vendor (fl_stream_default_policy); a negative min_bytes streams nothing.
 * The values written are the same whatever the policy. */
void fl_stream_policy(int64_t out[4]);
void fl_stream_default_policy(int64_t out[4]);
void fl_set_stream_policy(int64_t min_bytes, int64_t min_row_bytes, int64_t min_store_bytes, int in_place_rows);
/* Products of subnormal values: 1, the x86 kernels compute them by the plain instructions; 0,
 * by exact double and integer arithmetic that spares Intel cores a microcode assist. The
 * default depends on the CPU's vendor (fl_subnormal_default_policy: 1 on AMD); a negative
 * value sets it back. The values written are the same whatever the policy. */
int fl_subnormal_policy(void);
int fl_subnormal_default_policy(void);
void fl_set_subnormal_policy(int plain);

#ifdef __cplusplus
}
#endif
#endif
