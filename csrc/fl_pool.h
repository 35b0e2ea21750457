/* fl_pool.h: a small persistent thread pool for the kernels. Plain C11 over POSIX threads or
 * Win32 threads (fl_thread.h); the same pool, split and results on every platform.
 *
 * Workers are created lazily on the first parallel call and then persist; between jobs they
 * spin for a few microseconds at most and then sleep on a condition variable (no CPU use when
 * idle). One job uses the pool at a time: a call made while the pool is busy (another thread's
 * job, or a nested call from inside a task) runs its whole range inline on the calling thread,
 * so concurrent callers never block behind each other and never deadlock.
 *
 * The split of [0, n_blocks) depends only on n_blocks and the number of threads used, so a
 * kernel that combines per-block results gets the same answer for any thread count.
 *
 * After fork() the child starts with no workers and rebuilds the pool lazily on its next
 * parallel call (pthread_atfork child handler). Calling fork() from inside a task is not
 * supported (the child may only exec or _exit then).
 */
#ifndef FL_POOL_H
#define FL_POOL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* threadpoolctl finds the pool by these two symbols in the loaded extension (see
   src/fastlogits/_threadpool.py): a Windows DLL (.pyd) exports only what is marked so */
#if defined(_WIN32)
#define FL_POOL_EXPORT __declspec(dllexport)
#else
#define FL_POOL_EXPORT
#endif

/* upper bound on the thread count; fl_set_num_threads and FASTLOGITS_NUM_THREADS are clamped */
#define FL_POOL_MAX_THREADS 1024

/* run fn(ctx, begin, end) over [0, n_blocks) split into contiguous, static ranges: with T threads,
   thread t gets blocks [t*n/T, (t+1)*n/T); the caller thread takes part. Returns when all are done.
   T = min(fl_get_num_threads(), n_blocks), or 1 (one call fn(ctx, 0, n_blocks) on the caller) when
   the pool is busy or the call is nested. fn is never called with an empty range; n_blocks <= 0
   calls nothing. Range t is normally run by worker thread t; a range whose worker has not started
   by the time the caller finished its own range is run by the caller instead (never waits for a
   thread wake-up). Which thread runs a range is thus not fixed; the ranges always are. */
typedef void (*fl_task_fn)(void *ctx, int64_t begin, int64_t end);
void fl_parallel_for(int64_t n_blocks, fl_task_fn fn, void *ctx);
/* like fl_parallel_for but uses at most max_threads threads (>=1; values < 1 are treated as 1) */
void fl_parallel_for_max(int64_t n_blocks, int max_threads, fl_task_fn fn, void *ctx);
FL_POOL_EXPORT int fl_get_num_threads(void);   /* current setting */
FL_POOL_EXPORT void fl_set_num_threads(int n); /* n >= 1 (clamped to [1, FL_POOL_MAX_THREADS]); the pool grows/shrinks lazily */
int fl_default_num_threads(void);  /* FASTLOGITS_NUM_THREADS env var if valid positive int, else CPUs in this
                                      process's affinity mask (sched_getaffinity / CPU_COUNT), else
                                      sysconf(_SC_NPROCESSORS_ONLN); on Windows the active processors of all
                                      groups; at least 1 (and at most FL_POOL_MAX_THREADS) */

/* Extra helpers (not needed by kernels): */
/* re-read fl_default_num_threads() (e.g. after FASTLOGITS_NUM_THREADS changed), make it the current
   setting and return it. Until the first fl_get_num_threads/fl_set_num_threads/parallel call the
   setting is unset and the default is read then, so setenv before first use also works. */
int fl_reset_default_num_threads(void);
/* stop and join all workers and free the pool (it is rebuilt lazily by the next parallel call).
   Waits for a running job to finish first. Must not be called from inside a task. For tests and
   clean shutdown; never required. */
void fl_pool_shutdown(void);

#ifdef __cplusplus
}
#endif

#endif /* FL_POOL_H */
