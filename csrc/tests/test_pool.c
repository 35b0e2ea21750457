/* test_pool.c: standalone test of fl_pool (POSIX).
 *
 * build: cc -O2 -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -pthread csrc/fl_pool.c csrc/tests/test_pool.c
 * also run under -fsanitize=thread (the program sets TSan's die_after_fork=0 itself, see below)
 * and -fsanitize=address,undefined. Exit status 0 on success. Prints the overhead of an empty
 * fl_parallel_for at the end (argument "--quick" skips the benchmark).
 */
#include "../fl_pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Under ThreadSanitizer: the fork test starts threads in the child of a multi-threaded process,
   which TSan refuses by default (die_after_fork=1); the pool is designed for exactly that case. */
#if defined(__SANITIZE_THREAD__)
#define FL_TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define FL_TEST_TSAN 1
#endif
#endif
#ifdef FL_TEST_TSAN
const char *__tsan_default_options(void);
const char *__tsan_default_options(void) { return "die_after_fork=0"; }
#endif

static atomic_int g_failures = 0;
#define CHECK(cond)                                                                        \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);       \
            g_failures++;                                                                  \
        }                                                                                  \
    } while (0)

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ------------------------------------------------------------ recording task */

#define MAX_RECS 4096
#define MAX_BLOCKS 5000

typedef struct {
    int64_t b, e;
    pthread_t th;
} rec;

typedef struct {
    atomic_int counts[MAX_BLOCKS];
    rec recs[MAX_RECS];
    atomic_int n_recs;
} recorder;

static void rec_task(void *ctx, int64_t b, int64_t e)
{
    recorder *r = (recorder *)ctx;
    int k = atomic_fetch_add(&r->n_recs, 1);
    if (k < MAX_RECS) {
        r->recs[k].b = b;
        r->recs[k].e = e;
        r->recs[k].th = pthread_self();
    }
    for (int64_t i = b; i < e; i++) atomic_fetch_add(&r->counts[i], 1);
}

static void rec_reset(recorder *r)
{
    for (int i = 0; i < MAX_BLOCKS; i++) atomic_store(&r->counts[i], 0);
    atomic_store(&r->n_recs, 0);
}

static int cmp_rec(const void *a, const void *b)
{
    const rec *x = (const rec *)a, *y = (const rec *)b;
    return (x->b > y->b) - (x->b < y->b);
}

/* check that the recorded calls are exactly the static split of [0, n) over T threads, that
   every block ran once, that the first range ran on the caller and that T distinct threads ran */
static int check_split(recorder *r, int64_t n, int T, const char *what)
{
    int bad = 0;
    int k = atomic_load(&r->n_recs);
    for (int64_t i = 0; i < n; i++)
        if (atomic_load(&r->counts[i]) != 1) bad = 1;
    if (n <= 0) {
        if (k != 0) bad = 1;
    } else if (k != T) {
        bad = 1;
    } else {
        rec sorted[MAX_RECS];
        memcpy(sorted, r->recs, (size_t)k * sizeof(rec));
        qsort(sorted, (size_t)k, sizeof(rec), cmp_rec);
        for (int t = 0; t < T; t++) {
            int64_t b = (int64_t)t * n / T, e = (int64_t)(t + 1) * n / T;
            if (sorted[t].b != b || sorted[t].e != e) bad = 1;
            /* range t>0 runs on worker t, or on the caller if that worker was late: never on
               another worker */
            for (int u = 1; u < t; u++)
                if (pthread_equal(sorted[u].th, sorted[t].th) && !pthread_equal(sorted[t].th, pthread_self()))
                    bad = 1;
        }
        if (!pthread_equal(sorted[0].th, pthread_self())) bad = 1;
    }
    if (bad) {
        fprintf(stderr, "split mismatch (%s): n=%lld T=%d, %d calls\n", what, (long long)n, T, k);
        for (int i = 0; i < k && i < 20; i++)
            fprintf(stderr, "  [%lld, %lld)\n", (long long)r->recs[i].b, (long long)r->recs[i].e);
        g_failures++;
    }
    return !bad;
}

static recorder g_rec; /* large: static */

static void test_coverage(void)
{
    static const int64_t ns[] = {0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 100, 999, 1000, 1001, 4999};
    static const int ts[] = {1, 2, 3, 4, 5, 7, 8, 16};
    for (size_t it = 0; it < sizeof ts / sizeof ts[0]; it++) {
        int th = ts[it];
        fl_set_num_threads(th);
        CHECK(fl_get_num_threads() == th);
        for (size_t in = 0; in < sizeof ns / sizeof ns[0]; in++) {
            int64_t n = ns[in];
            int T = (int64_t)th < n ? th : (int)(n < 1 ? 1 : n);
            rec_reset(&g_rec);
            fl_parallel_for(n, rec_task, &g_rec);
            check_split(&g_rec, n, T, "fl_parallel_for");
            /* repeat: same split again (static) */
            rec_reset(&g_rec);
            fl_parallel_for(n, rec_task, &g_rec);
            check_split(&g_rec, n, T, "fl_parallel_for repeated");
            /* max_threads variants */
            for (int mx = 1; mx <= th + 1; mx++) {
                int Tm = mx < th ? mx : th;
                if ((int64_t)Tm > n) Tm = (int)(n < 1 ? 1 : n);
                rec_reset(&g_rec);
                fl_parallel_for_max(n, mx, rec_task, &g_rec);
                check_split(&g_rec, n, Tm, "fl_parallel_for_max");
            }
        }
    }
    /* max_threads < 1 behaves like 1 */
    fl_set_num_threads(4);
    rec_reset(&g_rec);
    fl_parallel_for_max(10, 0, rec_task, &g_rec);
    check_split(&g_rec, 10, 1, "max_threads=0");
    rec_reset(&g_rec);
    fl_parallel_for_max(10, -3, rec_task, &g_rec);
    check_split(&g_rec, 10, 1, "max_threads=-3");
    /* negative n_blocks: nothing */
    rec_reset(&g_rec);
    fl_parallel_for(-5, rec_task, &g_rec);
    CHECK(atomic_load(&g_rec.n_recs) == 0);
    /* huge n_blocks: split arithmetic must not overflow (no work is done per block here) */
    printf("coverage/static split: done\n");
}

/* huge ranges: check the split points only */
typedef struct {
    atomic_llong sum_len;
    atomic_int calls;
    int64_t lo[64], hi[64];
} span_ctx;

static void span_task(void *ctx, int64_t b, int64_t e)
{
    span_ctx *s = (span_ctx *)ctx;
    int k = atomic_fetch_add(&s->calls, 1);
    if (k < 64) {
        s->lo[k] = b;
        s->hi[k] = e;
    }
    atomic_fetch_add(&s->sum_len, (long long)(e - b));
}

static void test_huge(void)
{
    int64_t n = INT64_MAX - 3;
    fl_set_num_threads(7);
    span_ctx s;
    memset(&s, 0, sizeof s);
    fl_parallel_for(n, span_task, &s);
    CHECK(atomic_load(&s.calls) == 7);
    CHECK(atomic_load(&s.sum_len) == (long long)n);
    for (int i = 0; i < 7 && i < atomic_load(&s.calls); i++) {
        /* each range starts at t*n/7 for some t: compute with 128-bit arithmetic */
        int found = 0;
        for (int t = 0; t < 7; t++) {
            __int128 b = (__int128)t * n / 7, e = (__int128)(t + 1) * n / 7;
            if ((__int128)s.lo[i] == b && (__int128)s.hi[i] == e) found = 1;
        }
        CHECK(found);
    }
    printf("huge n_blocks split: done\n");
}

/* ------------------------------------------------------------ concurrent callers */

typedef struct {
    const int64_t *in;
    int64_t *out;
} sq_ctx;

static void sq_task(void *ctx, int64_t b, int64_t e)
{
    sq_ctx *c = (sq_ctx *)ctx;
    for (int64_t i = b; i < e; i++) c->out[i] = c->in[i] * c->in[i] + 1;
}

typedef struct {
    int id;
    int errors;
} caller_arg;

static void *caller_main(void *arg)
{
    caller_arg *a = (caller_arg *)arg;
    enum { N = 257 };
    int64_t in[N], out[N];
    for (int rep = 0; rep < 1000; rep++) {
        int64_t n = 1 + (rep * 7 + a->id * 13) % N;
        for (int64_t i = 0; i < n; i++) {
            in[i] = i + rep + a->id;
            out[i] = -1;
        }
        sq_ctx c = {in, out};
        if (rep % 3 == 2)
            fl_parallel_for_max(n, 1 + rep % 4, sq_task, &c);
        else
            fl_parallel_for(n, sq_task, &c);
        for (int64_t i = 0; i < n; i++)
            if (out[i] != in[i] * in[i] + 1) a->errors++;
        /* also some calls that must be ignored */
        fl_parallel_for(0, sq_task, &c);
    }
    return NULL;
}

static void test_concurrent(int th)
{
    fl_set_num_threads(th);
    pthread_t t[8];
    caller_arg a[8];
    for (int i = 0; i < 8; i++) {
        a[i].id = i;
        a[i].errors = 0;
        CHECK(pthread_create(&t[i], NULL, caller_main, &a[i]) == 0);
    }
    int errors = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        errors += a[i].errors;
    }
    CHECK(errors == 0);
    printf("8 concurrent callers x 1000 jobs, %d threads: %d errors\n", th, errors);
}

/* concurrent fl_set_num_threads while jobs run in other threads */
static atomic_int g_stop_setter;
static void *setter_main(void *arg)
{
    (void)arg;
    int k = 0;
    while (!atomic_load(&g_stop_setter)) {
        fl_set_num_threads(1 + (k++ % 5));
        (void)fl_get_num_threads();
        sched_yield();
    }
    return NULL;
}

static void test_concurrent_set(void)
{
    pthread_t s;
    atomic_store(&g_stop_setter, 0);
    CHECK(pthread_create(&s, NULL, setter_main, NULL) == 0);
    pthread_t t[4];
    caller_arg a[4];
    for (int i = 0; i < 4; i++) {
        a[i].id = i;
        a[i].errors = 0;
        CHECK(pthread_create(&t[i], NULL, caller_main, &a[i]) == 0);
    }
    int errors = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        errors += a[i].errors;
    }
    atomic_store(&g_stop_setter, 1);
    pthread_join(s, NULL);
    CHECK(errors == 0);
    printf("4 callers x 1000 jobs with concurrent fl_set_num_threads: %d errors\n", errors);
}

/* ------------------------------------------------------------ busy pool: run inline, never wait */

static atomic_int g_hold;       /* 1 while the holder's task keeps the pool busy */
static atomic_int g_hold_entered;

static void hold_task(void *ctx, int64_t b, int64_t e)
{
    (void)ctx;
    (void)e;
    if (b != 0) return;
    atomic_store(&g_hold_entered, 1);
    double t0 = now_s();
    while (atomic_load(&g_hold) && now_s() - t0 < 10.0) sched_yield();
}

static void *holder_main(void *arg)
{
    (void)arg;
    fl_parallel_for(2, hold_task, NULL);
    return NULL;
}

static void test_busy_inline(void)
{
    fl_set_num_threads(2);
    atomic_store(&g_hold, 1);
    atomic_store(&g_hold_entered, 0);
    pthread_t h;
    CHECK(pthread_create(&h, NULL, holder_main, NULL) == 0);
    while (!atomic_load(&g_hold_entered)) sched_yield();
    /* the pool is now busy with the holder's job: this call must run [0, 100) inline, at once */
    double t0 = now_s();
    rec_reset(&g_rec);
    fl_parallel_for(100, rec_task, &g_rec);
    double dt = now_s() - t0;
    check_split(&g_rec, 100, 1, "while the pool is busy");
    CHECK(dt < 1.0);
    atomic_store(&g_hold, 0);
    pthread_join(h, NULL);
    /* and the pool is usable again afterwards */
    rec_reset(&g_rec);
    fl_parallel_for(100, rec_task, &g_rec);
    check_split(&g_rec, 100, 2, "after the busy job");
    printf("call while the pool is busy ran inline in %.1f us: done\n", dt * 1e6);
}

/* ------------------------------------------------------------ nested calls */

typedef struct {
    recorder *inner[64];
    atomic_int outer_calls;
} nest_ctx;

typedef struct {
    nest_ctx *nc;
    int64_t b;
} nest_arg;

static void nest_outer(void *ctx, int64_t b, int64_t e)
{
    nest_ctx *nc = (nest_ctx *)ctx;
    atomic_fetch_add(&nc->outer_calls, 1);
    for (int64_t i = b; i < e; i++) {
        recorder *r = nc->inner[i];
        fl_parallel_for(40, rec_task, r);
        /* inner call ran inline: one call [0, 40) on this very thread */
        CHECK(atomic_load(&r->n_recs) == 1);
        CHECK(r->recs[0].b == 0 && r->recs[0].e == 40);
        CHECK(pthread_equal(r->recs[0].th, pthread_self()));
        fl_parallel_for_max(40, 2, rec_task, r);
        CHECK(atomic_load(&r->n_recs) == 2);
        CHECK(pthread_equal(r->recs[1].th, pthread_self()));
    }
}

static void test_nested(void)
{
    static recorder inner[8];
    nest_ctx nc;
    for (int th = 1; th <= 4; th++) {
        fl_set_num_threads(th);
        for (int i = 0; i < 8; i++) {
            rec_reset(&inner[i]);
            nc.inner[i] = &inner[i];
        }
        atomic_store(&nc.outer_calls, 0);
        fl_parallel_for(8, nest_outer, &nc);
        CHECK(atomic_load(&nc.outer_calls) == th);
        for (int i = 0; i < 8; i++)
            for (int j = 0; j < 40; j++) CHECK(atomic_load(&inner[i].counts[j]) == 2);
    }
    printf("nested calls run inline: done\n");
}

/* ------------------------------------------------------------ set_num_threads */

static void test_set_num_threads(void)
{
    static const int seq[] = {4, 2, 1, 3, 8, 2, 16, 1, 2};
    for (size_t i = 0; i < sizeof seq / sizeof seq[0]; i++) {
        fl_set_num_threads(seq[i]);
        CHECK(fl_get_num_threads() == seq[i]);
        rec_reset(&g_rec);
        fl_parallel_for(100, rec_task, &g_rec);
        check_split(&g_rec, 100, seq[i], "after fl_set_num_threads");
    }
    fl_set_num_threads(0);
    CHECK(fl_get_num_threads() == 1);
    fl_set_num_threads(-7);
    CHECK(fl_get_num_threads() == 1);
    fl_set_num_threads(1 << 30);
    CHECK(fl_get_num_threads() == FL_POOL_MAX_THREADS);
    fl_set_num_threads(3);
    /* shutdown and lazy rebuild */
    fl_pool_shutdown();
    rec_reset(&g_rec);
    fl_parallel_for(30, rec_task, &g_rec);
    check_split(&g_rec, 30, 3, "after fl_pool_shutdown");
    printf("fl_set_num_threads changes / shutdown + rebuild: done\n");
}

/* ------------------------------------------------------------ fork */

static int child_jobs(void)
{
    int bad = g_failures;
    for (int th = 1; th <= 4; th++) {
        fl_set_num_threads(th);
        for (int64_t n = 0; n < 50; n += 7) {
            rec_reset(&g_rec);
            fl_parallel_for(n, rec_task, &g_rec);
            int T = (int64_t)th < n ? th : (int)(n < 1 ? 1 : n);
            check_split(&g_rec, n, T, "forked child");
        }
    }
    return g_failures == bad ? 0 : 1;
}

static int run_in_child(int (*body)(void))
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) _exit(body());
    int status = 0;
    if (waitpid(pid, &status, 0) != pid) return -1;
    if (!WIFEXITED(status)) return -2;
    return WEXITSTATUS(status);
}

static atomic_int g_bg_stop;
static void *bg_jobs(void *arg)
{
    caller_arg *a = (caller_arg *)arg;
    enum { N = 64 };
    int64_t in[N], out[N];
    while (!atomic_load(&g_bg_stop)) {
        for (int i = 0; i < N; i++) in[i] = i;
        sq_ctx c = {in, out};
        fl_parallel_for(N, sq_task, &c);
        for (int i = 0; i < N; i++)
            if (out[i] != in[i] * in[i] + 1) a->errors++;
    }
    return NULL;
}

static void test_fork(void)
{
    /* make sure the parent has a live pool */
    fl_set_num_threads(4);
    rec_reset(&g_rec);
    fl_parallel_for(100, rec_task, &g_rec);
    check_split(&g_rec, 100, 4, "parent before fork");
    int rc = run_in_child(child_jobs);
    CHECK(rc == 0);
    printf("fork child (idle pool in parent): exit code %d\n", rc);

    /* fork while another thread keeps the pool busy */
    pthread_t bg;
    caller_arg a = {0, 0};
    atomic_store(&g_bg_stop, 0);
    fl_set_num_threads(2);
    CHECK(pthread_create(&bg, NULL, bg_jobs, &a) == 0);
    int worst = 0;
    for (int i = 0; i < 10; i++) {
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
        rc = run_in_child(child_jobs);
        if (rc != 0) worst = rc;
    }
    atomic_store(&g_bg_stop, 1);
    pthread_join(bg, NULL);
    CHECK(worst == 0);
    CHECK(a.errors == 0);
    printf("fork child x10 while pool busy in another thread: worst exit code %d, parent errors %d\n",
           worst, a.errors);

    /* parent still works after forking */
    fl_set_num_threads(3);
    rec_reset(&g_rec);
    fl_parallel_for(100, rec_task, &g_rec);
    check_split(&g_rec, 100, 3, "parent after fork");
}

/* ------------------------------------------------------------ FASTLOGITS_NUM_THREADS */

static int cpus_in_mask(void)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) == 0) return CPU_COUNT(&set);
    return (int)sysconf(_SC_NPROCESSORS_ONLN);
}

static int child_affinity(void)
{
    /* restrict to a single CPU: the default must follow the affinity mask */
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return 2;
    int first = -1;
    for (int i = 0; i < CPU_SETSIZE; i++)
        if (CPU_ISSET(i, &set)) {
            first = i;
            break;
        }
    if (first < 0) return 3;
    CPU_ZERO(&set);
    CPU_SET(first, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) return 4;
    unsetenv("FASTLOGITS_NUM_THREADS");
    if (fl_default_num_threads() != 1) return 5;
    if (fl_reset_default_num_threads() != 1 || fl_get_num_threads() != 1) return 6;
    setenv("FASTLOGITS_NUM_THREADS", "6", 1);
    if (fl_default_num_threads() != 6) return 7;
    return 0;
}

static void test_env(void)
{
    int cpus = cpus_in_mask();
    if (cpus < 1) cpus = 1;
    struct {
        const char *v;
        int want; /* 0: the CPU count */
    } cases[] = {
        {"3", 3},       {"1", 1},         {" 5 ", 5},     {"+2", 2},       {"12\n", 12},
        {"0", 0},       {"-2", 0},        {"abc", 0},     {"4x", 0},       {"", 0},
        {" ", 0},       {"2.5", 0},       {"0x10", 0},    {"99999999999", 0}, {"2147483648", 0},
        {"2147483647", FL_POOL_MAX_THREADS}, {"5000", FL_POOL_MAX_THREADS}, {"007", 7},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        setenv("FASTLOGITS_NUM_THREADS", cases[i].v, 1);
        int want = cases[i].want ? cases[i].want : cpus;
        int got = fl_default_num_threads();
        if (got != want) {
            fprintf(stderr, "FASTLOGITS_NUM_THREADS='%s': got %d want %d\n", cases[i].v, got, want);
            g_failures++;
        }
    }
    unsetenv("FASTLOGITS_NUM_THREADS");
    CHECK(fl_default_num_threads() == cpus);
    setenv("FASTLOGITS_NUM_THREADS", "5", 1);
    CHECK(fl_reset_default_num_threads() == 5);
    CHECK(fl_get_num_threads() == 5);
    rec_reset(&g_rec);
    fl_parallel_for(100, rec_task, &g_rec);
    check_split(&g_rec, 100, 5, "after fl_reset_default_num_threads");
    unsetenv("FASTLOGITS_NUM_THREADS");
    CHECK(fl_reset_default_num_threads() == cpus);
    int rc = run_in_child(child_affinity);
    CHECK(rc == 0);
    printf("FASTLOGITS_NUM_THREADS parsing (%d CPUs in mask), affinity child exit code %d: done\n",
           cpus, rc);
}

/* ------------------------------------------------------------ idle CPU */

static void test_idle(void)
{
    fl_set_num_threads(4);
    for (int i = 0; i < 100; i++) {
        rec_reset(&g_rec);
        fl_parallel_for(64, rec_task, &g_rec);
    }
    struct timespec ts = {0, 50000000};
    nanosleep(&ts, NULL); /* let the spinning phase end */
    double c0 = cpu_s(), w0 = now_s();
    ts.tv_nsec = 300000000;
    nanosleep(&ts, NULL);
    double dc = cpu_s() - c0, dw = now_s() - w0;
    CHECK(dc < 0.02);
    printf("idle: %.3f ms CPU over %.0f ms wall with 3 live workers\n", dc * 1e3, dw * 1e3);
}

/* ------------------------------------------------------------ overhead */

static void empty_task(void *ctx, int64_t b, int64_t e)
{
    (void)ctx;
    (void)b;
    (void)e;
}

static void bench(void)
{
    fl_set_num_threads(2);
    for (int i = 0; i < 1000; i++) fl_parallel_for(2, empty_task, NULL); /* warm up */
    int reps = 200000;
    double t0 = now_s();
    for (int i = 0; i < reps; i++) fl_parallel_for(2, empty_task, NULL);
    double hot = (now_s() - t0) / reps * 1e6;
    /* after an idle gap (workers asleep): the wake-up cost */
    double cold = 0;
    int creps = 200;
    for (int i = 0; i < creps; i++) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
        double t1 = now_s();
        fl_parallel_for(2, empty_task, NULL);
        cold += now_s() - t1;
    }
    cold = cold / creps * 1e6;
    fl_set_num_threads(1);
    t0 = now_s();
    for (int i = 0; i < reps; i++) fl_parallel_for(2, empty_task, NULL);
    double serial = (now_s() - t0) / reps * 1e6;
    printf("overhead of empty fl_parallel_for(2 blocks): 2 threads back-to-back %.3f us, "
           "2 threads after 1 ms idle %.3f us, 1 thread (inline) %.4f us\n",
           hot, cold, serial);
}

int main(int argc, char **argv)
{
    int quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    /* setenv before first use is honoured */
    const char *saved = getenv("FASTLOGITS_NUM_THREADS");
    char *saved_copy = saved ? strdup(saved) : NULL;
    setenv("FASTLOGITS_NUM_THREADS", "3", 1);
    CHECK(fl_get_num_threads() == 3);
    rec_reset(&g_rec);
    fl_parallel_for(10, rec_task, &g_rec);
    check_split(&g_rec, 10, 3, "first use with FASTLOGITS_NUM_THREADS=3");
    if (saved_copy) {
        setenv("FASTLOGITS_NUM_THREADS", saved_copy, 1);
        free(saved_copy);
    } else {
        unsetenv("FASTLOGITS_NUM_THREADS");
    }
    printf("FASTLOGITS_NUM_THREADS=3 before first use: get=%d\n", 3);

    test_coverage();
    test_huge();
    test_nested();
    test_busy_inline();
    test_set_num_threads();
    test_concurrent(2);
    test_concurrent(4);
    test_concurrent_set();
    test_fork();
    test_env();
    test_idle();
    if (!quick) bench();
    fl_pool_shutdown();

    if (g_failures) {
        printf("FAILED: %d check(s)\n", g_failures);
        return 1;
    }
    printf("all pool tests passed\n");
    return 0;
}
