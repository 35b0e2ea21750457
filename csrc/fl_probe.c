/* fl_probe.c: the arithmetic-throughput probe behind the roofline of `fastlogits bench`.
 *
 * The arithmetic bound of a kernel is its elements times the operations it needs per element
 * (exponentials; divisions and log1p for the sigmoid family and the binary losses), over the
 * rate at which this core evaluates them. This loop measures those rates in the same run as
 * the kernels, on the active ISA: one operation per element over FL_PROBE_N floats resident in
 * L1 (4 KB), summed, repeated, four independent vectors a step as the kernels' loops have them.
 *   FL_PROBE_EXP    sum exp(x_k - c), with the exponential of the ULP-bounded kernels
 *                   (flv_exp_neg_normal: the degree-7 polynomial, no clamp, normal results)
 *   FL_PROBE_DIV    sum 1 / (1 + x_k), the sigmoid's division
 *   FL_PROBE_LOG1P  sum log1p(t_k) for t_k in [0, 1], the log-sigmoid's and BCE's (fl_vlog1p_unit)
 * Per element: one load, the operation with its one argument operation (a subtraction, an
 * addition or a multiplication), one addition to the sum: the least work of any kernel that needs
 * the operation, and nothing else. The caller times the call (FL_PROBE_N * reps operations);
 * the sum is returned so that the work cannot be optimised away. Compiled once per ISA. */
#include <stdint.h>

#include "fastlogits.h"
#include "fl_kernels.h"
#include "fl_sigmoid_math.h"
#include "fl_simd.h"

#define FL_PROBE_N 1024

FL_ALWAYS_INLINE flv fl_probe_op(flv x, int what)
{
    switch (what) {
    case FL_PROBE_EXP: return flv_exp_neg_normal(flv_sub(x, flv_set1(80.0f)));
    case FL_PROBE_DIV: return flv_div(flv_set1(1.0f), flv_add(flv_set1(1.0f), x));
    default: return fl_vlog1p_unit(flv_mul(x, flv_set1(1.0f / 80.0f)));
    }
}

/* one accumulator, four operations added to it as a tree a step: a single loop-carried
 * addition per four vectors, and no accumulator for the compiler to spill (with the log1p's
 * constants, four of them left one on the stack on AVX2, and the loop ran at the speed of
 * that store and reload instead of the arithmetic's) */
FL_ALWAYS_INLINE double fl_probe_loop(const float *x, int64_t reps, int what)
{
    flv a = flv_set1(0.0f);
    for (int64_t r = 0; r < reps; r++) {
        for (int k = 0; k + 4 * FL_W <= FL_PROBE_N; k += 4 * FL_W) {
            flv o0 = fl_probe_op(flv_load(x + k), what), o1 = fl_probe_op(flv_load(x + k + FL_W), what);
            flv o2 = fl_probe_op(flv_load(x + k + 2 * FL_W), what), o3 = fl_probe_op(flv_load(x + k + 3 * FL_W), what);
            a = flv_add(a, flv_add(flv_add(o0, o1), flv_add(o2, o3)));
        }
    }
    return flv_hsum_d(a);
}

double FL_FN(math_probe)(int what, int64_t reps)
{
    float x[FL_PROBE_N];
    /* x in [0, 80]: exp's arguments x - 80 in [-80, 0] (normal results), log1p's in [0, 1] */
    for (int k = 0; k < FL_PROBE_N; k++) x[k] = (float)(k % 97) * (80.0f / 96.0f);
    switch (what) {
    case FL_PROBE_EXP: return fl_probe_loop(x, reps, FL_PROBE_EXP);
    case FL_PROBE_DIV: return fl_probe_loop(x, reps, FL_PROBE_DIV);
    default: return fl_probe_loop(x, reps, FL_PROBE_LOG1P);
    }
}
