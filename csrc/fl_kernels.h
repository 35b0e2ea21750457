/* fl_kernels.h: the dispatch table. Each ISA build of the kernel sources defines its functions
 * under FL_FN names and one table, fl_table_<isa>; fl_dispatch.c picks a table at import. */
#ifndef FL_KERNELS_H
#define FL_KERNELS_H

#include "fastlogits.h"

typedef struct {
    const char *name;
    int (*softmax)(const fl_arr *, const fl_arr *, fl_grid, int);
    int (*row_reduce)(const fl_arr *, const fl_arr *, fl_grid, int);
    int (*elementwise)(const fl_arr *, const fl_arr *, fl_grid, int);
    int (*argmax)(const fl_arr *, const fl_arr *, fl_grid);
    int (*topk)(const fl_arr *, const fl_arr *, const fl_arr *, fl_grid, int64_t);
    int (*threshold)(const fl_arr *, const fl_arr *, fl_grid, double);
    double (*stream_read)(const float *, int64_t);
    void (*stream_copy)(float *, const float *, int64_t);
    double (*math_probe)(int, int64_t);
    int (*bce)(const fl_arr *, const fl_arr *, const fl_arr *, const fl_arr *, const fl_arr *,
               const fl_arr *, fl_grid, const fl_bce_opts *, fl_rsum *);
    int (*check_binary_target)(const fl_arr *, fl_grid);
    int (*cross_entropy)(const fl_ce_args *, fl_grid, fl_ce_result *);
    int (*score)(const fl_arr *, const fl_arr *, const fl_arr *, fl_grid, const fl_score_opts *, fl_rsum *);
    void (*score_pc_fold)(const fl_score_opts *, int64_t);
    int (*sequence_scores)(const fl_seq_args *, fl_grid, fl_rsum *, int64_t *, uint8_t *, int64_t *);
    /* decoding */
    int (*filter_logits)(const fl_dec_args *, fl_grid);
    int (*sample)(const fl_dec_args *, fl_grid, int64_t *);
    int (*token_logprobs)(const fl_lp_args *, fl_grid, int64_t *);
    int (*apply_penalties)(const fl_pen_args *, fl_grid, int64_t *);
} fl_kernel_table;

extern const fl_kernel_table fl_table_scalar;
#if defined(FL_HAVE_AVX2)
extern const fl_kernel_table fl_table_avx2;
#endif
#if defined(FL_HAVE_AVX512)
extern const fl_kernel_table fl_table_avx512;
#endif
#if defined(FL_HAVE_NEON)
extern const fl_kernel_table fl_table_neon;
#endif

#ifdef FL_ISA
#include "fl_simd.h"
/* prototypes of this ISA build's kernels */
int FL_FN(softmax)(const fl_arr *x, const fl_arr *y, fl_grid g, int mode);
int FL_FN(row_reduce)(const fl_arr *x, const fl_arr *out, fl_grid g, int what);
int FL_FN(elementwise)(const fl_arr *x, const fl_arr *y, fl_grid g, int op);
int FL_FN(argmax)(const fl_arr *x, const fl_arr *out, fl_grid g);
int FL_FN(topk)(const fl_arr *x, const fl_arr *values, const fl_arr *indices, fl_grid g, int64_t k);
int FL_FN(threshold)(const fl_arr *x, const fl_arr *out, fl_grid g, double threshold_logit);
double FL_FN(stream_read)(const float *src, int64_t n);
void FL_FN(stream_copy)(float *dst, const float *src, int64_t n);
double FL_FN(math_probe)(int what, int64_t reps);
int FL_FN(bce)(const fl_arr *x, const fl_arr *y, const fl_arr *w, const fl_arr *pw, const fl_arr *loss,
               const fl_arr *grad, fl_grid g, const fl_bce_opts *o, fl_rsum *total);
int FL_FN(check_binary_target)(const fl_arr *y, fl_grid g);
int FL_FN(cross_entropy)(const fl_ce_args *args, fl_grid g, fl_ce_result *res);
int FL_FN(score)(const fl_arr *x, const fl_arr *target, const fl_arr *weight, fl_grid g,
                 const fl_score_opts *o, fl_rsum *acc);
void FL_FN(score_pc_fold)(const fl_score_opts *o, int64_t c);
int FL_FN(sequence_scores)(const fl_seq_args *a, fl_grid g, fl_rsum *logprob, int64_t *count, uint8_t *greedy,
                           int64_t *first_bad);
/* decoding */
int FL_FN(filter_logits)(const fl_dec_args *a, fl_grid g);
int FL_FN(sample)(const fl_dec_args *a, fl_grid g, int64_t *first_bad);
int FL_FN(token_logprobs)(const fl_lp_args *a, fl_grid g, int64_t *first_bad);
int FL_FN(apply_penalties)(const fl_pen_args *a, fl_grid g, int64_t *first_bad);
#endif

#endif
