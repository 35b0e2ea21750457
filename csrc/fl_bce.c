/* fl_bce.c: binary cross-entropy with logits and sigmoid focal loss, loss and gradient in one
 * pass over logits and targets. Compiled once per ISA; every exported symbol is FL_FN(name).
 *
 * Work units. The losses are elementwise, so a long row is cut into pieces of at most
 * FL_BLOCK_ELEMS elements, and a block is a fixed run of pieces of about FL_BLOCK_ELEMS
 * elements; blocks go to the threads in stripes (fl_stripes.h). Targets are read in their own
 * dtype (float, bool or integer) a piece at a time.
 *
 * The total (*total, an order-independent sum: fl_rsum.h) takes each piece's losses summed in a
 * fixed order (float64 lanes; compensated lanes for float64 logits, fl_bce_f64.h: a function
 * of the piece's length alone, and the pieces of a row
 * depend only on the row's length), or with o->per_element each element's loss on its own (the
 * caller's rows are one element long, e.g. a 1-D array, and the grid walks them in long runs).
 * Either way the total is bitwise the same for every thread count, and for every split of the
 * rows into calls whose states are merged.
 *
 * Short rows. A piece of a few elements cost some 600 instructions of set-up for a handful of
 * exponentials (65536 x 2 ran at 0.03 Gelem/s). Where every array's rows lie back to back
 * (fl_bce_runs), consecutive rows of a task are computed as one run of up to FL_BCE_RUN
 * elements, their losses kept in float32, and each row's sum is then taken from them with the
 * float64 lane additions its own piece would have made (fl_row_sums_f32): the same bits.
 *
 * Formulas, with t = exp(-|x|), L = log1p(t), s+ = sigmoid(x), s- = sigmoid(-x) (both from t
 * without cancellation), A = w*pw*y and B = w*(1-y):
 *   -log_sigmoid(x) = max(-x, 0) + L,     -log_sigmoid(-x) = max(x, 0) + L
 *   BCE loss = A*max(-x, 0) + B*max(x, 0) + (A+B)*L
 *              (a zero coefficient times the infinite max(.) of x = +-inf is taken as 0: the
 *              loss limits 0 or +inf); all terms are >= 0 for non-negative weights
 *   BCE grad = w*(s+*(1 + (pw-1)*y) - pw*y) = B*s+ - A*s-   (no cancellation for y in {0,1})
 * A term whose target factor is 0 (pw*y or 1-y) is absent whatever the weight: its coefficient
 * is 0 even for w = inf (not inf*0 = NaN), so an infinite weight gives an infinite loss as in
 * PyTorch, and a zero weight masks an element even at x = +-inf.
 * Focal loss (torchvision): ce = the BCE loss with w = pw = 1, q = 1 - p_t = s+*(1-y) + s-*y
 * (a sum of non-negative terms: no cancellation near p_t = 1), a_t = alpha*y + (1-alpha)*(1-y)
 * (1 when alpha < 0):
 *   loss   = a_t * ce * q^gamma
 *   dce/dx = s+ - y = s+*(1-y) - y*s-
 *   dq/dx  = s+*s-*(1-y) - s+*s-*y = s+*s-*(1-2y)
 *   grad   = a_t * (q^gamma * dce/dx + gamma * ce * q^(gamma-1) * dq/dx)
 *          = a_t * (q^gamma * dce/dx + gamma * ce * q^gamma * (s+*s-/q) * (1-2y))
 * where s+*s-/q is s- for y = 0 and s+ for y = 1 (bounded for soft targets). The second term is
 * taken as its limit 0 where it evaluates 0*inf or 0/0 (x = +-inf: q = 0, or ce = inf with
 * s+*s- = 0). For y in {0,1} both terms have the same sign: no cancellation.
 * q^gamma is 1 for gamma = 0, q or q*q for gamma = 1 or 2, else exp(gamma*log q) (0 at q = 0).
 *
 * Wide logits (issue 19). For |x| > 87.3, t = exp(-|x|) is subnormal, and x86 cores compute a
 * product or FMA with a subnormal operand or result by a microcode assist (40-50 ns a vector):
 * BCE with its gradient on randn*60 ran ~25x slower than under FTZ/DAZ. As the sigmoids do
 * (fl_sigmoid_math.h), the BCE lane loop tests groups of vectors for a lane of |x| >= 17 (the
 * max of |x|: fl_bce_wide), and a group with such a lane takes fl_vbce_wide, the plain
 * form's bits by another route: log1p(t) is t itself below FL_SIG_TINY, and the "sub" lanes
 * (0 < t < 2^-126) compute with t = 0, the few values that changes put back exactly:
 *   loss = s*t + lin, s = a+b, lin the max term (flv_fma: one rounding; two on the scalar path,
 *          which rounds s*t first): lin where |s| < |lin| 2^100 (|s t| and its rounding are then
 *          at most a quarter ULP of lin: the sum rounds to lin) or s = +-0 (the zeroed t gives
 *          the same signed zero product); round(s t) by flv_mul_tiny where lin = +-0, s > 0;
 *   grad = (b*sp - a*sn) * scale, one of sp, sn being t there (r = 1/(1+t) = 1): its product
 *          with its coefficient c is c*0 = +-0 for c = +-0, round(c t) by flv_mul_tiny for
 *          c > 0; the difference (an addition: no assist) is scaled by flv_mul_tiny with the
 *          sign put back (fl_vmul_scale), the other lanes' values by the plain product.
 * A sub lane outside these conditions (a negative or NaN coefficient c; a target below about
 * 2^-100 whose lin does not absorb s t), and any lane with an infinite or NaN s (w or pw inf
 * or NaN), is "bad": its group takes the plain form (the assists, the same bits). So do the
 * focal loss (q^gamma and its ratio are products of tiny values: not done yet) and float64
 * logits (fl_bce_f64.h; their t is subnormal only beyond |x| = 708). float16 and bfloat16
 * logits share the float32 lanes. Where products with subnormal operands cost no assist (AMD:
 * fl_subnormals_plain, fl_dispatch.c), a group is wide only from |x| >= 28 (fl_sig_plain_lo),
 * below which the plain form makes no subnormal value at all (randn * 10, a lane of |x| >= 17
 * in most groups: the loss and gradient took 2.6x the plain rows' time on Zen 4).
 * One difference in bits remains, outside any form: where a
 * NaN logit meets a NaN coefficient (w or pw NaN, pw*y = inf*0), which of the two NaNs the
 * result carries follows the compiler's choice of operand order (commutative operations),
 * which moved for some such lanes with this code, in the plain form too (a NaN either way).
 */
#include <math.h>
#include <stdlib.h>

#include "fastlogits.h"
#include "fl_kernels.h"
#include "fl_pool.h"
#include "fl_rowio.h"
#include "fl_rowmath.h"
#include "fl_rsum.h"
#include "fl_sigmoid_math.h"
#include "fl_stripes.h"

enum { FL_POW_ONE = 0, FL_POW_ID = 1, FL_POW_SQ = 2, FL_POW_GEN = 3 };

typedef struct {
    const fl_arr *x, *y, *w, *pw, *loss, *grad;  /* w, pw, loss, grad may be NULL */
    fl_grid g;
    fl_bce_opts o;
    int f64;                 /* compute in double (float64 logits) */
    int pow_mode;            /* how q^gamma is evaluated */
    int64_t chunk;           /* elements per piece (the last piece of a row may be shorter) */
    int64_t per_row;         /* pieces per row */
    int64_t per_block;       /* pieces per block */
    int64_t n_pieces;
    int64_t buf_n;           /* elements of each scratch row: a piece, or a run of short rows */
    int runs;                /* consecutive rows are read as runs (fl_bce_runs) */
    int sum;                 /* the total is wanted */
    struct fl_bce_slot *slot; /* one partial result per stripe */
} fl_bce_ctx;

/* a stripe's partial result: its losses' sum and its status */
typedef struct fl_bce_slot {
    fl_rsum total;
    int status;
} fl_bce_slot;

#include "fl_bce_targets.h"
#include "fl_bce_f64.h"

/* ---------------- float32 lanes ---------------- */

static const float fl_ones[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};

/* a*max(-x, 0) + b*max(x, 0) + (a+b)*L: -(a*log_sigmoid(x) + b*log_sigmoid(-x)). One of the
 * max terms is 0, so the other is selected; its 0*inf (x = -+inf with a zero coefficient) is
 * taken as 0, and a nan x gives a nan L. */
static inline flv fl_vsoftplus2(flv x, flv a, flv b, flv L)
{
    flv lin = flv_zero_nan(flv_sel_neg(x, flv_mul(a, flv_neg(x)), flv_mul(b, x)));
    return flv_fma(flv_add(a, b), L, lin);
}

/* sigmoid(x) and sigmoid(-x) from t = exp(-|x|) */
static inline void fl_vsigmoids(flv x, flv t, flv *sp, flv *sn)
{
    flv r = flv_div(flv_set1(1.0f), flv_add(flv_set1(1.0f), t));
    flv tr = flv_mul(t, r);
    *sp = flv_sel_neg(x, tr, r);
    *sn = flv_sel_neg(x, r, tr);
}

/* q^gamma; a general gamma goes through double lane by lane: in float32, exp(gamma*log q)
 * carries the rounding error of gamma*log q, |gamma*log q| * 2^-24 relative (4e-6 for
 * q = 1e-8, gamma = 3.7), where double keeps q^gamma to the float32 rounding */
static inline flv fl_vpow(flv q, int mode, double gamma)
{
    switch (mode) {
    case FL_POW_ONE: return flv_set1(1.0f);
    case FL_POW_ID: return q;
    case FL_POW_SQ: return flv_mul(q, q);
    default: {
        float qs[FL_W], r[FL_W];
        flv_store(qs, q);
        for (int j = 0; j < FL_W; j++) r[j] = (float)fl_exp_d(gamma * fl_log_d((double)qs[j]));
        return flv_load(r);
    }
    }
}

/* per-lane constants of a piece; unweighted: neither w nor pw (a constant in the option sets
 * that fl_lanes_t compiles apart, so fl_vbce_coefs drops the general form there); wide_at: the
 * |x| from which a group takes fl_bce_wide_group (-fl_sig_plain_lo()) */
typedef struct { flv one, scale, alpha, alpha_c, gamma, wide_at; int use_alpha, pow_mode, unweighted; double gamma_d; } fl_vconst;

/* the coefficient wc of a term with target factor c: 0 where c = 0, whatever the weight (c NaN
 * stays NaN: -|c| is then not < 0 and c*0 is NaN) */
static inline flv fl_vcoef(flv c, flv wc)
{
    return flv_sel_neg(flv_neg(flv_abs(c)), wc, flv_mul(c, flv_set1(0.0f)));
}

/* the BCE terms' coefficients a = w*pw*y and b = w*(1-y) (fl_vcoef) */
FL_ALWAYS_INLINE void fl_vbce_coefs(const fl_vconst *K, flv y, flv w, flv pw, flv *a, flv *b)
{
    flv yc = flv_sub(K->one, y);
    if (K->unweighted) {  /* w = pw = 1: fl_vcoef(c, c) is c itself (c*0 = c for c = +-0): the same bits */
        *a = y;
        *b = yc;
        return;
    }
    *a = fl_vcoef(flv_mul(pw, y), flv_mul(flv_mul(w, pw), y));
    *b = fl_vcoef(yc, flv_mul(w, yc));
}

/* the BCE loss (and gradient) of x from t = exp(-|x|): the plain form */
FL_ALWAYS_INLINE void fl_vbce(const fl_vconst *K, flv x, flv t, flv y, flv w, flv pw, flv *loss, flv *grad)
{
    flv a, b;
    fl_vbce_coefs(K, y, w, pw, &a, &b);
    *loss = fl_vsoftplus2(x, a, b, fl_vlog1p_unit(t));
    if (grad) {
        flv sp, sn;
        fl_vsigmoids(x, t, &sp, &sn);
        *grad = flv_mul(flv_sub(flv_mul(b, sp), flv_mul(a, sn)), K->scale);
    }
}

/* v * s for a scale s > 0 (the gradient's): the bits of flv_mul(v, s) for any v, the finite
 * nonzero lanes taken by flv_mul_tiny (a subnormal v or product without the assist, the sign
 * put back after: round to nearest is symmetric), the others (+-0, +-inf, NaN) by the plain
 * product, which none of them makes subnormal */
static inline flv fl_vmul_scale(flv v, flv s)
{
    flv zero = flv_set1(0.0f), inf = flv_set1(INFINITY), av = flv_abs(v);
    /* |v| where it is finite and nonzero (|v| - inf < 0, -|v| < 0), else 0 */
    flv m = flv_sel_neg(flv_sub(av, inf), flv_sel_neg(flv_neg(av), av, zero), zero);
    flv p = flv_mul_tiny(m, s), nz = flv_neg(m);
    /* v in the other lanes, the finite nonzero ones clamped to 0 by a max and a min (NaN v is
     * their second operand: kept). A select there was seen through by GCC (its lanes are
     * discarded below), and the product took v's subnormal lanes, and the assist, again. */
    flv lo = flv_sel_neg(nz, zero, flv_neg(inf)), hi = flv_sel_neg(nz, zero, inf);
    flv vz = flv_min_ord(hi, flv_max_ord(lo, v));
    return flv_sel_neg(nz, flv_sel_neg(v, flv_neg(p), p), flv_mul(vz, s));
}

/* fl_vbce for a vector of a group with wide lanes (-|x| below FL_SIG_PLAIN_LO somewhere),
 * the same bits without subnormal arithmetic where the design note's conditions hold: t is
 * zeroed in its subnormal lanes (the "sub" lanes, 0 < t < 2^-126) and the few values it
 * changes there are put back exactly. The lanes where a condition fails get 1 in *bad (the
 * caller then takes the plain form for the group). */
FL_ALWAYS_INLINE void fl_vbce_wide(const fl_vconst *K, flv x, flv t, flv y, flv w, flv pw, flv *loss, flv *grad,
                                   flv *bad)
{
    flv zero = flv_set1(0.0f), one = K->one, a, b;
    fl_vbce_coefs(K, y, w, pw, &a, &b);
    flv sub = flv_sub(t, flv_set1(0x1p-126f));   /* < 0: t subnormal or 0 */
    flv tq = flv_sel_neg(sub, zero, t);          /* t, 0 in the sub lanes */
    flv ts = flv_sel_neg(sub, t, zero);          /* t in the sub lanes, else 0 */
    flv tiny = flv_sub(t, flv_set1(FL_SIG_TINY)); /* < 0: log1p(t) = t (fl_sigmoid_math.h) */
    flv L = flv_sel_neg(tiny, tq, fl_vlog1p_unit(flv_sel_neg(tiny, flv_set1(FL_SIG_TINY), t)));
    /* loss = fma(s, t, lin) in a sub lane: lin itself where |s| < |lin| 2^100 (|s t| is then
     * below a quarter ULP of lin) or s = 0, which the zeroed t gives; round(s t) where lin = 0
     * and s > 0 (flv_mul_tiny); any other sub lane is bad */
    flv s = flv_add(a, b);
    flv lin = flv_zero_nan(flv_sel_neg(x, flv_mul(a, flv_neg(x)), flv_mul(b, x)));
    flv l = flv_fma(s, L, lin);
    flv tm = flv_sel_neg(flv_neg(flv_abs(lin)), zero, flv_sel_neg(flv_neg(s), ts, zero));
    *loss = flv_sel_neg(flv_neg(tm), flv_mul_tiny(tm, s), l);
    flv v = flv_sel_neg(flv_neg(ts), flv_sel_neg(flv_neg(tm), zero, one), zero); /* sub lanes not taken by tm */
    v = flv_sel_neg(flv_sub(flv_abs(s), flv_mul(flv_abs(lin), flv_set1(0x1p100f))), zero, v);
    v = flv_sel_neg(flv_sub(flv_abs(s), flv_set1(0x1p-149f)), zero, v); /* s = 0 */
    /* an infinite or NaN coefficient (w or pw inf or NaN) anywhere: the plain form, whose NaN
     * (the first of two NaN operands, x86) this one would not keep */
    v = flv_sel_neg(flv_sub(flv_abs(s), flv_set1(INFINITY)), v, one);
    if (grad) {
        /* r = 1/(1 + t) = 1 in the sub lanes either way; t r = t there, which the zeroed t makes
         * 0: the product of t's coefficient ct (b for x < 0, a for x > 0) with it is put back,
         * round(ct t) by flv_mul_tiny for ct > 0 (ct = +-0 gives +-0 either way), else bad */
        flv sp, sn;
        fl_vsigmoids(x, tq, &sp, &sn);
        flv gb = flv_mul(b, sp), ga = flv_mul(a, sn);
        flv ct = flv_sel_neg(x, b, a);
        flv tc = flv_sel_neg(flv_neg(ct), ts, zero);
        flv pt = flv_mul_tiny(tc, ct), ntc = flv_neg(tc);
        gb = flv_sel_neg(x, flv_sel_neg(ntc, pt, gb), gb);
        ga = flv_sel_neg(x, ga, flv_sel_neg(ntc, pt, ga));
        *grad = fl_vmul_scale(flv_sub(gb, ga), K->scale);
        flv u = flv_sel_neg(flv_neg(ts), flv_sel_neg(ntc, zero, one), zero); /* sub lanes not taken by tc */
        v = flv_max_ord(v, flv_sel_neg(flv_sub(flv_abs(ct), flv_set1(0x1p-149f)), zero, u));
    }
    *bad = flv_max_ord(*bad, v);
}

FL_ALWAYS_INLINE void fl_vfocal(const fl_vconst *K, flv x, flv y, flv *loss, flv *grad)
{
    flv t = fl_vexp_mabs(x);
    flv yc = flv_sub(K->one, y);
    flv ce = fl_vsoftplus2(x, y, yc, fl_vlog1p_unit(t));
    flv sp, sn;
    fl_vsigmoids(x, t, &sp, &sn);
    flv q = flv_add(flv_mul(sp, yc), flv_mul(sn, y));
    flv mod = fl_vpow(q, K->pow_mode, K->gamma_d);
    flv at = K->use_alpha ? flv_add(flv_mul(K->alpha, y), flv_mul(K->alpha_c, yc)) : K->one;
    *loss = flv_mul(at, flv_mul(ce, mod));
    if (grad) {
        flv dce = flv_sub(flv_mul(sp, yc), flv_mul(y, sn));
        flv ratio = flv_div(flv_mul(sp, sn), q);
        flv t2 = flv_mul(flv_mul(flv_mul(K->gamma, ce), mod), flv_mul(ratio, flv_sub(yc, y)));
        flv g = flv_add(flv_mul(mod, dce), flv_zero_nan(t2));
        *grad = flv_mul(flv_mul(at, g), K->scale);
    }
}

/* Targets in [0, 1] as two running vectors: lo = min, hi = max (a nan sticks in both). */
typedef struct { flv lo, hi; } fl_vrange;

static inline void fl_vrange_add(fl_vrange *r, flv y)
{
    r->lo = flv_min(y, r->lo);
    r->hi = flv_max(y, r->hi);
}

static inline int fl_vrange_in01(fl_vrange r)
{
    return (flv_hmax(flv_neg(r.lo)) <= 0.0f) & (flv_hmax(r.hi) <= 1.0f); /* nan: 0 */
}

/* the BCE losses l (and gradients g, when g is not NULL) of a group of nv vectors with wide
 * lanes (fl_bce_wide): fl_vbce_wide, or the plain form where one of its lanes is bad (out of
 * line: inlined into every option set, it left the plain loop's exponential a call, +14%
 * instructions on randn*3, callgrind AVX2) */
static FL_NOINLINE void fl_bce_wide_group(const fl_vconst *K, const flv *x, const flv *y, const flv *w,
                                          const flv *pw, flv *l, flv *g, int nv)
{
    flv bad = flv_set1(0.0f), t[4];
    for (int j = 0; j < nv; j++) {
        t[j] = fl_vexp_mabs(x[j]);
        fl_vbce_wide(K, x[j], t[j], y[j], w[j], pw[j], &l[j], g ? &g[j] : NULL, &bad);
    }
    if (flv_any_ge(bad, K->one))
        for (int j = 0; j < nv; j++) fl_vbce(K, x[j], t[j], y[j], w[j], pw[j], &l[j], g ? &g[j] : NULL);
}

/* one vector of the piece: its loss (and gradient) for x, y and the weights w, pw, the plain
 * form; inlined into each option set of fl_lanes_t (a call per vector cost the focal loss a
 * third more). The BCE's vectors come here only from groups that fl_bce_wide found without a
 * lane of |x| >= 17 (or NaN): t = exp(-|x|) is then in the normal range, which
 * flv_exp_neg_normal computes with the same values (NaN too) and without the clamp and the
 * subnormal test (loss of 64 x 32000 from cache: AVX2 3.2 -> 2.8 ms, AVX-512 1.66 -> 1.62). */
FL_ALWAYS_INLINE flv fl_lane_loss(int focal, const fl_vconst *K, flv vx, flv vy, flv vw, flv vp, flv *vg)
{
    flv vl;
    if (focal) fl_vfocal(K, vx, vy, &vl, vg);
    else fl_vbce(K, vx, flv_exp_neg_normal(fl_vmabs(vx)), vy, vw, vp, &vl, vg);
    return vl;
}

/* Has one of the nv vectors of logits at x + k (the last m lanes long, m <= FL_W) a lane with
 * |x| >= wide_at (fl_vconst), where the BCE goes to fl_bce_wide_group? One test for the group,
 * on the max of |x|, before the plain form, which reads the logits again (a NaN lane may count
 * either way: both forms give it the same bits) */
FL_ALWAYS_INLINE int fl_bce_wide(const void *x, int64_t k, int64_t m, int nv, flv wide_at, int32_t dt)
{
    int64_t o = k + (nv - 1) * FL_W;
    flv am = flv_abs(m < FL_W ? fl_xload_part(x, o, m, 0.0f, dt) : fl_xload(x, o, dt));
    FL_UNROLL(3)
    for (int j = 0; j < nv - 1; j++) am = flv_max_ord(am, flv_abs(fl_xload(x, k + j * FL_W, dt)));
    return flv_any_ge(am, wide_at);
}

/* a step's four loss vectors vl (and gradients vgs) at k: summed into *acc, stored as asked */
FL_ALWAYS_INLINE void fl_group_out(fl_dacc *acc, float *el, void *l, void *g, int64_t k, const flv *vl,
                                   const flv *vgs, int32_t dt)
{
    FL_UNROLL(4)
    for (int j = 0; j < 4; j++) {
        *acc = fl_dacc_add(*acc, vl[j]);
        if (el) flv_store(el + k + j * FL_W, vl[j]);
        if (l) fl_xstore_part(l, k + j * FL_W, vl[j], FL_W, dt);
        if (g) fl_xstore_part(g, k + j * FL_W, vgs[j], FL_W, dt);
    }
}

/* One piece of n contiguous elements; returns the sum of its losses (double), and stores them
 * as float32 in el when el is not NULL (for per-element sums). With check set, the targets are
 * checked here, in the pass that reads them, and *ok cleared if one is not in [0, 1]. focal:
 * the focal loss, else BCE. The logits x and the outputs l and g are of dtype dt (float32,
 * float16 or bfloat16: widened as loaded, narrowed as stored). */
FL_ALWAYS_INLINE double fl_lanes_f32_body(const fl_bce_ctx *c, const void *x, const float *y, const float *w,
                                          const float *pw, void *l, void *g, float *el, int64_t n, int check,
                                          int *ok, int focal, int32_t dt)
{
    fl_vconst K = {flv_set1(1.0f), flv_set1((float)c->o.grad_scale), flv_set1((float)c->o.alpha),
                   flv_set1((float)(1.0 - c->o.alpha)), flv_set1((float)c->o.gamma), flv_neg(fl_sig_plain_lo()),
                   c->o.alpha >= 0.0, c->pow_mode, !w && !pw, c->o.gamma};
    fl_dacc acc = fl_dacc_zero();
    fl_vrange range = {flv_set1(0.0f), flv_set1(0.0f)};
    flv vg;
    int64_t k = 0;
    /* four vectors per step: each is one long dependency chain (exp, log1p), so independent
     * chains side by side keep the vector units busy where one would wait on latencies. BCE:
     * the plain form alone up to the first group with a wide lane (fl_bce_wide), then every
     * group tested. (The call to fl_bce_wide_group in this loop cost plain rows 6% more
     * instructions, callgrind AVX2 randn*3; a pass over the piece to choose the loop cost them
     * 15% more time from DRAM, AVX-512.) */
    for (; k + 4 * FL_W <= n; k += 4 * FL_W) {
        flv vl[4], vgs[4];
        if (!focal && fl_bce_wide(x, k, FL_W, 4, K.wide_at, dt)) break;
        FL_UNROLL(4)
        for (int j = 0; j < 4; j++) {
            int64_t o = k + j * FL_W;
            flv vx = fl_xload(x, o, dt), vy = flv_load(y + o);
            flv vw = w ? flv_load(w + o) : K.one, vp = pw ? flv_load(pw + o) : K.one;
            vl[j] = fl_lane_loss(focal, &K, vx, vy, vw, vp, g ? &vgs[j] : NULL);
            if (check) fl_vrange_add(&range, vy);
        }
        fl_group_out(&acc, el, l, g, k, vl, vgs, dt);
    }
    for (; k + 4 * FL_W <= n; k += 4 * FL_W) {
        flv vx[4], vy[4], vw[4], vp[4], vl[4], vgs[4];
        for (int j = 0; j < 4; j++) {
            int64_t o = k + j * FL_W;
            vx[j] = fl_xload(x, o, dt);
            vy[j] = flv_load(y + o);
            vw[j] = w ? flv_load(w + o) : K.one;
            vp[j] = pw ? flv_load(pw + o) : K.one;
            if (check) fl_vrange_add(&range, vy[j]);
        }
        if (fl_bce_wide(x, k, FL_W, 4, K.wide_at, dt)) {
            fl_bce_wide_group(&K, vx, vy, vw, vp, vl, g ? vgs : NULL, 4);
        } else {
            FL_UNROLL(4)
            for (int j = 0; j < 4; j++) vl[j] = fl_lane_loss(focal, &K, vx[j], vy[j], vw[j], vp[j], g ? &vgs[j] : NULL);
        }
        fl_group_out(&acc, el, l, g, k, vl, vgs, dt);
    }
    for (; k + FL_W <= n; k += FL_W) {
        flv vx = fl_xload(x, k, dt), vy = flv_load(y + k);
        flv vw = w ? flv_load(w + k) : K.one, vp = pw ? flv_load(pw + k) : K.one;
        flv vl;
        if (!focal && fl_bce_wide(x, k, FL_W, 1, K.wide_at, dt)) fl_bce_wide_group(&K, &vx, &vy, &vw, &vp, &vl, g ? &vg : NULL, 1);
        else vl = fl_lane_loss(focal, &K, vx, vy, vw, vp, g ? &vg : NULL);
        if (check) fl_vrange_add(&range, vy);
        acc = fl_dacc_add(acc, vl);
        if (el) flv_store(el + k, vl);
        if (l) fl_xstore_part(l, k, vl, FL_W, dt);
        if (g) fl_xstore_part(g, k, vg, FL_W, dt);
    }
    if (k < n) {
        int64_t m = n - k;
        flv vx = fl_xload_part(x, k, m, 0.0f, dt), vy = flv_load_part(y + k, m, 0.0f);
        flv vw = w ? flv_load_part(w + k, m, 0.0f) : K.one, vp = pw ? flv_load_part(pw + k, m, 0.0f) : K.one;
        flv vl;
        if (!focal && fl_bce_wide(x, k, m, 1, K.wide_at, dt)) fl_bce_wide_group(&K, &vx, &vy, &vw, &vp, &vl, g ? &vg : NULL, 1);
        else vl = fl_lane_loss(focal, &K, vx, vy, vw, vp, g ? &vg : NULL);
        if (check) fl_vrange_add(&range, vy);
        /* the fill lanes hold finite losses of x = y = 0: mask them out of the sum */
        acc = fl_dacc_add(acc, flv_mul(vl, flv_load_part(fl_ones, m, 0.0f)));
        if (el) flv_store_part(el + k, vl, m);
        if (l) fl_xstore_part(l, k, vl, m, dt);
        if (g) fl_xstore_part(g, k, vg, m, dt);
    }
    if (check) *ok &= fl_vrange_in01(range);
    return fl_dacc_sum(acc);
}

/* fl_lanes_f32_body for logits of dtype dt, with the common option sets (no weights, no per-element loss, targets
 * checked here; BCE or focal, loss or loss and gradient, the losses kept for a per-element sum or not) compiled as
 * constants: no branch in the loop */
#define FL_LANES_FAST(FOCAL, G, EL) fl_lanes_f32_body(c, x, y, NULL, NULL, NULL, G, EL, n, 1, ok, FOCAL, dt)
FL_ALWAYS_INLINE double fl_lanes_t(const fl_bce_ctx *c, const void *x, const float *y, const float *w,
                                   const float *pw, void *l, void *g, float *el, int64_t n, int check, int *ok,
                                   int32_t dt)
{
    int focal = c->o.kind == FL_LOSS_FOCAL;
    if (!w && !pw && !l && check) {
        if (focal) {
            if (el) return g ? FL_LANES_FAST(1, g, el) : FL_LANES_FAST(1, NULL, el);
            return g ? FL_LANES_FAST(1, g, NULL) : FL_LANES_FAST(1, NULL, NULL);
        }
        if (el) return g ? FL_LANES_FAST(0, g, el) : FL_LANES_FAST(0, NULL, el);
        return g ? FL_LANES_FAST(0, g, NULL) : FL_LANES_FAST(0, NULL, NULL);
    }
    return fl_lanes_f32_body(c, x, y, w, pw, l, g, el, n, check, ok, focal, dt);
}
#undef FL_LANES_FAST

/* ---------------- pieces, blocks, driver ---------------- */

/* element k0 of row (i0, i1) of a */
static inline char *fl_piece_ptr(const fl_arr *a, int64_t i0, int64_t i1, int64_t k0)
{
    return fl_row_ptr(a, i0, i1) + k0 * a->sc * (int64_t)fl_esize(a->dtype);
}

/* scratch of a task: seven rows of one piece (x, y, w, pw, loss, grad, the float32 losses of
 * a per-element sum) */
#define FL_BCE_BUFS 7

/* the sums of rows short rows of len float32 losses each, at el, each as fl_lanes_f32_body
 * adds a row's losses: float64 lanes taking the row's vectors in order, the last one partial
 * with 0 in its fill lanes (the body's mask multiplies them to +0) */
static void fl_row_sums_f32(const float *el, int64_t len, int64_t rows, fl_rsum_buf *acc)
{
    for (int64_t r = 0; r < rows; r++, el += len) {
        fl_dacc a = fl_dacc_zero();
        int64_t k = 0;
        for (; k + FL_W <= len; k += FL_W) a = fl_dacc_add(a, flv_load(el + k));
        if (k < len) a = fl_dacc_add(a, flv_load_part(el + k, len - k, 0.0f));
        fl_rsum_buf_add(acc, fl_dacc_sum(a));
    }
}

/* One piece, or a run of rows whole rows of pieces (consecutive rows of one grid row i0, back
 * to back in every array: fl_bce_runs): its losses and gradient written as asked; each row's
 * losses' sum added to acc, or each loss deposited into acc's state under o.per_element. n is
 * the elements of the piece or of the run. */
static void fl_piece_f32(const fl_bce_ctx *c, int64_t i0, int64_t i1, int64_t k0, int64_t n, int64_t rows,
                         float *buf, int *ok, fl_rsum_buf *acc)
{
    int64_t m = c->buf_n;
    /* logits and outputs of one float type, contiguous: read and written where they are */
    int native = fl_row_is_x(c->x) && (!c->loss || (fl_row_is_x(c->loss) && c->loss->dtype == c->x->dtype)) &&
                 (!c->grad || (fl_row_is_x(c->grad) && c->grad->dtype == c->x->dtype));
    int32_t dt = native ? c->x->dtype : FL_F32;
    const char *xp = fl_piece_ptr(c->x, i0, i1, k0);
    const void *x = native ? (const void *)xp : (const void *)fl_row_in_f32(c->x, xp, n, buf);
    const float *y;
    int valid = fl_targets_f32(c->y, fl_piece_ptr(c->y, i0, i1, k0), n, buf + m, &y, 0);
    int lanes_check = c->o.check_target && fl_targets_in_place_f32(c->y);
    if (c->o.check_target) *ok &= valid;
    const float *w = c->w ? fl_row_in_f32(c->w, fl_piece_ptr(c->w, i0, i1, k0), n, buf + 2 * m) : NULL;
    const float *pw = c->pw ? fl_row_in_f32(c->pw, fl_piece_ptr(c->pw, i0, i1, k0), n, buf + 3 * m) : NULL;
    char *lrow = c->loss ? fl_piece_ptr(c->loss, i0, i1, k0) : NULL;
    char *grow = c->grad ? fl_piece_ptr(c->grad, i0, i1, k0) : NULL;
    void *l = !lrow ? NULL : native ? (void *)lrow : (void *)fl_row_dst_f32(c->loss, lrow, buf + 4 * m);
    void *g = !grow ? NULL : native ? (void *)grow : (void *)fl_row_dst_f32(c->grad, grow, buf + 5 * m);
    float *el = c->sum && (c->o.per_element || rows > 1) ? buf + 6 * m : NULL;
    double s = fl_x_dispatch(dt, fl_lanes_t, c, x, y, w, pw, l, g, el, n, lanes_check, ok);
    if (l && !native) fl_row_out_f32(c->loss, lrow, n, (const float *)l);
    if (g && !native) fl_row_out_f32(c->grad, grow, n, (const float *)g);
    if (el && c->o.per_element) fl_rsum_add_f32s(&acc->s, el, n);
    else if (el) fl_row_sums_f32(el, n / rows, rows, acc);
    else if (c->sum) fl_rsum_buf_add(acc, s);
}

static void fl_piece_f64(const fl_bce_ctx *c, int64_t i0, int64_t i1, int64_t k0, int64_t n,
                         double *buf, int *ok, fl_rsum_buf *acc)
{
    int64_t m = c->chunk;
    const double *x = fl_row_in_f64(c->x, fl_piece_ptr(c->x, i0, i1, k0), n, buf);
    const double *y;
    int valid = fl_targets_f64(c->y, fl_piece_ptr(c->y, i0, i1, k0), n, buf + m, &y);
    if (c->o.check_target) *ok &= valid;
    const double *w = c->w ? fl_row_in_f64(c->w, fl_piece_ptr(c->w, i0, i1, k0), n, buf + 2 * m) : NULL;
    const double *pw = c->pw ? fl_row_in_f64(c->pw, fl_piece_ptr(c->pw, i0, i1, k0), n, buf + 3 * m) : NULL;
    char *lrow = c->loss ? fl_piece_ptr(c->loss, i0, i1, k0) : NULL;
    char *grow = c->grad ? fl_piece_ptr(c->grad, i0, i1, k0) : NULL;
    double *l = lrow ? fl_row_dst_f64(c->loss, lrow, buf + 4 * m) : buf + 4 * m;
    double *g = grow ? fl_row_dst_f64(c->grad, grow, buf + 5 * m) : NULL;
    fl_elems_f64(c, x, y, w, pw, l, g, n);
    if (c->sum && c->o.per_element) fl_rsum_add_f64s(&acc->s, l, n);
    else if (c->sum) fl_rsum_buf_add(acc, fl_piece_sum_f64(l, n));
    if (lrow) fl_row_out_f64(c->loss, lrow, n, l);
    if (g) fl_row_out_f64(c->grad, grow, n, g);
}

/* piece u: its row (i0, i1), first element k0 and length n */
static void fl_piece_pos(const fl_bce_ctx *c, int64_t u, int64_t *i0, int64_t *i1, int64_t *k0, int64_t *n)
{
    int64_t r = u / c->per_row;
    *k0 = (u % c->per_row) * c->chunk;
    *n = c->g.c - *k0 < c->chunk ? c->g.c - *k0 : c->chunk;
    *i0 = r / c->g.n1;
    *i1 = r % c->g.n1;
}

/* Rows of at most this many elements are computed in runs of up to FL_BCE_RUN elements where
 * fl_bce_runs allows (longer rows gain nothing: their set-up is already spread thin) */
#define FL_BCE_RUN 4096
#define FL_BCE_RUN_MAX_C 256

/* Are the rows of a back to back (absent: yes), so that consecutive rows of one grid row i0
 * are one contiguous run? */
static inline int fl_rows_flat(const fl_arr *a, int64_t c) { return !a || (a->sc == 1 && a->s1 == c); }

/* Can float32-path rows be computed in runs? One piece a row, short rows, and every array's
 * rows back to back (weights broadcast along a row axis are not) */
static int fl_bce_runs(const fl_bce_ctx *c)
{
    int64_t n = c->g.c;
    return !c->f64 && c->per_row == 1 && n <= FL_BCE_RUN_MAX_C && fl_rows_flat(c->x, n) && fl_rows_flat(c->y, n) &&
           fl_rows_flat(c->w, n) && fl_rows_flat(c->pw, n) && fl_rows_flat(c->loss, n) && fl_rows_flat(c->grad, n);
}

/* how many rows from piece u (row (i0, i1)), before piece u1, one run takes: within grid row
 * i0 and FL_BCE_RUN elements (1 where runs are off) */
static int64_t fl_run_rows(const fl_bce_ctx *c, int64_t u, int64_t u1, int64_t i1)
{
    if (!c->runs) return 1;
    int64_t r = FL_BCE_RUN / c->g.c;
    if (r > u1 - u) r = u1 - u;
    return r < c->g.n1 - i1 ? r : c->g.n1 - i1;
}

/* pieces [u0, u1) of blocks [b0, b1) */
static void fl_bce_pieces(const fl_bce_ctx *c, int64_t b0, int64_t b1, int64_t *u0, int64_t *u1)
{
    *u0 = b0 * c->per_block;
    *u1 = b1 * c->per_block < c->n_pieces ? b1 * c->per_block : c->n_pieces;
}

static void fl_bce_task(void *vctx, int64_t b0, int64_t b1, int64_t slot)
{
    fl_bce_ctx *c = (fl_bce_ctx *)vctx;
    size_t esz = c->f64 ? sizeof(double) : sizeof(float);
    void *buf = malloc(FL_BCE_BUFS * (size_t)c->buf_n * esz);
    if (!buf) { c->slot[slot].status = FL_ENOMEM; return; }
    fl_rsum_buf acc;
    fl_rsum_buf_init(&acc);
    int ok = 1;
    int64_t u0, u1;
    fl_bce_pieces(c, b0, b1, &u0, &u1);
    for (int64_t u = u0; u < u1;) {
        int64_t i0, i1, k0, n;
        fl_piece_pos(c, u, &i0, &i1, &k0, &n);
        int64_t rows = fl_run_rows(c, u, u1, i1);
        if (c->f64) fl_piece_f64(c, i0, i1, k0, n, (double *)buf, &ok, &acc);
        else fl_piece_f32(c, i0, i1, k0, n * rows, rows, (float *)buf, &ok, &acc);
        u += rows;
    }
    fl_rsum_buf_done(&acc);
    c->slot[slot].total = acc.s;
    c->slot[slot].status = ok ? FL_OK : FL_EBADTARGET;
    free(buf);
}

static void fl_check_task(void *vctx, int64_t b0, int64_t b1, int64_t slot)
{
    fl_bce_ctx *c = (fl_bce_ctx *)vctx;
    float *buf = (float *)malloc((size_t)c->buf_n * sizeof(float));
    if (!buf) { c->slot[slot].status = FL_ENOMEM; return; }
    int ok = 1;
    int64_t u0, u1;
    fl_bce_pieces(c, b0, b1, &u0, &u1);
    for (int64_t u = u0; u < u1;) {
        int64_t i0, i1, k0, n;
        const float *y;
        fl_piece_pos(c, u, &i0, &i1, &k0, &n);
        int64_t rows = fl_run_rows(c, u, u1, i1);
        ok &= fl_targets_f32(c->y, fl_piece_ptr(c->y, i0, i1, k0), n * rows, buf, &y, 1);
        u += rows;
    }
    c->slot[slot].status = ok ? FL_OK : FL_EBADTARGET;
    free(buf);
}

/* Split the grid into pieces and blocks, run task over stripes of blocks, merge the stripes.
 * FL_ENOMEM wins over FL_EBADTARGET (the answer would be incomplete either way). */
static int fl_bce_drive(fl_bce_ctx *c, fl_stripe_fn task, fl_rsum *total)
{
    int64_t nrows = c->g.n0 * c->g.n1;
    if (total) fl_rsum_init(total);
    if (nrows <= 0 || c->g.c <= 0) return FL_OK;
    c->chunk = c->g.c < FL_BLOCK_ELEMS ? c->g.c : FL_BLOCK_ELEMS;
    c->per_row = (c->g.c + c->chunk - 1) / c->chunk;
    c->per_block = fl_rows_per_block(c->chunk);
    c->n_pieces = nrows * c->per_row;
    c->sum = total != NULL;
    c->runs = fl_bce_runs(c);
    c->buf_n = c->runs ? FL_BCE_RUN : c->chunk;
    int64_t n_blocks = (c->n_pieces + c->per_block - 1) / c->per_block, ns = fl_stripe_count(n_blocks);
    c->slot = (fl_bce_slot *)malloc((size_t)ns * sizeof(fl_bce_slot));
    if (!c->slot) return FL_ENOMEM;
    for (int64_t i = 0; i < ns; i++) {
        fl_rsum_init(&c->slot[i].total);
        c->slot[i].status = FL_OK;
    }
    fl_stripes_run(n_blocks, ns, task, c);
    int st = FL_OK;
    for (int64_t i = 0; i < ns; i++) {
        if (c->slot[i].status == FL_ENOMEM) st = FL_ENOMEM;
        else if (c->slot[i].status == FL_EBADTARGET && st == FL_OK) st = FL_EBADTARGET;
        if (total) fl_rsum_merge(total, &c->slot[i].total);
    }
    free(c->slot);
    return st;
}

static int fl_pow_mode(double gamma)
{
    if (gamma == 0.0) return FL_POW_ONE;
    if (gamma == 1.0) return FL_POW_ID;
    if (gamma == 2.0) return FL_POW_SQ;
    return FL_POW_GEN;
}

int FL_FN(bce)(const fl_arr *x, const fl_arr *y, const fl_arr *w, const fl_arr *pw, const fl_arr *loss,
               const fl_arr *grad, fl_grid g, const fl_bce_opts *o, fl_rsum *total)
{
    fl_bce_ctx c = {x, y, w, pw, loss, grad, g, *o, x->dtype == FL_F64, fl_pow_mode(o->gamma),
                    0, 0, 0, 0, 0, 0, 0, NULL};
    return fl_bce_drive(&c, fl_bce_task, total);
}

int FL_FN(check_binary_target)(const fl_arr *y, fl_grid g)
{
    fl_bce_opts o = {FL_LOSS_BCE, -1.0, 0.0, 1.0, 1, 0};
    fl_bce_ctx c = {NULL, y, NULL, NULL, NULL, NULL, g, o, 0, FL_POW_ONE, 0, 0, 0, 0, 0, 0, 0, NULL};
    return fl_bce_drive(&c, fl_check_task, NULL);
}
