/* test_pool.c: standalone test of fl_pool, on POSIX and Windows.
 *
 * build: cc -O2 -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -pthread csrc/fl_pool.c csrc/tests/test_pool.c
 * Windows (MinGW-w64, run under wine by scripts/test_pool.sh):
 *   x86_64-w64-mingw32-gcc -O2 -std=c11 -Wall -Wextra -Werror csrc/fl_pool.c csrc/tests/test_pool.c
 * also run under -fsanitize=thread (the program sets TSan's die_after_fork=0 itself, see below)
 * and -fsanitize=address,undefined. Exit status 0 on success. Prints the overhead of an empty
 * fl_parallel_for at the end (argument "--quick" skips the benchmark). The fork and affinity
 * tests are POSIX only; everything else runs on both.
 */
#include "../fl_pool.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_os.h"
#if !defined(_WIN32)
#include <sys/wait.h>
#endif

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

/* ------------------------------------------------------------ recording task */

#define MAX_RECS 4096
#define MAX_BLOCKS 5000

typedef struct {
    int64_t b, e;
    test_tid th;
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
        r->recs[k].th = test_self();
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
/* ranges that check_split saw run on a worker thread rather than the caller: a pool that
   only ever ran jobs inline (the former Windows fallback, or workers that never start) would
   pass the split checks with T = 1 only, but the count proves the workers do run */
static long g_on_workers = 0;

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
                if (test_same_thread(sorted[u].th, sorted[t].th) && !test_same_thread(sorted[t].th, test_self()))
                    bad = 1;
        }
        if (!test_same_thread(sorted[0].th, test_self())) bad = 1;
        for (int t = 1; t < T; t++) g_on_workers += !test_same_thread(sorted[t].th, test_self());
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
    CHECK(g_on_workers > 0);
    printf("coverage/static split: done, %ld ranges run by worker threads\n", g_on_workers);
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

/* floor(t * n / d) for 0 <= t <= d <= 8 and 0 <= n < 2^63 without 128-bit integers: long
   division of t*n = (t*hi)*2^32 + t*lo by d, in two 32-bit digits (every step fits in 64 bits);
   a different computation from the pool's own split_point */
static int64_t floor_div(int t, int64_t n, int d)
{
    uint64_t hi = (uint64_t)n >> 32, lo = (uint64_t)n & 0xffffffffu;
    uint64_t a = (uint64_t)t * hi, q1 = a / (uint64_t)d, r1 = a % (uint64_t)d;
    uint64_t q0 = ((r1 << 32) + (uint64_t)t * lo) / (uint64_t)d;
    return (int64_t)((q1 << 32) + q0);
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
        /* each range is [t*n/7, (t+1)*n/7) for some t (products beyond 64 bits: floor_div) */
        int found = 0;
        for (int t = 0; t < 7; t++)
            if (s.lo[i] == floor_div(t, n, 7) && s.hi[i] == floor_div(t + 1, n, 7)) found = 1;
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
    test_thread t[8];
    caller_arg a[8];
    for (int i = 0; i < 8; i++) {
        a[i].id = i;
        a[i].errors = 0;
        CHECK(test_thread_create(&t[i], caller_main, &a[i]) == 0);
    }
    int errors = 0;
    for (int i = 0; i < 8; i++) {
        test_thread_join(t[i]);
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
        test_yield();
    }
    return NULL;
}

static void test_concurrent_set(void)
{
    test_thread s;
    atomic_store(&g_stop_setter, 0);
    CHECK(test_thread_create(&s, setter_main, NULL) == 0);
    test_thread t[4];
    caller_arg a[4];
    for (int i = 0; i < 4; i++) {
        a[i].id = i;
        a[i].errors = 0;
        CHECK(test_thread_create(&t[i], caller_main, &a[i]) == 0);
    }
    int errors = 0;
    for (int i = 0; i < 4; i++) {
        test_thread_join(t[i]);
        errors += a[i].errors;
    }
    atomic_store(&g_stop_setter, 1);
    test_thread_join(s);
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
    double t0 = test_now_s();
    while (atomic_load(&g_hold) && test_now_s() - t0 < 10.0) test_yield();
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
    test_thread h;
    CHECK(test_thread_create(&h, holder_main, NULL) == 0);
    while (!atomic_load(&g_hold_entered)) test_yield();
    /* the pool is now busy with the holder's job: this call must run [0, 100) inline, at once */
    double t0 = test_now_s();
    rec_reset(&g_rec);
    fl_parallel_for(100, rec_task, &g_rec);
    double dt = test_now_s() - t0;
    check_split(&g_rec, 100, 1, "while the pool is busy");
    CHECK(dt < 1.0);
    atomic_store(&g_hold, 0);
    test_thread_join(h);
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
        CHECK(test_same_thread(r->recs[0].th, test_self()));
        fl_parallel_for_max(40, 2, rec_task, r);
        CHECK(atomic_load(&r->n_recs) == 2);
        CHECK(test_same_thread(r->recs[1].th, test_self()));
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

#include "test_pool_process.h"

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
    double t0 = test_now_s();
    for (int i = 0; i < reps; i++) fl_parallel_for(2, empty_task, NULL);
    double hot = (test_now_s() - t0) / reps * 1e6;
    /* after an idle gap (workers asleep): the wake-up cost */
    double cold = 0;
    int creps = 200;
    for (int i = 0; i < creps; i++) {
        test_sleep_ms(1);
        double t1 = test_now_s();
        fl_parallel_for(2, empty_task, NULL);
        cold += test_now_s() - t1;
    }
    cold = cold / creps * 1e6;
    fl_set_num_threads(1);
    t0 = test_now_s();
    for (int i = 0; i < reps; i++) fl_parallel_for(2, empty_task, NULL);
    double serial = (test_now_s() - t0) / reps * 1e6;
    printf("overhead of empty fl_parallel_for(2 blocks): 2 threads back-to-back %.3f us, "
           "2 threads after 1 ms idle %.3f us, 1 thread (inline) %.4f us\n",
           hot, cold, serial);
}

int main(int argc, char **argv)
{
    int quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    /* setenv before first use is honoured */
    const char *saved = getenv("FASTLOGITS_NUM_THREADS");
    char saved_copy[64] = "";
    if (saved && strlen(saved) < sizeof saved_copy) strcpy(saved_copy, saved);
    test_setenv("FASTLOGITS_NUM_THREADS", "3");
    CHECK(fl_get_num_threads() == 3);
    rec_reset(&g_rec);
    fl_parallel_for(10, rec_task, &g_rec);
    check_split(&g_rec, 10, 3, "first use with FASTLOGITS_NUM_THREADS=3");
    if (saved_copy[0])
        test_setenv("FASTLOGITS_NUM_THREADS", saved_copy);
    else
        test_unsetenv("FASTLOGITS_NUM_THREADS");
    printf("FASTLOGITS_NUM_THREADS=3 before first use: get=%d\n", 3);

    test_coverage();
    test_huge();
    test_nested();
    test_busy_inline();
    test_set_num_threads();
    test_concurrent(2);
    test_concurrent(4);
    test_concurrent_set();
#if !defined(_WIN32)
    test_fork();
#endif
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
