/* test_math.c: accuracy and semantics tests of one ISA build of fl_simd.h.
 *
 *   cc -O2 -std=c11 -DFL_ISA=N [ISA flags] test_math.c -o test_math -lm -lpthread
 *   ./test_math [--quick | --stride N] [--threads N] [--plain-subnormals] [--only exp|exp_neg|exp_fast|exp_neg_normal|exp_fast_normal|exp_shift|exp_fast_shift|log|log1p|f16|bf16|double] [--bench]
 *
 * Default is exhaustive: flv_exp over every float32 bit pattern, flv_log over every
 * non-negative float (negatives sampled), flv_log1p over every float in [-1, inf] (below -1
 * sampled), float32 -> f16/bf16 narrowing over every float, and all 65536 f16/bf16 widenings,
 * each against double-precision libm (ULP error measured against the unrounded double result;
 * inf counts as 2^128). --quick (or --stride N) samples every N-th bit pattern instead, plus
 * dense windows around the edges. The scalar double functions of fl_scalar_math.h are checked
 * against long double libm on random samples. --plain-subnormals tests the x86 primitives'
 * plain forms of products of subnormal values (the AMD default, fl_dispatch.c) instead of their
 * assist-free ones. Exits 1 if any limit (2 ULP) is broken. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <math.h>
#include <time.h>
#include <pthread.h>
#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#include <unistd.h>
#define HAVE_MMAP 1
#endif
#include "../fl_simd.h"

/* the subnormal products' policy, which the extension keeps in fl_dispatch.c */
fl_atomic_int fl_plain_subnormals = 0;

#define ULP_LIMIT 2.0

static uint64_t g_stride = 1;
static int g_threads = 2;
static int g_fail = 0;
static const char *g_only = NULL; /* --only exp|log|log1p|f16|bf16|double: run that sweep alone */
static int want(const char *name) { return g_only == NULL || strcmp(g_only, name) == 0; }

static const char *isa_name(void)
{
    switch (FL_ISA) {
    case FL_ISA_SCALAR: return "scalar";
    case FL_ISA_AVX2: return "avx2";
    case FL_ISA_AVX512: return "avx512";
    case FL_ISA_NEON: return "neon";
    }
    return "?";
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* CPU time of this thread: the benchmark's rate stays meaningful on a busy machine */
static double cpu_s(void)
{
#ifdef CLOCK_THREAD_CPUTIME_ID
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
#else
    return now_s();
#endif
}

/* ---- ULP error of a float result y against an exact-ish double reference r ---- */
static double ulp_err_f(float y, double r)
{
    if (r != r) return y != y ? 0.0 : 1e30;
    if (y != y) return 1e30;
    double ra = fabs(r);
    if (ra >= 0x1p128) { /* true result overflows float: inf of the right sign is exact */
        if (isinf(y) && (y > 0) == (r > 0)) return 0.0;
        if (isinf(r)) return 1e30;
        /* finite y: measure as usual against r */
    }
    double yd = isinf(y) ? copysign(0x1p128, (double)y) : (double)y;
    if (isinf(r)) return yd == r ? 0.0 : 1e30;
    double ulp;
    if (ra < 0x1p-126) ulp = 0x1p-149;
    else {
        uint64_t b; memcpy(&b, &ra, 8);
        /* ra in [2^e, 2^(e+1)): ulp = 2^(e-23), built from the exponent field */
        b = ((b >> 52) - 23) << 52;
        memcpy(&ulp, &b, 8);
    }
    return fabs(yd - r) / ulp;
}

static double ulp_err_d(double y, long double r)
{
    if (r != r) return y != y ? 0.0 : 1e30;
    if (y != y) return 1e30;
    if (isinf(y) || isinf((double)r)) {
        if ((double)r == y) return 0.0;
        long double yl = isinf(y) ? copysignl(0x1p1024L, (long double)y) : (long double)y;
        long double ra = fabsl(r);
        if (ra >= 0x1p1024L && isinf(y) && (y > 0) == (r > 0)) return 0.0;
        int e; frexpl(ra, &e);
        return (double)(fabsl(yl - r) / ldexpl(1.0L, e - 53));
    }
    long double ra = fabsl(r);
    long double ulp;
    if (ra < 0x1p-1022L) ulp = 0x1p-1074L;
    else { int e; frexpl(ra, &e); ulp = ldexpl(1.0L, e - 53); }
    return (double)(fabsl((long double)y - r) / ulp);
}

/* ---- float32 lane functions, range sweeps on threads ---- */
/* FN_EXPN, FN_EXPF: flv_exp_neg and flv_exp_neg_fast, defined for x <= 0 (and nan);
 * FN_EXPNN, FN_EXPFN: flv_exp_neg_normal and flv_exp_neg_fast_normal, for x in
 * [FL_EXPF_NORMAL_LO, 0], which must give the same bits as the first two;
 * FN_EXPS, FN_EXPSF: flv_exp_shift_normal and flv_exp_fast_shift_normal, exp(x) * 2^-sn over
 * x in [-150, 64] with sn = shift_of(x), results from 2^-120.5 to 2^0.5 (against
 * exp(x - sn ln2) in double) */
enum { FN_EXP, FN_EXPN, FN_EXPF, FN_EXPNN, FN_EXPFN, FN_EXPS, FN_EXPSF, FN_LOG, FN_LOG1P, FN_F16, FN_BF16, FN_COUNT };
static const char *fn_name[FN_COUNT] = {"exp", "exp_neg", "exp_fast", "exp_neg_normal", "exp_fast_normal", "exp_shift",
                                        "exp_fast_shift", "log", "log1p", "f32->f16", "f32->bf16"};

/* the shift of the exp_shift sweeps for x: round(x log2 e) plus 0..119 by the bits of x, so
 * that x log2(e) - sn covers [-120.5, 0.5] */
static float shift_of(float x)
{
    return (float)(nearbyint((double)x * 1.4426950408889634) + (double)(fl_f2u(x) % 120u));
}
/* for |x| < 2^-25 the references need no libm call: exp(x) = 1 + x and log1p(x) = x - x^2/2
 * to far below float resolution (relative error x^2/2 resp. x^2/3 < 2^-50) */
static int g_cheap_tiny = 0;

typedef struct {
    double maxerr;
    uint32_t worst;
    float worst_y;
    uint64_t n, over1, bad, scalar_diff;
} stat_t;

typedef struct {
    int fn;
    uint64_t lo, hi, stride; /* bit patterns lo, lo+stride, ... <= hi */
    int tid, nthreads, cheap_tiny;
    stat_t st;
} job_t;

#define BATCH 4096
#define CHUNK (1u << 18)

static void eval_batch(int fn, const float *in, float *out, uint16_t *h, int nb)
{
    for (int i = 0; i < nb; i += FL_W) {
        flv x = flv_load(in + i);
        switch (fn) {
        case FN_EXP: flv_store(out + i, flv_exp(x)); break;
        case FN_EXPN: flv_store(out + i, flv_exp_neg(x)); break;
        case FN_EXPF: flv_store(out + i, flv_exp_neg_fast(x)); break;
        case FN_EXPNN:
        case FN_EXPFN: {
            /* the same bits as flv_exp_neg(_fast), or a NaN that the sweep reports */
            float a[FL_W], b[FL_W];
            flv_store(a, fn == FN_EXPNN ? flv_exp_neg_normal(x) : flv_exp_neg_fast_normal(x));
            flv_store(b, fn == FN_EXPNN ? flv_exp_neg(x) : flv_exp_neg_fast(x));
            for (int j = 0; j < FL_W; j++) out[i + j] = fl_f2u(a[j]) == fl_f2u(b[j]) ? a[j] : NAN;
            break;
        }
        case FN_EXPS:
        case FN_EXPSF: {
            float sn[FL_W];
            for (int j = 0; j < FL_W; j++) sn[j] = shift_of(in[i + j]);
            flv s = flv_load(sn);
            flv_store(out + i, fn == FN_EXPS ? flv_exp_shift_normal(x, s) : flv_exp_fast_shift_normal(x, s));
            break;
        }
        case FN_LOG: flv_store(out + i, flv_log(x)); break;
        case FN_LOG1P: flv_store(out + i, flv_log1p(x)); break;
        case FN_F16: flv_store_f16(h + i, x); break;
        case FN_BF16: flv_store_bf16(h + i, x); break;
        }
    }
}

static void *run_job(void *arg)
{
    job_t *j = (job_t *)arg;
    float *in = malloc(BATCH * sizeof(float)), *out = malloc(BATCH * sizeof(float));
    uint16_t *h = malloc(BATCH * sizeof(uint16_t));
    stat_t st = {0};
    uint64_t nitems = (j->hi - j->lo) / j->stride + 1;
    for (uint64_t c0 = (uint64_t)j->tid * CHUNK; c0 < nitems; c0 += (uint64_t)j->nthreads * CHUNK) {
        uint64_t c1 = c0 + CHUNK < nitems ? c0 + CHUNK : nitems;
        for (uint64_t b0 = c0; b0 < c1; b0 += BATCH) {
            int nb = (int)(c1 - b0 < BATCH ? c1 - b0 : BATCH);
            for (int i = 0; i < BATCH; i++)
                in[i] = fl_u2f((uint32_t)(j->lo + (b0 + (uint64_t)(i < nb ? i : 0)) * j->stride));
            eval_batch(j->fn, in, out, h, BATCH);
            for (int i = 0; i < nb; i++) {
                float x = in[i];
                double e;
                if (j->fn == FN_F16 || j->fn == FN_BF16) {
                    uint16_t ref = j->fn == FN_F16 ? fl_f32_to_f16(x) : fl_f32_to_bf16(x);
                    e = h[i] == ref ? 0.0 : 1e30;
                    if (e != 0.0 && st.bad < 5)
                        fprintf(stderr, "  %s(%08x) = %04x, fl_half.h gives %04x\n", fn_name[j->fn], fl_f2u(x), h[i], ref);
                    out[i] = 0;
                } else {
                    double r; float s;
                    /* the scalar twin is compared on every 16th input only (it costs as much as
                     * the reference) */
                    int twin = ((b0 + (uint64_t)i) & 15u) == 0;
                    double xd = (double)x;
                    int tiny = j->cheap_tiny && fabs(xd) < 0x1p-25;
                    if (j->fn == FN_EXP || j->fn == FN_EXPN || j->fn == FN_EXPNN) { r = tiny ? 1.0 + xd : exp(xd); s = twin ? fl_expf_s(x) : 0.0f; }
                    else if (j->fn == FN_EXPF || j->fn == FN_EXPFN) { r = tiny ? 1.0 + xd : exp(xd); s = twin ? fl_expf_fast_s(x) : 0.0f; }
                    else if (j->fn == FN_EXPS || j->fn == FN_EXPSF) {
                        float sn = shift_of(x);
                        r = exp(xd - (double)sn * 0.69314718055994530942);
                        s = !twin ? 0.0f : j->fn == FN_EXPS ? fl_expf_shift_s(x, sn) : fl_expf_fast_shift_s(x, sn);
                    }
                    else if (j->fn == FN_LOG) { r = log(xd); s = twin ? fl_logf_s(x) : 0.0f; }
                    else { r = tiny ? xd - 0.5 * xd * xd : log1p(xd); s = twin ? fl_log1pf_s(x) : 0.0f; }
                    e = ulp_err_f(out[i], r);
                    if (twin && fl_f2u(s) != fl_f2u(out[i]) && !(s != s && out[i] != out[i])) st.scalar_diff++;
                    /* signed zeros must be right too */
                    if (e == 0.0 && out[i] == 0.0f && r == 0.0 && !!signbit(out[i]) != !!signbit(r)) e = 1e30;
                }
                st.n++;
                if (e > 1.0) st.over1++;
                if (e > ULP_LIMIT) {
                    if (st.bad < 5 && j->fn < FN_F16)
                        fprintf(stderr, "  %s(%a [%08x]) = %a, ref %a (%g ulp)\n", fn_name[j->fn], x, fl_f2u(x), out[i],
                                j->fn <= FN_EXPSF ? exp((double)x - (j->fn >= FN_EXPS ? (double)shift_of(x) * 0.69314718055994530942 : 0.0)) : j->fn == FN_LOG ? log((double)x) : log1p((double)x), e);
                    st.bad++;
                }
                if (e > st.maxerr || st.n == 1) { st.maxerr = e; st.worst = fl_f2u(x); st.worst_y = out[i]; }
            }
        }
    }
    j->st = st;
    free(in); free(out); free(h);
    return NULL;
}

static void merge(stat_t *a, const stat_t *b)
{
    if (b->n && (b->maxerr > a->maxerr || a->n == 0)) { a->maxerr = b->maxerr; a->worst = b->worst; a->worst_y = b->worst_y; }
    a->n += b->n; a->over1 += b->over1; a->bad += b->bad; a->scalar_diff += b->scalar_diff;
}

static void sweep(int fn, uint64_t lo, uint64_t hi, uint64_t stride, stat_t *acc)
{
    job_t jobs[64];
    pthread_t th[64];
    int T = g_threads < 1 ? 1 : (g_threads > 64 ? 64 : g_threads);
    for (int t = 0; t < T; t++) {
        jobs[t].fn = fn; jobs[t].lo = lo; jobs[t].hi = hi; jobs[t].stride = stride;
        jobs[t].tid = t; jobs[t].nthreads = T; jobs[t].cheap_tiny = g_cheap_tiny;
        if (T == 1) run_job(&jobs[t]);
        else pthread_create(&th[t], NULL, run_job, &jobs[t]);
    }
    for (int t = 0; t < T; t++) {
        if (T > 1) pthread_join(th[t], NULL);
        merge(acc, &jobs[t].st);
    }
}

/* a sweep over [lo, hi]: every pattern when exhaustive, else strided plus the given dense windows */
typedef struct { uint32_t lo, hi; } range_t;

static void report(int fn, const stat_t *s, double secs, int is_ulp)
{
    if (is_ulp)
        printf("[%s] %-9s max %.3f ulp at x=%a (0x%08x -> %a); %llu inputs, %llu > 1 ulp, %llu > %g ulp, %llu of every 16th differ from scalar twin (%.1f s)\n",
               isa_name(), fn_name[fn], s->maxerr, fl_u2f(s->worst), s->worst, s->worst_y, (unsigned long long)s->n,
               (unsigned long long)s->over1, (unsigned long long)s->bad, ULP_LIMIT, (unsigned long long)s->scalar_diff, secs);
    else
        printf("[%s] %-9s %llu inputs, %llu mismatches vs fl_half.h (%.1f s)\n", isa_name(), fn_name[fn],
               (unsigned long long)s->n, (unsigned long long)s->bad, secs);
    if (s->bad) g_fail = 1;
    fflush(stdout);
}

static void test_fn(int fn, const range_t *full, int nfull, const range_t *sampled, int nsampled,
                    const range_t *dense, int ndense)
{
    stat_t acc = {0};
    double t0 = now_s();
    for (int i = 0; i < nfull; i++) sweep(fn, full[i].lo, full[i].hi, g_stride, &acc);
    /* ranges that are only sampled even in exhaustive mode (results all NaN etc.) */
    for (int i = 0; i < nsampled; i++) sweep(fn, sampled[i].lo, sampled[i].hi, g_stride > 257 ? g_stride : 257, &acc);
    if (g_stride > 1)
        for (int i = 0; i < ndense; i++) sweep(fn, dense[i].lo, dense[i].hi, 1, &acc);
    report(fn, &acc, now_s() - t0, fn < FN_F16);
}

#include "test_math_lanes.h"

/* ---- scalar double functions of fl_scalar_math.h vs long double libm ---- */
static void test_double(uint64_t nsamp)
{
    const char *names[3] = {"fl_exp_d", "fl_log_d", "fl_log1p_d"};
    for (int fn = 0; fn < 3; fn++) {
        double maxe = 0, worst = 0;
        uint64_t bad = 0;
        double t0 = now_s();
        for (uint64_t k = 0; k < nsamp; k++) {
            double x;
            uint64_t b = rnd64();
            int mode = (int)(k % 4);
            if (fn == 0) {
                if (mode == 0) x = -745.2 + 1455.0 * ((double)(b >> 11) * 0x1p-53);      /* whole range */
                else if (mode == 1) x = -1.0 + 2.0 * ((double)(b >> 11) * 0x1p-53);       /* near 0 */
                else if (mode == 2) x = -745.2 + 37.0 * ((double)(b >> 11) * 0x1p-53);    /* subnormal results */
                else x = fl_u2d((b & 0x80000000ffffffffull) | ((uint64_t)(0x3c0 + (b >> 32) % 0x49) << 52)); /* 2^-63..2^9 */
            } else if (fn == 1) {
                if (mode == 0) x = fl_u2d(b & 0x7fefffffffffffffull);                    /* any positive */
                else if (mode == 1) x = 0.5 + 1.5 * ((double)(b >> 11) * 0x1p-53);        /* near 1 */
                else if (mode == 2) x = fl_u2d(b & 0x000fffffffffffffull);               /* subnormal */
                else x = 1.0 + fl_u2d((b & 0x800fffffffffffffull) | ((uint64_t)(0x3a0 + (b >> 52) % 0x5f) << 52));
            } else {
                if (mode == 0) x = fl_u2d(b & 0x7fefffffffffffffull);
                else if (mode == 1) x = -1.0 + 2.0 * ((double)(b >> 11) * 0x1p-53);
                else if (mode == 2) x = fl_u2d((b & 0x800fffffffffffffull) | ((uint64_t)(0x3a0 + (b >> 52) % 0x5f) << 52));
                else x = -((double)(b >> 11) * 0x1p-53); /* (-1, 0] */
            }
            double y; long double r;
            if (fn == 0) { y = fl_exp_d(x); r = expl((long double)x); }
            else if (fn == 1) { y = fl_log_d(x); r = logl((long double)x); }
            else { y = fl_log1p_d(x); r = log1pl((long double)x); }
            double e = ulp_err_d(y, r);
            if (e > maxe) { maxe = e; worst = x; }
            if (e > ULP_LIMIT) { if (bad < 3) printf("  %s(%a) = %a, ref %La (%g ulp)\n", names[fn], x, y, r, e); bad++; }
        }
        printf("[%s] %-10s max %.3f ulp at x=%a; %llu samples, %llu > %g ulp (%.1f s)\n", isa_name(), names[fn], maxe, worst,
               (unsigned long long)nsamp, (unsigned long long)bad, ULP_LIMIT, now_s() - t0);
        if (bad) g_fail = 1;
    }
    /* fl_exp_dx_d: exp(x + dx) with dx up to 4 ulp(x), as a shift's rounding error would be */
    {
        double maxe = 0, worst = 0;
        uint64_t bad = 0;
        for (uint64_t k = 0; k < nsamp; k++) {
            double x = -700.0 + 700.0 * ((double)(rnd64() >> 11) * 0x1p-53);
            double u = nextafter(fabs(x), INFINITY) - fabs(x);
            double dx = (((double)(rnd64() >> 11) * 0x1p-53) - 0.5) * 8.0 * u;
            double e = ulp_err_d(fl_exp_dx_d(x, dx), expl((long double)x + (long double)dx));
            if (e > maxe) { maxe = e; worst = x; }
            if (e > ULP_LIMIT) { if (bad < 3) printf("  fl_exp_dx_d(%a, %a) %g ulp\n", x, dx, e); bad++; }
        }
        printf("[%s] fl_exp_dx_d max %.3f ulp at x=%a; %llu samples, %llu > %g ulp\n", isa_name(), maxe, worst,
               (unsigned long long)nsamp, (unsigned long long)bad, ULP_LIMIT);
        /* clamped arguments ignore the correction: a shift of 1e30-sized values can leave a
         * rounding error of 1e14 beside an argument far below exp's range */
        if (!(fl_exp_dx_d(-4830.0, 1e14) == 0.0 && fl_exp_dx_d(-4830.0, -1e14) == 0.0 &&
              fl_exp_dx_d(-746.0, 1e-13) == 0.0 && fl_exp_dx_d(800.0, -1e3) == INFINITY)) {
            printf("[%s] FAIL fl_exp_dx_d of a clamped argument\n", isa_name());
            bad = 1;
        }
        if (bad) g_fail = 1;
    }
    /* edges */
    const double ex[] = {709.78, 709.782712893384, -708.39, -708.4, -744.44, -745.13, -745.1332191019411, 1e-300, -1e-300, 0.5 * 0.6931471805599453, -0.5 * 0.6931471805599453};
    for (size_t i = 0; i < sizeof ex / sizeof ex[0]; i++) {
        double e = ulp_err_d(fl_exp_d(ex[i]), expl((long double)ex[i]));
        if (e > ULP_LIMIT) { printf("[%s] FAIL fl_exp_d(%a) %g ulp\n", isa_name(), ex[i], e); g_fail = 1; }
    }
}

/* ---- throughput of flv_exp in L1 ---- */
static volatile float g_sink;
static void bench(void)
{
    enum { N = 2048 };
    static float in[N], out[N];
    for (int i = 0; i < N; i++) in[i] = -20.0f + 40.0f * (float)i / N;
    const char *names[3] = {"exp", "log", "log1p"};
    for (int fn = 0; fn < 3; fn++) {
        if (fn) for (int i = 0; i < N; i++) in[i] = 0.001f + 100.0f * (float)i / N;
        long reps = 0;
        double t0 = now_s(), c0 = cpu_s(), t;
        do {
            for (int r = 0; r < 200; r++) {
                for (int i = 0; i < N; i += FL_W) {
                    flv x = flv_load(in + i);
                    flv_store(out + i, fn == 0 ? flv_exp(x) : fn == 1 ? flv_log(x) : flv_log1p(x));
                }
                g_sink = out[r & (N - 1)];
            }
            reps += 200;
            t = now_s() - t0;
        } while (t < 0.5);
        double c = cpu_s() - c0;
        printf("[%s] bench flv_%s: %.3g elements/s per CPU second (%.3g per wall second; one thread, %d-element array in L1)\n",
               isa_name(), names[fn], (double)reps * N / c, (double)reps * N / t, N);
    }
}

int main(int argc, char **argv)
{
    int do_bench = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) g_stride = 1021;
        else if (!strcmp(argv[i], "--stride") && i + 1 < argc) g_stride = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) g_threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--bench")) do_bench = 1;
        else if (!strcmp(argv[i], "--plain-subnormals")) fl_atomic_store(&fl_plain_subnormals, 1);
        else if (!strcmp(argv[i], "--only") && i + 1 < argc) g_only = argv[++i];
        else { fprintf(stderr, "usage: %s [--quick | --stride N] [--threads N] [--plain-subnormals] [--only exp|exp_neg|exp_fast|exp_neg_normal|exp_fast_normal|exp_shift|exp_fast_shift|log|log1p|f16|bf16|double] [--bench]\n", argv[0]); return 2; }
    }
    if (g_stride < 1) g_stride = 1;
    g_cheap_tiny = 1;
    printf("[%s] FL_W=%d, %s, %d threads%s\n", isa_name(), FL_W, g_stride == 1 ? "exhaustive" : "sampled", g_threads,
           fl_subnormals_plain() ? ", plain subnormal products" : "");
    double t0 = now_s();
    test_specials();
    test_mixed_lanes();
    test_masked_lanes();
    test_semantics();
    test_store_compress();
    test_halves();
    if (g_only != NULL && !(want("exp") || want("exp_neg") || want("exp_fast") || want("exp_neg_normal") || want("exp_fast_normal") || want("exp_shift") || want("exp_fast_shift") || want("log") || want("log1p") || want("f16") || want("bf16") || want("double"))) {
        fprintf(stderr, "unknown --only %s\n", g_only);
        return 2;
    }

    /* exp: every float in [-104, 104] (|x| < 2^-25 against 1 + x), the rest (results 0, inf
     * or NaN) sampled; edges dense when sampling */
    const range_t exp_full[] = {{0x00000000u, 0x42d00000u}, {0x80000000u, 0xc2d00000u}};
    const range_t exp_samp[] = {{0x42d00001u, 0x7fffffffu}, {0xc2d00001u, 0xffffffffu}};
    const range_t exp_dense[] = {
        {0x42b17000u, 0x42b18000u}, /* overflow threshold ~88.72 */
        {0x7f800000u, 0x7f800010u}, {0xff800000u, 0xff800010u}, /* inf, NaN */
        {0xc2ae0000u, 0xc2aefff0u}, /* results becoming subnormal, ~-87.3 */
        {0xc2cf0000u, 0xc2d00000u}, /* last subnormal results, ~-103.97 */
        {0x3e000000u, 0x3e008000u}, {0xbe000000u, 0xbe008000u}, /* reduction boundaries */
        {0x3eb17000u, 0x3eb18000u}, {0xbeb17000u, 0xbeb18000u}, /* +-ln2/2 */
        {0x32ffff00u, 0x33000100u}, {0xb2ffff00u, 0xb3000100u}, /* around 2^-25 */
        {0x337fff00u, 0x33800100u}, {0xb37fff00u, 0xb3800100u}, /* around 2^-24 */
    };
    if (want("exp")) test_fn(FN_EXP, exp_full, 2, exp_samp, 2, exp_dense, (int)(sizeof exp_dense / sizeof exp_dense[0]));
    /* the x <= 0 exponentials of the row sums: all of [-104, -0], the rest (to -inf, and the
     * negative NaNs) sampled */
    const range_t expn_full[] = {{0x80000000u, 0xc2d00000u}};
    const range_t expn_samp[] = {{0xc2d00001u, 0xffffffffu}};
    const range_t expn_dense[] = {
        {0xff800000u, 0xff800010u},                             /* -inf, NaN */
        {0xc2ae0000u, 0xc2aefff0u}, {0xc2cf0000u, 0xc2d00000u}, /* subnormal results */
        {0xbe000000u, 0xbe008000u}, {0xbeb17000u, 0xbeb18000u}, /* reduction boundaries, -ln2/2 */
        {0xb2ffff00u, 0xb3000100u}, {0xb37fff00u, 0xb3800100u}, /* around -2^-25, -2^-24 */
    };
    int nd = (int)(sizeof expn_dense / sizeof expn_dense[0]);
    if (want("exp_neg")) test_fn(FN_EXPN, expn_full, 1, expn_samp, 1, expn_dense, nd);
    if (want("exp_fast")) test_fn(FN_EXPF, expn_full, 1, expn_samp, 1, expn_dense, nd);
    const range_t expfn_full[] = {{0x80000000u, 0xc2ac0000u}}; /* [-86, -0] */
    if (want("exp_neg_normal")) test_fn(FN_EXPNN, expfn_full, 1, NULL, 0, expn_dense + 3, nd - 3);
    if (want("exp_fast_normal")) test_fn(FN_EXPFN, expfn_full, 1, NULL, 0, expn_dense + 3, nd - 3);
    /* the rows' exact-reduction exponentials: every x in [-150, 64] (FL_EXPF_SHIFT_XMAX below,
     * the largest max a row may shift by above), dense at the reduction boundaries */
    const range_t exps_full[] = {{0x00000000u, 0x42800000u}, {0x80000000u, 0xc3160000u}};
    const range_t exps_dense[] = {
        {0x3eb17000u, 0x3eb18000u}, {0xbeb17000u, 0xbeb18000u}, /* +-ln2/2 */
        {0xc3150000u, 0xc3160000u}, {0x427f0000u, 0x42800000u}, /* the ends */
    };
    int nsd = (int)(sizeof exps_dense / sizeof exps_dense[0]);
    if (want("exp_shift")) test_fn(FN_EXPS, exps_full, 2, NULL, 0, exps_dense, nsd);
    if (want("exp_fast_shift")) test_fn(FN_EXPSF, exps_full, 2, NULL, 0, exps_dense, nsd);

    const range_t log_full[] = {{0x00000000u, 0x7f800000u}};
    const range_t log_samp[] = {{0x7f800001u, 0xffffffffu}}; /* NaN in, NaN out */
    const range_t log_dense[] = {
        {0x00000000u, 0x00010000u}, {0x007f0000u, 0x00810000u}, /* subnormals, FLT_MIN */
        {0x3f340000u, 0x3f360000u}, /* around sqrt(1/2) */
        {0x3f7f0000u, 0x3f810000u}, /* around 1 */
        {0x7f7f0000u, 0x7f800000u},
    };
    if (want("log")) test_fn(FN_LOG, log_full, 1, log_samp, 1, log_dense, (int)(sizeof log_dense / sizeof log_dense[0]));

    const range_t l1p_full[] = {{0x00000000u, 0x7f800000u}, {0x80000000u, 0xbf800000u}};
    const range_t l1p_samp[] = {{0x7f800001u, 0x7fffffffu}, {0xbf800001u, 0xffffffffu}};
    const range_t l1p_dense[] = {
        {0x00000000u, 0x00010000u}, {0x80000000u, 0x80010000u},
        {0x32fff000u, 0x33001000u}, {0xb2fff000u, 0xb3001000u}, /* |x| around 2^-25 */
        {0x337ff000u, 0x33801000u}, {0xb37ff000u, 0xb3801000u}, /* 2^-24 */
        {0x33fff000u, 0x34001000u}, {0xb3fff000u, 0xb4001000u}, /* 2^-23 */
        {0xbe95f000u, 0xbe961000u}, /* x ~ sqrt(1/2) - 1 */
        {0x3ed3f000u, 0x3ed41000u}, /* x ~ sqrt(2) - 1 */
        {0xbf7f0000u, 0xbf800000u}, /* x -> -1 */
    };
    if (want("log1p")) test_fn(FN_LOG1P, l1p_full, 2, l1p_samp, 2, l1p_dense, (int)(sizeof l1p_dense / sizeof l1p_dense[0]));

    /* narrowing: every non-negative pattern; the sign is handled apart from the magnitude in
     * both implementations, so negatives are sampled */
    const range_t pos[] = {{0x00000000u, 0x7fffffffu}};
    const range_t neg[] = {{0x80000000u, 0xffffffffu}};
    const range_t half_dense[] = {{0x33000000u - 8, 0x33000000u + 0x10000}, {0x38800000u - 0x10000, 0x38800000u + 0x10000},
                                  {0x35800000u - 0x10000, 0x35800000u + 0x10000}, /* subnormal halves */
                                  {0x477fe000u, 0x47800100u},
                                  {0x7f800000u, 0x7f800100u}, {0xff800000u, 0xff800100u}, {0xb3000000u - 8, 0xb3001000u}};
    const range_t bf_dense[] = {{0x7f800000u, 0x7f810000u}, {0xff800000u, 0xff810000u}, {0x3f7f0000u, 0x3f810000u}};
    if (want("f16")) test_fn(FN_F16, pos, 1, neg, 1, half_dense, (int)(sizeof half_dense / sizeof half_dense[0]));
    if (want("bf16")) test_fn(FN_BF16, pos, 1, neg, 1, bf_dense, 3);

    if (want("double")) test_double(g_stride == 1 ? 4000000u : g_stride < 2000 ? 200000u : 50000u);
    if (do_bench) bench();
    printf("[%s] %s in %.1f s\n", isa_name(), g_fail ? "FAILED" : "all passed", now_s() - t0);
    return g_fail ? 1 : 0;
}
