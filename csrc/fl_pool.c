/* fl_pool.c: persistent thread pool, see fl_pool.h.
 *
 * Design (the same code on POSIX and Windows; fl_thread.h maps the few OS calls, fl_atomic.h
 * the atomics):
 *  - g_busy is a try-lock taken by the one caller whose job uses the pool; it also owns the worker
 *    list while it holds it (grow / shrink happen at job start). Anyone failing the try-lock, and
 *    any nested call (thread-local tls_in_task), runs its range inline.
 *  - Range t (1..T-1) of a job is offered to worker t by setting w->claim = 1, then the caller
 *    bumps the worker's sequence number w->seq and signals its condition variable under
 *    g_mutex. Whoever takes the claim (CAS 1 -> 0) runs range t: normally worker t; but when the
 *    caller has finished range 0 it takes every range whose worker has not started yet (slow
 *    wake-up, or a scheduler that queued the worker behind the caller on the same CPU), so a job
 *    never waits for a thread to wake up. The ranges are static either way; only the OS thread
 *    that runs a range may vary. g_pending counts ranges 1..T-1 not yet finished.
 *  - The job description (g_job) is written by the caller before the claims are published and
 *    only read after a successful claim; the caller does not touch it again until g_pending is 0,
 *    so it needs no atomics of its own (the claim CAS and the g_pending decrement order it).
 *  - Both sides spin for a short bounded time before sleeping (worker: waiting for the next job;
 *    caller: waiting for the workers), which keeps back-to-back calls cheap and idle CPU at zero.
 *  - fork (POSIX): a pthread_atfork child handler forgets the workers (they do not exist in the
 *    child), reinitialises g_mutex / g_done_cond and clears g_busy; the pool is rebuilt lazily.
 */
#if !defined(_WIN32) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE /* sched_getaffinity / CPU_COUNT, pthread_sigmask */
#endif
#include "fl_pool.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>

#if defined(_WIN32) && !defined(_WIN32_WINNT)
#define _WIN32_WINNT 0x0601 /* GetActiveProcessorCount */
#endif
#include "fl_atomic.h"
#include "fl_thread.h"
#if !defined(_WIN32)
#include <unistd.h>
#endif

/* ---------------------------------------------------------------- default thread count */

static int clamp_threads(long v)
{
    if (v < 1) return 1;
    if (v > FL_POOL_MAX_THREADS) return FL_POOL_MAX_THREADS;
    return (int)v;
}

/* FASTLOGITS_NUM_THREADS: optional surrounding whitespace, optional '+', decimal digits, value
   in [1, INT_MAX]; anything else is ignored. Returns 0 when not set or invalid. */
static int env_num_threads(void)
{
    const char *s = getenv("FASTLOGITS_NUM_THREADS");
    if (!s) return 0;
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r') s++;
    if (*s == '+') s++;
    if (*s < '0' || *s > '9') return 0;
    long long v = 0;
    while (*s >= '0' && *s <= '9') {
        v = v * 10 + (*s - '0');
        if (v > INT_MAX) return 0;
        s++;
    }
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r') s++;
    if (*s != '\0' || v < 1) return 0;
    return clamp_threads((long)v);
}

static int cpu_num_threads(void)
{
#if defined(_WIN32)
#if _WIN32_WINNT >= 0x0601
    DWORD n = GetActiveProcessorCount(ALL_PROCESSOR_GROUPS);
#else
    SYSTEM_INFO si;
    GetSystemInfo(&si);
    DWORD n = si.dwNumberOfProcessors;
#endif
    return n > 0 ? clamp_threads((long)n) : 1;
#else
#if defined(__linux__) && defined(CPU_COUNT)
    {
        cpu_set_t set;
        CPU_ZERO(&set);
        if (sched_getaffinity(0, sizeof set, &set) == 0) {
            int n = CPU_COUNT(&set);
            if (n > 0) return clamp_threads(n);
        }
#if defined(CPU_ALLOC)
        else if (errno == EINVAL) {
            /* more CPUs than fit in a cpu_set_t: grow the dynamic set until the kernel accepts it */
            for (size_t ncpu = 2 * (size_t)CPU_SETSIZE; ncpu <= ((size_t)1 << 20); ncpu *= 2) {
                cpu_set_t *ds = CPU_ALLOC(ncpu);
                if (!ds) break;
                size_t sz = CPU_ALLOC_SIZE(ncpu);
                CPU_ZERO_S(sz, ds);
                if (sched_getaffinity(0, sz, ds) == 0) {
                    int n = CPU_COUNT_S(sz, ds);
                    CPU_FREE(ds);
                    if (n > 0) return clamp_threads(n);
                    break;
                }
                CPU_FREE(ds);
                if (errno != EINVAL) break;
            }
        }
#endif
    }
#endif
#if defined(_SC_NPROCESSORS_ONLN)
    {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        if (n > 0) return clamp_threads(n);
    }
#endif
    return 1;
#endif
}

int fl_default_num_threads(void)
{
    int n = env_num_threads();
    return n > 0 ? n : cpu_num_threads();
}

/* static split: thread t of T gets [t*n/T, (t+1)*n/T), computed without overflow:
   with n = q*T + r, t*n/T = t*q + (t*r)/T exactly (t, r < T <= FL_POOL_MAX_THREADS). */
static inline int64_t split_point(int64_t n, int t, int T)
{
    int64_t q = n / T, r = n % T;
    return (int64_t)t * q + ((int64_t)t * r) / T;
}

/* spin iterations before sleeping: each is one pause (~10-150 cycles), so this is a few
   microseconds up to a few tens of microseconds, then the thread sleeps */
#ifndef FL_POOL_SPIN
#define FL_POOL_SPIN 2000
#endif

typedef struct fl_worker {
    fl_thread thread;
    fl_cond cond;          /* signalled (under g_mutex) when seq changes */
    fl_atomic_int seq;     /* bumped by the caller to hand this worker a job (or the stop order) */
    fl_atomic_int stop;    /* set before the bump that tells the worker to exit */
    fl_atomic_int claim;   /* 1: range `index` of the current job is not taken yet */
    int index;             /* thread index t >= 1 in the static split */
} fl_worker;

typedef struct {
    fl_task_fn fn;
    void *ctx;
    int64_t n;
    int T;
} fl_job;

static fl_atomic_int g_num_threads = 0;   /* 0: not yet read from fl_default_num_threads */
static fl_atomic_int g_busy = 0;          /* try-lock: the pool runs one job at a time */
static fl_atomic_int g_pending = 0;       /* workers of the current job not yet done */
static fl_atomic_int g_caller_waiting = 0; /* caller sleeps on g_done_cond (guarded by g_mutex) */
static fl_mutex g_mutex = FL_MUTEX_INIT;
static fl_cond g_done_cond = FL_COND_INIT;
static fl_job g_job;                  /* written by the g_busy holder, read by assigned workers */
static fl_worker **g_workers = NULL;  /* owned by the g_busy holder; g_workers[i]->index == i + 1 */
static int g_n_workers = 0;
static int g_cap_workers = 0;
static FL_THREAD_LOCAL int tls_in_task = 0; /* this thread is inside fn (or is a worker) */

/* ---------------------------------------------------------------- thread count setting */

int fl_get_num_threads(void)
{
    int v = fl_atomic_load(&g_num_threads);
    if (v == 0) {
        fl_atomic_cas(&g_num_threads, 0, fl_default_num_threads());
        v = fl_atomic_load(&g_num_threads);
    }
    return v;
}

void fl_set_num_threads(int n) { fl_atomic_store(&g_num_threads, clamp_threads(n)); }

int fl_reset_default_num_threads(void)
{
    int n = fl_default_num_threads();
    fl_atomic_store(&g_num_threads, n);
    return n;
}

/* ---------------------------------------------------------------- workers */

static void run_range(int t)
{
    int64_t b = split_point(g_job.n, t, g_job.T);
    int64_t e = split_point(g_job.n, t + 1, g_job.T);
    if (e > b) g_job.fn(g_job.ctx, b, e);
}

/* the worker has finished range t of the job: the last one wakes the caller if it sleeps */
static void range_done(void)
{
    /* seq_cst pairs with the caller's store of g_caller_waiting followed by its load of
       g_pending: one of the two sides sees the other */
    if (fl_atomic_fetch_add(&g_pending, -1) == 1 && fl_atomic_load(&g_caller_waiting)) {
        fl_mutex_lock(&g_mutex);
        fl_cond_signal(&g_done_cond);
        fl_mutex_unlock(&g_mutex);
    }
}

FL_THREAD_MAIN(worker_main, arg)
{
    fl_worker *w = (fl_worker *)arg;
    int seen = 0; /* seq starts at 0 and is only bumped after creation */
    int skip_spin = 0;
    tls_in_task = 1; /* any fl_parallel_for from a task on a worker runs inline */
    for (;;) {
        int s = fl_atomic_load(&w->seq);
        for (int i = skip_spin ? FL_POOL_SPIN : 0; s == seen && i < FL_POOL_SPIN; i++) {
            FL_CPU_RELAX();
            s = fl_atomic_load(&w->seq);
        }
        if (s == seen) {
            fl_mutex_lock(&g_mutex);
            while ((s = fl_atomic_load(&w->seq)) == seen) fl_cond_wait(&w->cond, &g_mutex);
            fl_mutex_unlock(&g_mutex);
        }
        seen = s;
        if (fl_atomic_load(&w->stop)) break;
        if (!fl_atomic_cas(&w->claim, 1, 0)) {
            /* too late: the caller ran our range itself. Do not spin (we may be sharing the
               caller's CPU); sleep until the next job. */
            skip_spin = 1;
            continue;
        }
        skip_spin = 0;
        run_range(w->index);
        range_done();
    }
    FL_THREAD_END;
}

static void wake_worker(fl_worker *w)
{
    fl_mutex_lock(&g_mutex);
    fl_atomic_fetch_add(&w->seq, 1);
    fl_cond_signal(&w->cond);
    fl_mutex_unlock(&g_mutex);
}

/* called by the g_busy holder */
static void stop_workers_from(int keep)
{
    while (g_n_workers > keep) {
        fl_worker *w = g_workers[--g_n_workers];
        fl_atomic_store(&w->stop, 1);
        wake_worker(w);
        fl_thread_join(w->thread);
        fl_cond_destroy(&w->cond);
        free(w);
        g_workers[g_n_workers] = NULL;
    }
}

/* called by the g_busy holder; returns the number of workers available (may be < want on failure) */
static int grow_workers(int want)
{
    if (want <= g_n_workers) return g_n_workers;
    if (want > g_cap_workers) {
        int cap = g_cap_workers ? g_cap_workers : 4;
        while (cap < want) cap *= 2;
        fl_worker **nw = (fl_worker **)realloc(g_workers, (size_t)cap * sizeof *nw);
        if (!nw) return g_n_workers;
        g_workers = nw;
        g_cap_workers = cap;
    }
    while (g_n_workers < want) {
        fl_worker *w = (fl_worker *)calloc(1, sizeof *w);
        if (!w) break;
        fl_atomic_store(&w->seq, 0);
        fl_atomic_store(&w->stop, 0);
        fl_atomic_store(&w->claim, 0);
        w->index = g_n_workers + 1;
        if (fl_cond_init(&w->cond) != 0) {
            free(w);
            break;
        }
        if (fl_thread_start(&w->thread, worker_main, w) != 0) {
            fl_cond_destroy(&w->cond);
            free(w);
            break;
        }
        g_workers[g_n_workers++] = w;
    }
    return g_n_workers;
}

/* ---------------------------------------------------------------- fork handling (POSIX) */

#if defined(_WIN32)
static void register_fork_handlers(void) {}
#else
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void atfork_prepare(void) { pthread_mutex_lock(&g_mutex); }
static void atfork_parent(void) { pthread_mutex_unlock(&g_mutex); }
static void atfork_child(void)
{
    /* only the forking thread exists in the child: forget the workers (their memory is freed,
       their condition variables are not destroyed since they may look waited on), reset state */
    for (int i = 0; i < g_n_workers; i++) free(g_workers[i]);
    free(g_workers);
    g_workers = NULL;
    g_n_workers = 0;
    g_cap_workers = 0;
    pthread_mutex_init(&g_mutex, NULL);
    pthread_cond_init(&g_done_cond, NULL);
    fl_atomic_store(&g_pending, 0);
    fl_atomic_store(&g_caller_waiting, 0);
    fl_atomic_store(&g_busy, 0);
}

static void pool_once(void) { pthread_atfork(atfork_prepare, atfork_parent, atfork_child); }
static void register_fork_handlers(void) { pthread_once(&g_once, pool_once); }
#endif

/* ---------------------------------------------------------------- parallel for */

static void run_inline(int64_t n, fl_task_fn fn, void *ctx)
{
    int saved = tls_in_task;
    tls_in_task = 1;
    fn(ctx, 0, n);
    tls_in_task = saved;
}

static int try_acquire(void) { return fl_atomic_load(&g_busy) == 0 && fl_atomic_cas(&g_busy, 0, 1); }

static void release(void) { fl_atomic_store(&g_busy, 0); }

/* wait until every worker of the job has finished: short spin, then sleep */
static void wait_for_workers(void)
{
    for (int i = 0; fl_atomic_load(&g_pending) != 0 && i < FL_POOL_SPIN; i++) FL_CPU_RELAX();
    if (fl_atomic_load(&g_pending) == 0) return;
    fl_mutex_lock(&g_mutex);
    fl_atomic_store(&g_caller_waiting, 1);
    while (fl_atomic_load(&g_pending) != 0) fl_cond_wait(&g_done_cond, &g_mutex);
    fl_atomic_store(&g_caller_waiting, 0);
    fl_mutex_unlock(&g_mutex);
}

void fl_parallel_for_max(int64_t n_blocks, int max_threads, fl_task_fn fn, void *ctx)
{
    if (n_blocks <= 0) return;
    int setting = fl_get_num_threads();
    int T = setting;
    if (max_threads < T) T = max_threads;
    if ((int64_t)T > n_blocks) T = (int)n_blocks;
    if (T <= 1 || tls_in_task || !try_acquire()) {
        run_inline(n_blocks, fn, ctx);
        return;
    }

    register_fork_handlers();
    /* shrink to the current setting (lazily, only the holder of g_busy touches the workers) */
    if (g_n_workers > setting - 1) stop_workers_from(setting - 1);
    int avail = grow_workers(T - 1);
    if (T - 1 > avail) T = avail + 1;
    if (T <= 1) {
        release();
        run_inline(n_blocks, fn, ctx);
        return;
    }

    g_job.fn = fn;
    g_job.ctx = ctx;
    g_job.n = n_blocks;
    g_job.T = T;
    fl_atomic_store(&g_pending, T - 1);
    for (int i = 0; i < T - 1; i++) {
        fl_atomic_store(&g_workers[i]->claim, 1);
        wake_worker(g_workers[i]);
    }

    tls_in_task = 1;
    run_range(0);
    /* ranges whose worker has not started yet (slow wake-up, or the scheduler queued it behind
       us on this CPU) are run here rather than waited for; the split itself stays static */
    for (int i = T - 2; i >= 0; i--) {
        if (fl_atomic_cas(&g_workers[i]->claim, 1, 0)) {
            run_range(i + 1);
            fl_atomic_fetch_add(&g_pending, -1);
        }
    }
    tls_in_task = 0;
    wait_for_workers();
    release();
}

void fl_parallel_for(int64_t n_blocks, fl_task_fn fn, void *ctx)
{
    fl_parallel_for_max(n_blocks, FL_POOL_MAX_THREADS, fn, ctx);
}

void fl_pool_shutdown(void)
{
    if (tls_in_task) return; /* unsupported from inside a task; do nothing rather than deadlock */
    while (!try_acquire()) fl_yield();
    stop_workers_from(0);
    free(g_workers);
    g_workers = NULL;
    g_cap_workers = 0;
    release();
}
