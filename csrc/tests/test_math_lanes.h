/* test_math_lanes.h: the lane-level checks of test_math.c: special values, half-precision
 * conversions, the vocabulary's semantics and vectors mixing lanes of every range.
 * Included once by test_math.c, where these tests stood (they use its helpers and
 * globals defined above the include). */
/* ---- special values, exact expectations ---- */
static int check_bits(const char *what, float got, float want)
{
    if (fl_f2u(got) == fl_f2u(want) || (got != got && want != want)) return 0;
    printf("[%s] FAIL %s: got %a (0x%08x), want %a (0x%08x)\n", isa_name(), what, got, fl_f2u(got), want, fl_f2u(want));
    g_fail = 1;
    return 1;
}

static float lane1(flv (*f)(flv), float x)
{
    float a[FL_W], b[FL_W];
    for (int i = 0; i < FL_W; i++) a[i] = x;
    flv_store(b, f(flv_load(a)));
    for (int i = 1; i < FL_W; i++)
        if (fl_f2u(b[i]) != fl_f2u(b[0])) { printf("[%s] FAIL lanes disagree\n", isa_name()); g_fail = 1; }
    return b[0];
}

static void test_specials(void)
{
    const float inf = INFINITY, nan = NAN;
    check_bits("exp(-inf)", lane1(flv_exp, -inf), 0.0f);
    check_bits("exp(+inf)", lane1(flv_exp, inf), inf);
    check_bits("exp(nan)", lane1(flv_exp, nan), nan);
    check_bits("exp(0)", lane1(flv_exp, 0.0f), 1.0f);
    check_bits("exp(-0)", lane1(flv_exp, -0.0f), 1.0f);
    check_bits("exp(-104)", lane1(flv_exp, -104.0f), 0.0f);
    check_bits("exp(89)", lane1(flv_exp, 89.0f), inf);
    check_bits("exp(-1e30)", lane1(flv_exp, -1e30f), 0.0f);
    check_bits("exp(1e30)", lane1(flv_exp, 1e30f), inf);
    check_bits("log(0)", lane1(flv_log, 0.0f), -inf);
    check_bits("log(-0)", lane1(flv_log, -0.0f), -inf);
    check_bits("log(-1)", lane1(flv_log, -1.0f), nan);
    check_bits("log(-inf)", lane1(flv_log, -inf), nan);
    check_bits("log(inf)", lane1(flv_log, inf), inf);
    check_bits("log(1)", lane1(flv_log, 1.0f), 0.0f);
    check_bits("log(nan)", lane1(flv_log, nan), nan);
    check_bits("log(min subnormal)", lane1(flv_log, 0x1p-149f), (float)log(0x1p-149));
    check_bits("log1p(-1)", lane1(flv_log1p, -1.0f), -inf);
    check_bits("log1p(-2)", lane1(flv_log1p, -2.0f), nan);
    check_bits("log1p(-inf)", lane1(flv_log1p, -inf), nan);
    check_bits("log1p(inf)", lane1(flv_log1p, inf), inf);
    check_bits("log1p(0)", lane1(flv_log1p, 0.0f), 0.0f);
    check_bits("log1p(-0)", lane1(flv_log1p, -0.0f), -0.0f);
    check_bits("log1p(nan)", lane1(flv_log1p, nan), nan);
    check_bits("log1p(min subnormal)", lane1(flv_log1p, 0x1p-149f), 0x1p-149f);
    check_bits("log1p(FLT_MAX)", lane1(flv_log1p, 0x1.fffffep127f), (float)log1p(0x1.fffffep127));
    /* the same for the scalar functions */
    check_bits("fl_expf_s(-inf)", fl_expf_s(-inf), 0.0f);
    check_bits("fl_expf_s(inf)", fl_expf_s(inf), inf);
    check_bits("fl_logf_s(0)", fl_logf_s(0.0f), -inf);
    check_bits("fl_log1pf_s(-1)", fl_log1pf_s(-1.0f), -inf);
    check_bits("fl_log1pf_s(-0)", fl_log1pf_s(-0.0f), -0.0f);
    check_bits("fl_log1pf_s(inf)", fl_log1pf_s(inf), inf);
    double dinf = INFINITY;
    if (!(fl_exp_d(-dinf) == 0.0 && fl_exp_d(dinf) == dinf && fl_exp_d(NAN) != fl_exp_d(NAN) &&
          fl_exp_d(-746.0) == 0.0 && fl_exp_d(710.0) == dinf && fl_exp_d(0.0) == 1.0 &&
          fl_log_d(0.0) == -dinf && fl_log_d(-1.0) != fl_log_d(-1.0) && fl_log_d(dinf) == dinf &&
          fl_log_d(1.0) == 0.0 && fl_log1p_d(-1.0) == -dinf && fl_log1p_d(dinf) == dinf &&
          fl_log1p_d(-2.0) != fl_log1p_d(-2.0) && fl_log1p_d(0x1p-1074) == 0x1p-1074 &&
          signbit(fl_log1p_d(-0.0)) && fl_log_d(0x1p-1074) == log(0x1p-1074))) {
        printf("[%s] FAIL double specials\n", isa_name());
        g_fail = 1;
    } else
        printf("[%s] specials ok\n", isa_name());
}

/* ---- halves: all 65536 widenings and round trips ---- */
static void test_halves(void)
{
    uint16_t *h = malloc(65536 * 2), *h2 = malloc(65536 * 2);
    float *f = malloc(65536 * 4);
    int bad = 0;
    for (int kind = 0; kind < 2; kind++) {
        for (int i = 0; i < 65536; i++) h[i] = (uint16_t)i;
        for (int i = 0; i < 65536; i += FL_W) {
            flv v = kind ? flv_load_bf16(h + i) : flv_load_f16(h + i);
            flv_store(f + i, v);
            if (kind) flv_store_bf16(h2 + i, v); else flv_store_f16(h2 + i, v);
        }
        int nb = 0, nrt = 0;
        for (int i = 0; i < 65536; i++) {
            float want = kind ? fl_bf16_to_f32((uint16_t)i) : fl_f16_to_f32((uint16_t)i);
            if (fl_f2u(f[i]) != fl_f2u(want)) {
                if (nb++ < 4) printf("  %s widen %04x: %08x, fl_half.h %08x\n", kind ? "bf16" : "f16", i, fl_f2u(f[i]), fl_f2u(want));
            }
            uint16_t back = kind ? fl_f32_to_bf16(want) : fl_f32_to_f16(want);
            int is_nan = kind ? ((i & 0x7fff) > 0x7f80) : ((i & 0x7fff) > 0x7c00);
            /* round trip: identity except that NaNs come back quiet */
            uint16_t expect = is_nan ? (uint16_t)(i | (kind ? 0x40 : 0x200)) : (uint16_t)i;
            if (h2[i] != back || h2[i] != expect) {
                if (nrt++ < 4) printf("  %s round trip %04x: %04x, fl_half.h %04x, expected %04x\n", kind ? "bf16" : "f16", i, h2[i], back, expect);
            }
        }
        printf("[%s] %s: 65536 widenings %d mismatches, round trips %d mismatches\n", isa_name(), kind ? "bf16" : "f16", nb, nrt);
        bad += nb + nrt;
    }
    if (bad) g_fail = 1;
    free(h); free(h2); free(f);
}

/* ---- load_part/store_part/hmax/hsum/max/min/abs/neg ---- */
static uint32_t rng_state = 12345u;
static uint32_t rnd32(void) { rng_state ^= rng_state << 13; rng_state ^= rng_state >> 17; rng_state ^= rng_state << 5; return rng_state; }
static uint64_t rnd64(void) { return ((uint64_t)rnd32() << 32) | rnd32(); }

static void sem_fail(const char *what, int n)
{
    printf("[%s] FAIL %s (n=%d)\n", isa_name(), what, n);
    g_fail = 1;
}

static float smax(float a, float b) { return (a != a || a > b) ? a : b; }
static float smin(float a, float b) { return (a != a || a < b) ? a : b; }

static void test_semantics(void)
{
    float buf[3 * FL_W], out[3 * FL_W];
#ifdef HAVE_MMAP
    /* data placed right before a PROT_NONE page: touching lane n faults */
    long pg = sysconf(_SC_PAGESIZE);
    char *mem = mmap(NULL, (size_t)(2 * pg), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED || mprotect(mem + pg, (size_t)pg, PROT_NONE) != 0) { sem_fail("mmap", 0); return; }
#endif
    for (int n = 0; n < FL_W; n++) {
#ifdef HAVE_MMAP
        float *edge = (float *)(mem + pg) - n;
        for (int i = 0; i < n; i++) edge[i] = (float)(i + 1);
        flv v = flv_load_part(edge, n, -7.5f);
        flv_store(out, v);
        for (int i = 0; i < FL_W; i++)
            if (out[i] != (i < n ? (float)(i + 1) : -7.5f)) sem_fail("load_part at page end", n);
        flv_store_part(edge, flv_set1(3.0f), n);
        for (int i = 0; i < n; i++)
            if (edge[i] != 3.0f) sem_fail("store_part at page end", n);
#endif
        for (int i = 0; i < 3 * FL_W; i++) buf[i] = -1.0f;
        for (int i = 0; i < FL_W; i++) out[i] = (float)i + 0.5f;
        flv_store_part(buf + FL_W, flv_load(out), n);
        for (int i = 0; i < 3 * FL_W; i++) {
            float want = (i >= FL_W && i < FL_W + n) ? (float)(i - FL_W) + 0.5f : -1.0f;
            if (buf[i] != want) sem_fail("store_part touched other lanes", n);
        }
        v = flv_load_part(out, n, NAN);
        flv_store(buf, v);
        for (int i = 0; i < FL_W; i++)
            if (i < n ? buf[i] != out[i] : buf[i] == buf[i]) sem_fail("load_part NaN fill", n);
    }
#ifdef HAVE_MMAP
    munmap(mem, (size_t)(2 * pg));
#endif
    /* lane-wise ops against the scalar expressions, on specials and randoms, bit for bit */
    const float sp[] = {0.0f, -0.0f, 1.0f, -1.0f, INFINITY, -INFINITY, NAN, -NAN, fl_u2f(0x7fa00001u), 0x1p-149f, 3.5f, -2.25f};
    const int nsp = (int)(sizeof sp / sizeof sp[0]);
    float a[FL_W], b[FL_W], r[FL_W];
    for (int it = 0; it < 20000; it++) {
        for (int i = 0; i < FL_W; i++) {
            uint32_t k = rnd32();
            a[i] = (k & 1) ? sp[(k >> 1) % nsp] : (float)((int32_t)(k >> 8) % 1000) * 0.125f;
            k = rnd32();
            b[i] = (k & 1) ? sp[(k >> 1) % nsp] : (float)((int32_t)(k >> 8) % 1000) * 0.125f;
        }
        flv va = flv_load(a), vb = flv_load(b);
        flv_store(r, flv_max(va, vb));
        for (int i = 0; i < FL_W; i++) if (fl_f2u(r[i]) != fl_f2u(smax(a[i], b[i]))) { sem_fail("max", i); break; }
        flv_store(r, flv_min(va, vb));
        for (int i = 0; i < FL_W; i++) if (fl_f2u(r[i]) != fl_f2u(smin(a[i], b[i]))) { sem_fail("min", i); break; }
        flv_store(r, flv_abs(va));
        for (int i = 0; i < FL_W; i++) if (fl_f2u(r[i]) != (fl_f2u(a[i]) & 0x7fffffffu)) { sem_fail("abs", i); break; }
        flv_store(r, flv_neg(va));
        for (int i = 0; i < FL_W; i++) if (fl_f2u(r[i]) != (fl_f2u(a[i]) ^ 0x80000000u)) { sem_fail("neg", i); break; }
        flv_store(r, flv_fma(va, vb, flv_set1(0.25f)));
        for (int i = 0; i < FL_W; i++) { float w = fmaf(a[i], b[i], 0.25f); if (fl_f2u(r[i]) != fl_f2u(w) && !(w != w && r[i] != r[i])) { sem_fail("fma", i); break; } }
        flv_store(r, flv_div(flv_sub(flv_add(va, vb), vb), flv_mul(vb, vb)));
        for (int i = 0; i < FL_W; i++) { float w = ((a[i] + b[i]) - b[i]) / (b[i] * b[i]); if (fl_f2u(r[i]) != fl_f2u(w) && !(w != w && r[i] != r[i])) { sem_fail("add/sub/mul/div", i); break; } }
        /* hmax: NaN anywhere -> NaN, else the max */
        float hm = flv_hmax(va);
        int anynan = 0; float m = -INFINITY;
        for (int i = 0; i < FL_W; i++) { if (a[i] != a[i]) anynan = 1; else if (a[i] > m) m = a[i]; }
        if (anynan ? hm == hm : (hm != m)) sem_fail("hmax", it);
        /* hsum_d: the values here are multiples of 1/8 or specials: exact in double */
        double hs = flv_hsum_d(va), want = 0.0;
        for (int i = 0; i < FL_W; i++) want += (double)a[i];
        /* exact unless tiny and large lanes meet (then the order of the sum matters) */
        double mag = 0.0;
        for (int i = 0; i < FL_W; i++) mag += fabs((double)a[i]);
        if (!(fabs(hs - want) <= 0x1p-60 * mag || (hs != hs && want != want) || hs == want)) sem_fail("hsum_d", it);
    }
    /* hsum_d really widens: 16777216 + 1 + 1 ... is not representable in float */
    for (int i = 0; i < FL_W; i++) a[i] = i == 0 ? 16777216.0f : 1.0f;
    if (flv_hsum_d(flv_load(a)) != 16777216.0 + (FL_W - 1)) sem_fail("hsum_d widening", 0);
    for (int i = 0; i < FL_W; i++) a[i] = 0x1p127f;
    if (flv_hsum_d(flv_load(a)) != 0x1p127 * FL_W) sem_fail("hsum_d overflow-free", 0);
    /* hmax with a single NaN in each lane position */
    for (int p = 0; p < FL_W; p++) {
        for (int i = 0; i < FL_W; i++) a[i] = (float)i;
        a[p] = NAN;
        float hm = flv_hmax(flv_load(a));
        if (hm == hm) sem_fail("hmax NaN lane", p);
        for (int i = 0; i < FL_W; i++) a[i] = -INFINITY;
        a[p] = 5.0f;
        if (flv_hmax(flv_load(a)) != 5.0f) sem_fail("hmax position", p);
    }
    printf("[%s] semantics (load_part/store_part/max/min/abs/neg/fma/hmax/hsum_d) %s\n", isa_name(), g_fail ? "had failures" : "ok");
}

/* ---- flv_store_compress: every mask of FL_W bits (and bits above FL_W ignored); the lanes'
 * bits moved unchanged (NaN payloads too), nothing written past the count, not even at the
 * end of a readable page ---- */
static void test_store_compress(void)
{
    float lanes[FL_W], buf[3 * FL_W];
    for (int j = 0; j < FL_W; j++) lanes[j] = (j % 5 == 3) ? fl_u2f(0x7fa00000u + (uint32_t)j) : (float)j * 1.5f - 4.0f;
    flv v = flv_load(lanes);
#ifdef HAVE_MMAP
    long pg = sysconf(_SC_PAGESIZE);
    char *mem = mmap(NULL, (size_t)(2 * pg), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED || mprotect(mem + pg, (size_t)pg, PROT_NONE) != 0) { sem_fail("mmap", 0); return; }
#endif
    for (uint32_t m = 0; m < (1u << FL_W); m++) {
        for (int i = 0; i < 3 * FL_W; i++) buf[i] = -1.0f;
        unsigned mask = m | 0xa5a5a5a5u << FL_W; /* bits above FL_W: ignored */
        int n = flv_store_compress(buf + FL_W, v, mask), want = 0;
        for (int j = 0; j < FL_W; j++) {
            if (!(m >> j & 1u)) continue;
            if (fl_f2u(buf[FL_W + want]) != fl_f2u(lanes[j])) { sem_fail("store_compress lane", (int)m); break; }
            want++;
        }
        if (n != want) sem_fail("store_compress count", (int)m);
        for (int i = 0; i < 3 * FL_W; i++)
            if ((i < FL_W || i >= FL_W + want) && buf[i] != -1.0f) { sem_fail("store_compress wrote past its lanes", (int)m); break; }
#ifdef HAVE_MMAP
        float *edge = (float *)(mem + pg) - want;
        if (flv_store_compress(edge, v, mask) != want) sem_fail("store_compress at page end", (int)m);
#endif
    }
#ifdef HAVE_MMAP
    munmap(mem, (size_t)(2 * pg));
#endif
    printf("[%s] store_compress: %u masks %s\n", isa_name(), 1u << FL_W, g_fail ? "had failures" : "ok");
}

/* ---- vectors that mix lanes of every range of the x <= 0 exponentials ----
 * A lane below FL_EXPF_LO gives +0 whatever its neighbours; any other lane gives what a
 * vector of that value alone gives (lane1). Masked logits put -inf beside normal-range lanes,
 * a case the sweeps of consecutive inputs never build: each backend may take a path of its
 * own for it (AVX2: the normal path with those lanes zeroed). */
static float mixed_lane_value(uint32_t kind, uint32_t bits)
{
    float u = (float)(bits >> 8) * 0x1p-24f; /* [0, 1) */
    switch (kind % 7) {
    case 0: return -86.0f * u;                 /* normal results */
    case 1: return -103.97f + 17.97f * u;      /* subnormal results, just above FL_EXPF_LO */
    case 2: return -INFINITY;
    case 3: return -104.0f - 1e6f * u;         /* 0 */
    case 4: return -0.0f;
    case 5: return NAN;
    default: return FL_EXPF_LO - 0x1p-16f * u; /* 0, at the edge */
    }
}

static void test_mixed_lanes(void)
{
    flv (*const fns[2])(flv) = {flv_exp_neg, flv_exp_neg_fast};
    const char *names[2] = {"exp_neg", "exp_neg_fast"};
    int fails = 0;
    for (int f = 0; f < 2; f++) {
        for (int trial = 0; trial < 20000; trial++) {
            float in[FL_W], out[FL_W];
            /* two kinds per vector in most trials (the masked-row case), any mix in the rest */
            uint32_t k0 = rnd32(), k1 = rnd32(), any = trial % 4 == 0;
            for (int j = 0; j < FL_W; j++) {
                uint32_t r = rnd32();
                in[j] = mixed_lane_value(any ? r : (r & 1u ? k0 : k1), rnd32());
            }
            flv_store(out, fns[f](flv_load(in)));
            for (int j = 0; j < FL_W; j++) {
                float want = in[j] < FL_EXPF_LO ? 0.0f : lane1(fns[f], in[j]);
                if (fl_f2u(out[j]) == fl_f2u(want) || (out[j] != out[j] && want != want)) continue;
                g_fail = 1;
                if (fails++ < 5)
                    printf("[%s] FAIL mixed lanes %s(%a) = %a, alone %a\n", isa_name(), names[f], in[j], out[j], want);
            }
        }
    }
    if (!fails) printf("[%s] mixed lanes ok\n", isa_name());
}

/* flv_exp_shift_normal (fast: _fast_) of a vector of x alone, lane 0 */
static float lane1_shift(int fast, float x, float sn)
{
    float b[FL_W];
    flv v = fast ? flv_exp_fast_shift_normal(flv_set1(x), flv_set1(sn)) : flv_exp_shift_normal(flv_set1(x), flv_set1(sn));
    flv_store(b, v);
    return b[0];
}

/* ---- the masked exponentials on the same mixed vectors ----
 * flv_exp_neg_fast_masked: the bits of flv_exp_neg_fast in every lane outside the gap
 * [FL_EXPF_GAP_MID - FL_EXPF_GAP_HALF, FL_EXPF_GAP_MID + FL_EXPF_GAP_HALF], and its accumulator
 * at most FL_EXPF_GAP_HALF exactly when a lane was inside. flv_exp_shift_masked and
 * flv_exp_fast_shift_masked, for maxima m in [-64, 64]: flv_exp_shift_normal's bits at x >= m - 86,
 * +0 below the gap, the same report. (nan lanes are not in their domain.) */
static float masked_lane_value(uint32_t kind, uint32_t bits)
{
    float u = (float)(bits >> 8) * 0x1p-24f;
    switch (kind % 5) {
    case 0: return -86.0f * u;
    case 1: return FL_EXPF_GAP_MID + 17.9f * (u - 0.5f); /* inside the gap, clear of its ends */
    case 2: return -INFINITY;
    case 3: return -104.002f - 1e6f * u;
    default: return -3.4028235e38f;
    }
}

static void test_masked_lanes(void)
{
    int fails = 0;
    for (int trial = 0; trial < 40000; trial++) {
        float in[FL_W], out[FL_W], outs[FL_W], outf[FL_W], g[FL_W], gs[FL_W], gf[FL_W];
        int gap = 0;
        uint32_t k0 = rnd32(), k1 = rnd32(), any = trial % 4 == 0;
        float m = (float)((int32_t)(rnd32() % 12800u) - 6400) * 0.01f, sn = fl_rintf(m * FL_LOG2E_F);
        for (int j = 0; j < FL_W; j++) {
            uint32_t r = rnd32();
            in[j] = masked_lane_value(any ? r : (r & 1u ? k0 : k1), rnd32());
            gap |= in[j] >= FL_EXPF_GAP_MID - FL_EXPF_GAP_HALF && in[j] <= FL_EXPF_GAP_MID + FL_EXPF_GAP_HALF;
        }
        flv ga = flv_set1(INFINITY), gsa = ga, gfa = ga, x = flv_add(flv_load(in), flv_set1(m));
        flv lo = flv_set1(m + FL_EXPF_NORMAL_LO), mid = flv_set1(m + FL_EXPF_GAP_MID);
        flv_store(out, flv_exp_neg_fast_masked(flv_load(in), &ga));
        flv_store(outs, flv_exp_shift_masked(x, flv_set1(sn), lo, mid, &gsa));
        flv_store(outf, flv_exp_fast_shift_masked(x, flv_set1(sn), lo, mid, &gfa));
        flv_store(g, ga);
        flv_store(gs, gsa);
        flv_store(gf, gfa);
        int seen = 0, seen_s = 0, seen_f = 0;
        for (int j = 0; j < FL_W; j++) {
            seen |= g[j] <= FL_EXPF_GAP_HALF;
            seen_s |= gs[j] <= FL_EXPF_GAP_HALF;
            seen_f |= gf[j] <= FL_EXPF_GAP_HALF;
        }
        /* the shifted forms see x = in + m rounded: their report may also take a lane within
         * an ULP of the gap's ends */
        int bad = seen != gap || (gap && !(seen_s && seen_f));
        for (int j = 0; j < FL_W && !gap; j++) {
            float xj = in[j] + m;
            float want = in[j] < FL_EXPF_LO ? 0.0f : lane1(flv_exp_neg_fast, in[j]);
            int normal = xj >= m + FL_EXPF_NORMAL_LO;
            float ws = normal ? lane1_shift(0, xj, sn) : 0.0f, wf = normal ? lane1_shift(1, xj, sn) : 0.0f;
            bad |= fl_f2u(out[j]) != fl_f2u(want);
            bad |= !seen_s && fl_f2u(outs[j]) != fl_f2u(ws);
            bad |= !seen_f && fl_f2u(outf[j]) != fl_f2u(wf);
        }
        if (bad) {
            g_fail = 1;
            if (fails++ < 5)
                printf("[%s] FAIL masked lanes (m = %a, gap %d, seen %d %d %d), first lane %a\n", isa_name(), m, gap,
                       seen, seen_s, seen_f, in[0]);
        }
    }
    if (!fails) printf("[%s] masked lanes ok\n", isa_name());
}

