/* fl_dispatch.c: pick the kernel table for this CPU once, and the public entry points.
 *
 * A path is usable when the CPU has the instructions (CPUID) and the OS saves the registers
 * they use (XGETBV: YMM state for AVX2, ZMM and opmask state for AVX-512; on macOS the kernel's
 * sysctl for AVX-512, see fl_os_avx512). The best usable path is chosen at first use;
 * fl_isa_select() lets FASTLOGITS_ISA force a lower one.
 *
 * Kernels run without the GIL, from any thread, while another thread may make the first call
 * or select a path: the table pointer is atomic, and each call reads it once, so a call runs
 * wholly on one table.
 */
#include <string.h>

#include "fastlogits.h"
#include "fl_atomic.h"
#include "fl_kernels.h"

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__) || defined(_M_IX86)
#define FL_X86 1
#if defined(_MSC_VER)
#include <intrin.h>
static void fl_cpuid(int leaf, int sub, unsigned r[4])
{
    int v[4];
    __cpuidex(v, leaf, sub);
    for (int i = 0; i < 4; i++) r[i] = (unsigned)v[i];
}
static unsigned long long fl_xgetbv(void) { return _xgetbv(0); }
#else
#include <cpuid.h>
static void fl_cpuid(int leaf, int sub, unsigned r[4])
{
    __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
}
static unsigned long long fl_xgetbv(void)
{
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}
#endif

static int fl_has_avx2(void)
{
    unsigned r[4];
    fl_cpuid(0, 0, r);
    if (r[0] < 7) return 0;
    fl_cpuid(1, 0, r);
    int osxsave = (r[2] >> 27) & 1, fma = (r[2] >> 12) & 1, f16c = (r[2] >> 29) & 1, popcnt = (r[2] >> 23) & 1;
    if (!osxsave || !fma || !f16c || !popcnt) return 0;
    if ((fl_xgetbv() & 0x6) != 0x6) return 0; /* XMM and YMM state */
    fl_cpuid(7, 0, r);
    return (r[1] >> 5) & 1;
}

#if defined(__APPLE__)
#include <sys/sysctl.h>

static int fl_sysctl_int(const char *name)
{
    int v = 0;
    size_t n = sizeof v;
    return sysctlbyname(name, &v, &n, NULL, 0) == 0 ? v : 0;
}

/* Is the Darwin kernel release (kern.osrelease, "21.3.0") at least major.minor? */
static int fl_darwin_at_least(int major, int minor)
{
    char rel[64];
    size_t n = sizeof rel - 1;
    if (sysctlbyname("kern.osrelease", rel, &n, NULL, 0) != 0) return 0;
    rel[n < sizeof rel ? n : sizeof rel - 1] = '\0';
    int v[2] = {0, 0};
    const char *p = rel;
    for (int i = 0; i < 2; i++, p++) {
        for (; *p >= '0' && *p <= '9'; p++) v[i] = 10 * v[i] + (*p - '0');
        if (*p != '.') break;
    }
    return v[0] > major || (v[0] == major && v[1] >= minor);
}

/* Darwin gives a thread AVX-512 state only at its first AVX-512 instruction, so XCR0 shows no
   ZMM or opmask state until then; the kernel tells through sysctl instead. Kernels before
   21.3 (macOS 12.2) could corrupt the opmask registers on return from a signal handler, so
   AVX-512 is used from 21.3 on only. Go's runtime (internal/cpu) applies the same rule. */
static int fl_os_avx512(void) { return fl_sysctl_int("hw.optional.avx512f") > 0 && fl_darwin_at_least(21, 3); }
#else
/* the OS saves the opmask, ZMM_Hi256 and Hi16_ZMM state */
static int fl_os_avx512(void) { return (fl_xgetbv() & 0xe6) == 0xe6; }
#endif

static int fl_has_avx512(void)
{
    unsigned r[4];
    if (!fl_has_avx2()) return 0;
    if (!fl_os_avx512()) return 0;
    fl_cpuid(7, 0, r);
    unsigned f = (r[1] >> 16) & 1, dq = (r[1] >> 17) & 1, bw = (r[1] >> 30) & 1, vl = (r[1] >> 31) & 1;
    return f && dq && bw && vl;
}
#endif

static void fl_subnormal_default(void);

typedef struct { const char *name; const fl_kernel_table *table; int (*usable)(void); } fl_path;

static int fl_always(void) { return 1; }

/* best first */
static const fl_path fl_paths[] = {
#if defined(FL_HAVE_AVX512)
    {"avx512", &fl_table_avx512, fl_has_avx512},
#endif
#if defined(FL_HAVE_AVX2)
    {"avx2", &fl_table_avx2, fl_has_avx2},
#endif
#if defined(FL_HAVE_NEON)
    {"neon", &fl_table_neon, fl_always},
#endif
    {"scalar", &fl_table_scalar, fl_always},
};
#define FL_NPATHS (sizeof(fl_paths) / sizeof(fl_paths[0]))

/* The table in use (a const fl_kernel_table *): NULL until the first call, replaced by
   fl_isa_select. */
static fl_atomic_ptr fl_active = NULL;

static const fl_kernel_table *fl_best_table(void)
{
    for (size_t i = 0; i < FL_NPATHS; i++)
        if (fl_paths[i].usable()) return fl_paths[i].table;
    return &fl_table_scalar;
}

static const fl_kernel_table *fl_table(void)
{
    const fl_kernel_table *t = (const fl_kernel_table *)fl_atomic_load_ptr(&fl_active);
    if (t) return t;
    /* first use: a path selected by another thread in the meantime is kept; the policy for
     * subnormal products is set before any kernel runs */
    fl_subnormal_default();
    fl_atomic_cas_ptr(&fl_active, NULL, fl_best_table());
    return (const fl_kernel_table *)fl_atomic_load_ptr(&fl_active);
}

const char *fl_isa_best(void)
{
    for (size_t i = 0; i < FL_NPATHS; i++)
        if (fl_paths[i].usable()) return fl_paths[i].name;
    return "scalar";
}

const char *fl_isa_name(void) { return fl_table()->name; }

int fl_isa_select(const char *name)
{
    static const char *known[] = {"scalar", "avx2", "avx512", "neon"};
    int is_known = 0;
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) is_known |= !strcmp(name, known[i]);
    if (!is_known) return 1;
    for (size_t i = 0; i < FL_NPATHS; i++) {
        if (!strcmp(fl_paths[i].name, name)) {
            if (!fl_paths[i].usable()) return 2;
            fl_subnormal_default(); /* as at first use, before any kernel of this table runs */
            fl_atomic_store_ptr(&fl_active, fl_paths[i].table);
            return 0;
        }
    }
    return 2; /* a known path this build or CPU does not have */
}

/* ---- non-temporal stores of reused outputs (fl_rowio.h, fl_stream_ok) ----
 * Whether streaming a large output past the caches pays depends on the CPU's memory system,
 * not on the ISA alone, so the policy is chosen here from the vendor, once, and can be set
 * (FASTLOGITS_STREAM_BYTES: fastlogits/_config.py). It streams outputs of at least min_bytes;
 * output rows (not a flat elementwise run) only when they have at least min_row bytes, the
 * vector stores at least min_store bytes, and, for rows that the kernel's plain path computes
 * in the output row itself (softmax, the cross-entropy gradient), only when in_place_rows.
 * Intel (Sapphire Rapids class): softmax(out=) 4096 x 32000 73-75 ms streamed against 98 with
 * plain stores: every output of 8 MB streams. AMD (Zen 4): non-temporal stores spread among a
 * row's exponentials cost more than the reads for ownership they spare, except 64-byte stores
 * in rows too long for the caches to hide those reads behind the exponentials: on AVX-512 the
 * float32 log_softmax of 8192 x 1000 was 1.11x slower streamed, of 4096 x 4096 1.09x, of
 * 1024 x 32000 (128 KB rows) 0.90x; with 32-byte stores (AVX2, and AVX-512's half-precision
 * rows) streaming was 1.06-1.56x slower at every length; rows computed in place were faster
 * plain at every length (softmax 1.14-1.50x, the gradient 1.12-1.33x). See
 * docs/performance.md, "Non-temporal stores by CPU". */
static fl_atomic_int fl_amd = -1;               /* the vendor: -1 not read yet */
static fl_atomic_i64 fl_stream_min = INT64_MIN; /* a policy set: INT64_MIN, the CPU's default */
static fl_atomic_i64 fl_stream_min_row = 0, fl_stream_min_store = 0, fl_stream_in_place = 1;

static int fl_cpu_is_amd(void)
{
    int amd = fl_atomic_load(&fl_amd);
    if (amd >= 0) return amd;
    amd = 0;  /* read once (CPUID traps to the hypervisor in a VM); every thread reads the same */
#if defined(FL_X86)
    unsigned r[4];
    char v[13];
    fl_cpuid(0, 0, r);
    memcpy(v, &r[1], 4);  /* EBX, EDX, ECX: "AuthenticAMD" */
    memcpy(v + 4, &r[3], 4);
    memcpy(v + 8, &r[2], 4);
    v[12] = '\0';
    amd = !strcmp(v, "AuthenticAMD") || !strcmp(v, "HygonGenuine");
#endif
    fl_atomic_store(&fl_amd, amd);
    return amd;
}

void fl_stream_default_policy(int64_t out[4])
{
    int amd = fl_cpu_is_amd();
    out[0] = (int64_t)8 << 20;
    out[1] = amd ? (int64_t)64 << 10 : 0;
    out[2] = amd ? 64 : 0;
    out[3] = !amd;
}

/* ---- products of subnormal values (flv_mul_tiny, flv_mul1p, AVX-512's 2^n scaling) ----
 * Intel cores compute a multiplication or FMA with a subnormal operand or result by a
 * microcode assist (40-100 cycles a vector), so the x86 primitives take such vectors through
 * exact double and integer arithmetic instead: the same bits, some 30 operations more a
 * vector. AMD cores (Zen 4 measured) take no assist for a subnormal operand, nor for the
 * subnormal results of VSCALEFPS or of an FMA: there the plain instruction is the faster way
 * to the same bits (softmax of 256 x 32000 randn * 20, one thread: see docs/performance.md,
 * "Subnormal products by CPU"). A multiplication of two normal values with a subnormal product
 * does stall on Zen 4 (AVX2's 2^n scaling as two multiplications: the wide softmax 2x slower),
 * so AVX2 keeps its integer form of that scaling on every CPU.
 * fl_plain_subnormals: 1 the plain instructions, 0 the assist-free forms, -1 the CPU's default
 * not read yet (taken as 0: the same bits either way). */
fl_atomic_int fl_plain_subnormals = -1;

int fl_subnormal_default_policy(void) { return fl_cpu_is_amd(); }

/* the CPU's default, unless a policy was set first */
static void fl_subnormal_default(void) { fl_atomic_cas(&fl_plain_subnormals, -1, fl_subnormal_default_policy()); }

int fl_subnormal_policy(void)
{
    fl_subnormal_default();
    return fl_atomic_load(&fl_plain_subnormals);
}

/* A call that runs while the policy changes may take either form for each vector: only its
 * speed depends on it. */
void fl_set_subnormal_policy(int plain)
{
    fl_atomic_store(&fl_plain_subnormals, plain < 0 ? fl_subnormal_default_policy() : plain != 0);
}

/* A call that runs while the policy changes may use a mix of the old and new bounds: only its
 * speed depends on them. */
void fl_set_stream_policy(int64_t min_bytes, int64_t min_row_bytes, int64_t min_store_bytes, int in_place_rows)
{
    fl_atomic_store_i64(&fl_stream_min_row, min_row_bytes > 0 ? min_row_bytes : 0);
    fl_atomic_store_i64(&fl_stream_min_store, min_store_bytes > 0 ? min_store_bytes : 0);
    fl_atomic_store_i64(&fl_stream_in_place, in_place_rows != 0);
    fl_atomic_store_i64(&fl_stream_min, min_bytes < 0 ? -1 : min_bytes);
}

void fl_stream_policy(int64_t out[4])
{
    int64_t m = fl_atomic_load_i64(&fl_stream_min);
    if (m == INT64_MIN) {
        fl_stream_default_policy(out);
        return;
    }
    out[0] = m;
    out[1] = fl_atomic_load_i64(&fl_stream_min_row);
    out[2] = fl_atomic_load_i64(&fl_stream_min_store);
    out[3] = fl_atomic_load_i64(&fl_stream_in_place);
}

int fl_softmax(const fl_arr *x, const fl_arr *y, fl_grid g, int mode) { return fl_table()->softmax(x, y, g, mode); }
int fl_row_reduce(const fl_arr *x, const fl_arr *out, fl_grid g, int what) { return fl_table()->row_reduce(x, out, g, what); }
int fl_elementwise(const fl_arr *x, const fl_arr *y, fl_grid g, int op) { return fl_table()->elementwise(x, y, g, op); }
int fl_argmax(const fl_arr *x, const fl_arr *out, fl_grid g) { return fl_table()->argmax(x, out, g); }
int fl_topk(const fl_arr *x, const fl_arr *values, const fl_arr *indices, fl_grid g, int64_t k) { return fl_table()->topk(x, values, indices, g, k); }
int fl_threshold(const fl_arr *x, const fl_arr *out, fl_grid g, double t) { return fl_table()->threshold(x, out, g, t); }
double fl_stream_read(const float *src, int64_t n) { return fl_table()->stream_read(src, n); }
void fl_stream_copy(float *dst, const float *src, int64_t n) { fl_table()->stream_copy(dst, src, n); }
double fl_math_probe(int what, int64_t reps) { return fl_table()->math_probe(what, reps); }
int fl_bce(const fl_arr *x, const fl_arr *y, const fl_arr *w, const fl_arr *pw, const fl_arr *loss,
           const fl_arr *grad, fl_grid g, const fl_bce_opts *o, fl_rsum *total)
{
    return fl_table()->bce(x, y, w, pw, loss, grad, g, o, total);
}
int fl_check_binary_target(const fl_arr *y, fl_grid g) { return fl_table()->check_binary_target(y, g); }
int fl_cross_entropy(const fl_ce_args *args, fl_grid g, fl_ce_result *res) { return fl_table()->cross_entropy(args, g, res); }
int fl_score(const fl_arr *x, const fl_arr *target, const fl_arr *weight, fl_grid g, const fl_score_opts *o, fl_rsum *acc)
{
    return fl_table()->score(x, target, weight, g, o, acc);
}
void fl_score_pc_fold(const fl_score_opts *o, int64_t c)
{
    fl_table()->score_pc_fold(o, c);
}
int fl_sequence_scores(const fl_seq_args *a, fl_grid g, fl_rsum *logprob, int64_t *count, uint8_t *greedy,
                       int64_t *first_bad)
{
    return fl_table()->sequence_scores(a, g, logprob, count, greedy, first_bad);
}

/* ---- decoding (API section 8) ---- */
#include "fl_philox.h"
int fl_filter_logits(const fl_dec_args *a, fl_grid g) { return fl_table()->filter_logits(a, g); }
int fl_sample(const fl_dec_args *a, fl_grid g, int64_t *first_bad) { return fl_table()->sample(a, g, first_bad); }
int fl_token_logprobs(const fl_lp_args *a, fl_grid g, int64_t *first_bad) { return fl_table()->token_logprobs(a, g, first_bad); }
int fl_apply_penalties(const fl_pen_args *a, fl_grid g, int64_t *first_bad) { return fl_table()->apply_penalties(a, g, first_bad); }
void fl_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) { fl_philox4x32(ctr, key, 10, out); }
