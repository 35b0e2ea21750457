/* fl_rsum.c: the accumulator of fl_rsum.h for the binding (merging, finalizing and depositing
 * states handed over from Python), compiled once with baseline flags: the states are exact
 * integers, so every ISA build of the kernels and this file agree on them bit for bit. */
#include "fl_rsum.h"

void fl_rsum_init_n(fl_rsum *s, int64_t n)
{
    for (int64_t i = 0; i < n; i++) fl_rsum_init(&s[i]);
}

void fl_rsum_merge_n(fl_rsum *into, const fl_rsum *other, int64_t n)
{
    for (int64_t i = 0; i < n; i++) fl_rsum_merge(&into[i], &other[i]);
}

void fl_rsum_value_n(const fl_rsum *s, double *out, int64_t n)
{
    for (int64_t i = 0; i < n; i++) out[i] = fl_rsum_value(&s[i]);
}

void fl_rsum_add_n(fl_rsum *s, const double *x, int64_t n, int64_t stride)
{
    if (stride == 1) {
        fl_rsum_add_f64s(s, x, n);
        return;
    }
    fl_rsum_buf b;
    fl_rsum_buf_init(&b);
    b.s = *s;
    for (int64_t i = 0; i < n; i++) fl_rsum_buf_add(&b, x[i * stride]);
    fl_rsum_buf_done(&b);
    *s = b.s;
}

int64_t fl_rsum_check_n(const fl_rsum *s, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (!fl_rsum_valid(&s[i])) return i;
    return -1;
}
