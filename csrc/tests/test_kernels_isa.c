/* test_kernels_isa.c: every kernel of one SIMD path against the scalar twin, at the C level.
 *
 * Built with the kernel sources compiled twice (FL_ISA=0 and the path under test, e.g. NEON
 * through scripts/cross_neon.sh under qemu-user), it runs softmax, log_softmax, logsumexp,
 * entropy, sigmoid, log_sigmoid, argmax, top-k, cross-entropy (loss and gradient), the
 * per-sequence scores, BCE and the decoding kernels (sample, filter_logits, token_logprobs,
 * apply_penalties; Philox KAT) on random rows of several widths (tails included) with special
 * values, and compares the tables' results: float32 outputs within 4 ULP of each other, losses
 * within 1e-6 relative, predictions, counts and greedy flags equal. Exit status 0 when all
 * agree. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../fastlogits.h"
#include "../fl_half.h"
#include "../fl_kernels.h"
#include "../fl_rsum.h"

#ifndef FL_TEST_TABLE
#error "define FL_TEST_TABLE, e.g. fl_table_neon"
#endif

static int failures = 0;

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static double uniform(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

static int32_t ordered(float f)
{
    int32_t i;
    memcpy(&i, &f, 4);
    return i < 0 ? (int32_t)0x80000000 - i : i;
}

static void check_f32(const char *what, const float *a, const float *b, int64_t n, int64_t max_ulp)
{
    for (int64_t i = 0; i < n; i++) {
        if (isnan(a[i]) && isnan(b[i])) continue;
        if (a[i] == b[i]) continue;
        int64_t d = (int64_t)ordered(a[i]) - (int64_t)ordered(b[i]);
        if (isnan(a[i]) || isnan(b[i]) || llabs(d) > max_ulp) {
            printf("FAIL %s [%lld]: scalar %.9g vs path %.9g\n", what, (long long)i, a[i], b[i]);
            failures++;
            return;
        }
    }
}

static void check_rel(const char *what, double a, double b, double rtol)
{
    if ((isnan(a) && isnan(b)) || a == b) return;
    if (!(fabs(a - b) <= rtol * fabs(a))) {
        printf("FAIL %s: scalar %.17g vs path %.17g\n", what, a, b);
        failures++;
    }
}

static fl_arr rows(void *data, int32_t dtype, int64_t c) { fl_arr a = {data, dtype, 0, c, 1, 0}; return a; }
static fl_arr per_row(void *data, int32_t dtype) { fl_arr a = {data, dtype, 0, 1, 0, 0}; return a; }

static void run_shape(int64_t n, int64_t c)
{
    const fl_kernel_table *s = &fl_table_scalar, *v = &FL_TEST_TABLE;
    int64_t total = n * c;
    float *x = malloc(sizeof(float) * (size_t)total), *ya = malloc(sizeof(float) * (size_t)total),
          *yb = malloc(sizeof(float) * (size_t)total);
    float *ra = malloc(sizeof(float) * (size_t)n), *rb = malloc(sizeof(float) * (size_t)n);
    int64_t *ia = malloc(sizeof(int64_t) * (size_t)n * 3), *ib = malloc(sizeof(int64_t) * (size_t)n * 3);
    int64_t *target = malloc(sizeof(int64_t) * (size_t)n);
    float *bt = malloc(sizeof(float) * (size_t)total);
    for (int64_t i = 0; i < total; i++) {
        double u = uniform();
        x[i] = (float)((u - 0.5) * 24.0);
        if (u < 0.01) x[i] = -INFINITY;
        bt[i] = uniform() < 0.4f ? 1.0f : 0.0f;
    }
    for (int64_t r = 0; r < n; r++) target[r] = (int64_t)(uniform() * (double)c) % c;
    fl_grid g = {1, n, c};
    fl_arr ax = rows(x, FL_F32, c), aa = rows(ya, FL_F32, c), ab = rows(yb, FL_F32, c);
    char name[96];

    for (int mode = 0; mode < 2; mode++) {
        s->softmax(&ax, &aa, g, mode);
        v->softmax(&ax, &ab, g, mode);
        snprintf(name, sizeof name, "%s %lldx%lld", mode ? "log_softmax" : "softmax", (long long)n, (long long)c);
        check_f32(name, ya, yb, total, 4);
    }
    for (int what = 0; what < 2; what++) {
        fl_arr oa = per_row(ra, FL_F32), ob = per_row(rb, FL_F32);
        s->row_reduce(&ax, &oa, g, what);
        v->row_reduce(&ax, &ob, g, what);
        snprintf(name, sizeof name, "%s %lldx%lld", what ? "entropy" : "logsumexp", (long long)n, (long long)c);
        check_f32(name, ra, rb, n, 4);
    }
    for (int op = 0; op < 2; op++) {
        s->elementwise(&ax, &aa, g, op);
        v->elementwise(&ax, &ab, g, op);
        snprintf(name, sizeof name, "%s %lldx%lld", op ? "log_sigmoid" : "sigmoid", (long long)n, (long long)c);
        check_f32(name, ya, yb, total, 4);
    }
    {
        fl_arr oa = per_row(ia, FL_I64), ob = per_row(ib, FL_I64);
        s->argmax(&ax, &oa, g);
        v->argmax(&ax, &ob, g);
        if (memcmp(ia, ib, sizeof(int64_t) * (size_t)n)) { printf("FAIL argmax %lldx%lld\n", (long long)n, (long long)c); failures++; }
    }
    /* float16 and bfloat16 rows (argmax and top-k compare their bits as keys): some -0 and
     * NaNs of either sign among them */
    for (int32_t dt = FL_F16; dt == FL_F16 || dt == FL_BF16; dt = dt == FL_F16 ? FL_BF16 : -1) {
        uint16_t *h = malloc(sizeof(uint16_t) * (size_t)total);
        for (int64_t i = 0; i < total; i++) {
            double u = uniform();
            h[i] = dt == FL_F16 ? fl_f32_to_f16(x[i]) : fl_f32_to_bf16(x[i]);
            if (u < 0.002) h[i] = (uint16_t)(dt == FL_F16 ? 0x7e01 : 0xffc1);
            else if (u < 0.05) h[i] = 0x8000;
        }
        fl_arr hx = rows(h, dt, c), oa = per_row(ia, FL_I64), ob = per_row(ib, FL_I64);
        s->argmax(&hx, &oa, g);
        v->argmax(&hx, &ob, g);
        if (memcmp(ia, ib, sizeof(int64_t) * (size_t)n)) { printf("FAIL argmax dt %d %lldx%lld\n", (int)dt, (long long)n, (long long)c); failures++; }
        if (c >= 3) {
            fl_arr va = rows(ya, FL_F32, 3), vb = rows(yb, FL_F32, 3), ka = rows(ia, FL_I64, 3), kb = rows(ib, FL_I64, 3);
            s->topk(&hx, &va, &ka, g, 3);
            v->topk(&hx, &vb, &kb, g, 3);
            if (memcmp(ia, ib, sizeof(int64_t) * (size_t)n * 3)) { printf("FAIL topk dt %d %lldx%lld\n", (int)dt, (long long)n, (long long)c); failures++; }
        }
        free(h);
    }
    if (c >= 3) {
        fl_arr va = rows(ya, FL_F32, 3), vb = rows(yb, FL_F32, 3), ka = rows(ia, FL_I64, 3), kb = rows(ib, FL_I64, 3);
        s->topk(&ax, &va, &ka, g, 3);
        v->topk(&ax, &vb, &kb, g, 3);
        if (memcmp(ia, ib, sizeof(int64_t) * (size_t)n * 3)) { printf("FAIL topk %lldx%lld\n", (long long)n, (long long)c); failures++; }
    }
    {
        fl_ce_args a;
        memset(&a, 0, sizeof a);
        a.x = ax;
        a.target = per_row(target, FL_I64);
        a.ignore_index = -100;
        a.grad_scale_ce = 1.0 / (double)n;
        a.grad = aa;
        fl_ce_result r1, r2;
        s->cross_entropy(&a, g, &r1);
        a.grad = ab;
        v->cross_entropy(&a, g, &r2);
        snprintf(name, sizeof name, "cross_entropy %lldx%lld", (long long)n, (long long)c);
        check_rel(name, fl_rsum_value(&r1.ce), fl_rsum_value(&r2.ce), 1e-6);
        check_f32(name, ya, yb, total, 8);
    }
    for (int tempered = 0; tempered < 2; tempered++) {
        /* the 37 rows as sequences of 4 positions (the last one shorter: a 10 x 4 grid with
         * its last three tokens ignored), some tokens their row's argmax */
        int64_t tok[40], cnt1[10] = {0}, cnt2[10] = {0};
        uint8_t gr1[10], gr2[10];
        fl_rsum lp1[10], lp2[10];
        for (int64_t r = 0; r < 40; r++) tok[r] = r < n ? (r % 3 ? target[r] : ia[c >= 3 ? 3 * r : r]) : -100;
        for (int j = 0; j < 10; j++) { fl_rsum_init(&lp1[j]); fl_rsum_init(&lp2[j]); gr1[j] = gr2[j] = 1; }
        fl_seq_args q = {{x, FL_F32, 4 * c, c, 1, 0}, {tok, FL_I64, 4, 1, 0, 0}, -100, tempered ? 1.7 : 1.0};
        fl_grid gs = {10, 4, c};
        int64_t bad1, bad2;
        s->sequence_scores(&q, gs, lp1, cnt1, gr1, &bad1);
        v->sequence_scores(&q, gs, lp2, cnt2, gr2, &bad2);
        snprintf(name, sizeof name, "sequence_scores %lldx%lld T=%s", (long long)n, (long long)c, tempered ? "1.7" : "1");
        for (int j = 0; j < 10; j++) check_rel(name, fl_rsum_value(&lp1[j]), fl_rsum_value(&lp2[j]), 1e-6);
        if (memcmp(cnt1, cnt2, sizeof cnt1) || memcmp(gr1, gr2, sizeof gr1) || bad1 != bad2) {
            printf("FAIL %s: counts, greedy flags or bad rows differ\n", name);
            failures++;
        }
    }
    {
        fl_arr at = rows(bt, FL_F32, c);
        fl_bce_opts o = {FL_LOSS_BCE, 0.0, 0.0, 1.0, 1, 0};
        fl_rsum t1, t2;
        s->bce(&ax, &at, NULL, NULL, NULL, &aa, g, &o, &t1);
        v->bce(&ax, &at, NULL, NULL, NULL, &ab, g, &o, &t2);
        snprintf(name, sizeof name, "bce %lldx%lld", (long long)n, (long long)c);
        check_rel(name, fl_rsum_value(&t1), fl_rsum_value(&t2), 1e-6);
        check_f32(name, ya, yb, total, 4);
    }
    free(x); free(ya); free(yb); free(ra); free(rb); free(ia); free(ib); free(target); free(bt);
}

/* top-k (k = 3) of two half rows of 100 classes, a vector run apart from the first k: row 0
 * keeps +1 and holds +0.5 and, at 40, a negative NaN (offered only by its magnitude bits above
 * inf's: its key is below the worst kept's); row 1 keeps -1 and holds -4 and, at 60, a -0
 * (offered only by its key 0 above the negative worst key, a signed compare). The random rows
 * above hold negative NaNs only in bfloat16 and rarely keep a negative worst value. */
static void check_topk_half_signs(void)
{
    const fl_kernel_table *s = &fl_table_scalar, *v = &FL_TEST_TABLE;
    static const uint16_t f16[6] = {0x3c00, 0x3800, 0xfe01, 0xbc00, 0xc400, 0x8000};
    static const uint16_t bf16[6] = {0x3f80, 0x3f00, 0xffc1, 0xbf80, 0xc080, 0x8000};
    static const int64_t want[6] = {40, 0, 1, 60, 0, 1};
    for (int32_t dt = FL_F16; dt == FL_F16 || dt == FL_BF16; dt = dt == FL_F16 ? FL_BF16 : -1) {
        const uint16_t *b = dt == FL_F16 ? f16 : bf16; /* kept, filler, then the one to find, per row */
        uint16_t h[200];
        for (int r = 0; r < 2; r++)
            for (int j = 0; j < 100; j++) h[100 * r + j] = b[3 * r + (j < 3 ? 0 : 1)];
        h[40] = b[2];
        h[160] = b[5];
        float va[6], vb[6];
        int64_t ia[6], ib[6];
        fl_arr x = rows(h, dt, 100), ya = rows(va, FL_F32, 3), yb = rows(vb, FL_F32, 3), ka = rows(ia, FL_I64, 3),
               kb = rows(ib, FL_I64, 3);
        fl_grid g = {1, 2, 100};
        s->topk(&x, &ya, &ka, g, 3);
        v->topk(&x, &yb, &kb, g, 3);
        if (memcmp(ia, want, sizeof want) || memcmp(ib, want, sizeof want)) {
            printf("FAIL topk dt %d signs: scalar %lld %lld %lld | %lld %lld %lld, path %lld %lld %lld | %lld %lld %lld\n",
                   (int)dt, (long long)ia[0], (long long)ia[1], (long long)ia[2], (long long)ia[3], (long long)ia[4],
                   (long long)ia[5], (long long)ib[0], (long long)ib[1], (long long)ib[2], (long long)ib[3],
                   (long long)ib[4], (long long)ib[5]);
            failures++;
        }
    }
}

/* ---- decoding (API section 8): Philox-4x32-10 against Random123's known answers; sample and
 * filter_logits bitwise equal to the scalar path (their decisions use no fused or
 * ISA-dependent arithmetic), token_logprobs within 8 ULP, penalties equal ---- */
#include "../fl_philox.h"

static void check_philox(void)
{
    static const uint32_t kat[3][10] = {
        {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
        {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff,
         0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
        {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0,
         0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1},
    };
    for (int i = 0; i < 3; i++) {
        uint32_t out[4];
        fl_philox4x32(kat[i], kat[i] + 4, 10, out);
        if (memcmp(out, kat[i] + 6, sizeof out)) { printf("FAIL philox known answer %d\n", i); failures++; }
    }
}

static void run_decode(int64_t n, int64_t c)
{
    const fl_kernel_table *s = &fl_table_scalar, *v = &FL_TEST_TABLE;
    int64_t total = n * c;
    float *x = malloc(sizeof(float) * (size_t)total), *ya = malloc(sizeof(float) * (size_t)total),
          *yb = malloc(sizeof(float) * (size_t)total);
    double *set = malloc(sizeof(double) * 4 * (size_t)n);
    int64_t *iset = malloc(sizeof(int64_t) * 6 * (size_t)n), *ta = malloc(sizeof(int64_t) * (size_t)n),
            *tb = malloc(sizeof(int64_t) * (size_t)n);
    for (int64_t i = 0; i < total; i++) x[i] = (float)((uniform() - 0.5) * (i / c % 3 ? 12.0 : 0.5));
    for (int64_t r = 0; r < n; r++) {
        set[r] = r % 4 ? 0.5 + uniform() : 1.0;                           /* temperature */
        set[n + r] = r % 3 ? uniform() : 1.0;                              /* top_p */
        set[2 * n + r] = r % 5 ? 0.0 : 0.02;                               /* min_p */
        iset[r] = r % 2 ? (int64_t)(uniform() * (double)c) : 0;            /* top_k (0: off) */
        iset[n + r] = 1 + r % 3;                                           /* min_tokens_to_keep */
        iset[2 * n + r] = 1234 + r;                                        /* seed */
        iset[3 * n + r] = r;                                               /* offset */
        iset[4 * n + r] = 0;                                               /* stream */
        iset[5 * n + r] = (int64_t)(uniform() * (double)c) % c;            /* a token */
    }
    fl_grid g = {1, n, c};
    fl_dec_args a;
    memset(&a, 0, sizeof a);
    a.x = rows(x, FL_F32, c);
    a.temperature = per_row(set, FL_F64);
    a.top_p = per_row(set + n, FL_F64);
    a.min_p = per_row(set + 2 * n, FL_F64);
    a.top_k = per_row(iset, FL_I64);
    a.min_keep = per_row(iset + n, FL_I64);
    a.seed = per_row(iset + 2 * n, FL_I64);
    a.offset = per_row(iset + 3 * n, FL_I64);
    a.stream = per_row(iset + 4 * n, FL_I64);
    char name[96];
    int64_t bad1, bad2;
    a.out = per_row(ta, FL_I64);
    s->sample(&a, g, &bad1);
    a.out = per_row(tb, FL_I64);
    v->sample(&a, g, &bad2);
    snprintf(name, sizeof name, "sample %lldx%lld", (long long)n, (long long)c);
    if (bad1 != bad2 || memcmp(ta, tb, sizeof(int64_t) * (size_t)n)) { printf("FAIL %s\n", name); failures++; }
    a.out = rows(ya, FL_F32, c);
    s->filter_logits(&a, g);
    a.out = rows(yb, FL_F32, c);
    v->filter_logits(&a, g);
    snprintf(name, sizeof name, "filter_logits %lldx%lld", (long long)n, (long long)c);
    check_f32(name, ya, yb, total, 0);
    fl_lp_args l;
    memset(&l, 0, sizeof l);
    l.x = a.x;
    l.tokens = per_row(iset + 5 * n, FL_I64);
    l.temperature = a.temperature;
    l.logprob = per_row(ya, FL_F32);
    l.rank = per_row(ta, FL_I64);
    s->token_logprobs(&l, g, &bad1);
    l.logprob = per_row(yb, FL_F32);
    l.rank = per_row(tb, FL_I64);
    v->token_logprobs(&l, g, &bad2);
    snprintf(name, sizeof name, "token_logprobs %lldx%lld", (long long)n, (long long)c);
    check_f32(name, ya, yb, n, 8);
    if (memcmp(ta, tb, sizeof(int64_t) * (size_t)n)) { printf("FAIL %s rank\n", name); failures++; }
    memcpy(ya, x, sizeof(float) * (size_t)total);
    memcpy(yb, x, sizeof(float) * (size_t)total);
    fl_pen_args p;
    memset(&p, 0, sizeof p);
    p.prev = rows(iset + 5 * n, FL_I64, 1);
    p.len = 1;
    p.repetition = a.temperature;
    p.presence = a.top_p;
    p.frequency = a.top_p;
    p.x = rows(ya, FL_F32, c);
    s->apply_penalties(&p, g, &bad1);
    p.x = rows(yb, FL_F32, c);
    v->apply_penalties(&p, g, &bad2);
    snprintf(name, sizeof name, "apply_penalties %lldx%lld", (long long)n, (long long)c);
    check_f32(name, ya, yb, total, 0);
    free(x); free(ya); free(yb); free(set); free(iset); free(ta); free(tb);
}
/* ---- end of decoding ---- */

int main(void)
{
    /* 65-256: the tiles past FL_LANES_MAX_C (logsumexp to 128, entropy and cross-entropy to 112,
     * argmax to 96, top-k to 256) */
    static const int64_t widths[] = {1, 2, 3, 5, 10, 17, 33, 64, 65, 100, 128, 256, 1000, 4099};
    for (size_t i = 0; i < sizeof widths / sizeof widths[0]; i++) run_shape(37, widths[i]);
    check_topk_half_signs();
    check_philox();
    for (size_t i = 0; i < sizeof widths / sizeof widths[0]; i++) run_decode(37, widths[i]);
    printf("%s: %d failure(s)\n", FL_TEST_TABLE.name, failures);
    return failures ? 1 : 0;
}
