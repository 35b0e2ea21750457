/* fl_table.c: this ISA build's dispatch table (compiled once per ISA, like the kernels). */
#include "fl_simd.h"
#include "fl_kernels.h"

#define FL_TABLE_NAME FL_CAT3(fl_table_, FL_ISA_SUFFIX, )

const fl_kernel_table FL_TABLE_NAME = {
    .name = FL_CAT3_STR(FL_ISA_SUFFIX),
    .softmax = FL_FN(softmax),
    .row_reduce = FL_FN(row_reduce),
    .elementwise = FL_FN(elementwise),
    .argmax = FL_FN(argmax),
    .topk = FL_FN(topk),
    .threshold = FL_FN(threshold),
    .stream_read = FL_FN(stream_read),
    .stream_copy = FL_FN(stream_copy),
    .math_probe = FL_FN(math_probe),
    .bce = FL_FN(bce),
    .check_binary_target = FL_FN(check_binary_target),
    .cross_entropy = FL_FN(cross_entropy),
    .score = FL_FN(score),
    .score_pc_fold = FL_FN(score_pc_fold),
    .sequence_scores = FL_FN(sequence_scores),
    /* decoding */
    .filter_logits = FL_FN(filter_logits),
    .sample = FL_FN(sample),
    .token_logprobs = FL_FN(token_logprobs),
    .apply_penalties = FL_FN(apply_penalties),
};
