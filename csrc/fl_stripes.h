/* fl_stripes.h: how a reducing kernel hands its blocks to the thread pool. The blocks are cut
 * into at most one stripe of consecutive blocks per thread; each task reduces its stripes into
 * its own partial state (order-independent sums, fl_rsum.h) and stores it in the slot of its
 * first stripe; the caller merges the slots after the parallel loop. The sums do not depend on
 * the stripes, so the result is bitwise the same for every thread count, whichever thread ran
 * which stripe. Compiled once per ISA (static inline). */
#ifndef FL_STRIPES_H
#define FL_STRIPES_H

#include <stdint.h>
#include "fl_pool.h"

/* reduce blocks [b0, b1) into slot `slot` (< the stripe count) */
typedef void (*fl_stripe_fn)(void *ctx, int64_t b0, int64_t b1, int64_t slot);

typedef struct {
    fl_stripe_fn fn;
    void *ctx;
    int64_t n_blocks, n_stripes;
} fl_stripe_job;

/* How many slots a run over n_blocks blocks needs: one per thread, at most one per block. */
static inline int64_t fl_stripe_count(int64_t n_blocks)
{
    int64_t t = fl_get_num_threads();
    return n_blocks < t ? n_blocks : t;
}

static void fl_stripe_task(void *vjob, int64_t s0, int64_t s1)
{
    const fl_stripe_job *j = (const fl_stripe_job *)vjob;
    j->fn(j->ctx, s0 * j->n_blocks / j->n_stripes, s1 * j->n_blocks / j->n_stripes, s0);
}

/* Run fn over n_blocks blocks in n_stripes (from fl_stripe_count) stripes; a task's slot is in
 * [0, n_stripes). */
static inline void fl_stripes_run(int64_t n_blocks, int64_t n_stripes, fl_stripe_fn fn, void *ctx)
{
    fl_stripe_job j = {fn, ctx, n_blocks, n_stripes};
    if (n_blocks > 0) fl_parallel_for(n_stripes, fl_stripe_task, &j);
}

#endif
