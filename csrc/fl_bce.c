/* fl_bce.c: binary cross-entropy with logits and sigmoid focal loss, loss and gradient in one
 * pass over logits and targets. Compiled once per ISA; every exported symbol is FL_FN(name).
 *
 * Work units. The losses are elementwise, so a long row (a 1-D array is a single row) is cut
 * into pieces of at most FL_BLOCK_ELEMS elements, and a block is a fixed run of pieces of about
 * FL_BLOCK_ELEMS elements: the partition depends only on the shape. Each block stores its
 * float64 loss sum and the total adds them in block order, so it is bitwise the same for any
 * thread count. Targets are read in their own dtype (float, bool or integer) a piece at a time.
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
 */
#include <math.h>
#include <stdlib.h>

#include "fastlogits.h"
#include "fl_kernels.h"
#include "fl_pool.h"
#include "fl_rowio.h"
#include "fl_rowmath.h"
#include "fl_rowmath_f64.h"
#include "fl_sigmoid_math.h"

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
    double *partial;         /* one loss sum per block, or NULL */
    unsigned char *status;   /* one status per block */
} fl_bce_ctx;

/* ---------------- targets ---------------- */

static inline int fl_in01(double v) { return (v >= 0.0) & (v <= 1.0); } /* nan: 0 */

/* buf[k] = target k as CT; ok &= its validity (the loop is the same for every dtype) */
#define FL_READ_TARGETS(T, VAL, VALID)                                              \
    do {                                                                            \
        const T *s_ = (const T *)p;                                                 \
        for (int64_t k = 0; k < n; k++) {                                           \
            T v = s_[k * sc];                                                       \
            ok &= (VALID);                                                          \
            buf[k] = (VAL);                                                         \
        }                                                                           \
    } while (0)

#define FL_TARGET_SWITCH(CT)                                                                  \
    switch (a->dtype) {                                                                       \
    case FL_F32: FL_READ_TARGETS(float, (CT)v, fl_in01(v)); break;                          \
    case FL_F64: FL_READ_TARGETS(double, (CT)v, fl_in01(v)); break;                         \
    case FL_F16: FL_READ_TARGETS(uint16_t, (CT)fl_f16_to_f32(v), fl_in01(fl_f16_to_f32(v))); break; \
    case FL_BF16: FL_READ_TARGETS(uint16_t, (CT)fl_bf16_to_f32(v), fl_in01(fl_bf16_to_f32(v))); break; \
    case FL_I64: FL_READ_TARGETS(int64_t, (CT)v, (v == 0) | (v == 1)); break;               \
    case FL_I32: FL_READ_TARGETS(int32_t, (CT)v, (v == 0) | (v == 1)); break;               \
    case FL_I16: FL_READ_TARGETS(int16_t, (CT)v, (v == 0) | (v == 1)); break;               \
    case FL_I8: FL_READ_TARGETS(int8_t, (CT)v, (v == 0) | (v == 1)); break;                 \
    case FL_BOOL: FL_READ_TARGETS(uint8_t, (CT)v, v <= 1); break;                           \
    default: ok = 0; break;                                                                   \
    }

/* Are the targets of a used in place by fl_lanes_t (contiguous float32)? */
static inline int fl_targets_in_place_f32(const fl_arr *a) { return a->dtype == FL_F32 && a->sc == 1; }

/* The n targets at p as contiguous float: in place for contiguous float32 (which the lanes
 * check as they read them, unless check is set here), else converted into buf. Returns 0 when
 * one of those it checked is not a valid binary target. */
static int fl_targets_f32(const fl_arr *a, const char *p, int64_t n, float *buf, const float **out, int check)
{
    int64_t sc = a->sc;
    int ok = 1;
    if (fl_targets_in_place_f32(a)) {
        const float *s = (const float *)p;
        if (check)
            for (int64_t k = 0; k < n; k++) ok &= (s[k] >= 0.0f) & (s[k] <= 1.0f);
        *out = s;
        return ok;
    }
    FL_TARGET_SWITCH(float)
    *out = buf;
    return ok;
}

static int fl_targets_f64(const fl_arr *a, const char *p, int64_t n, double *buf, const double **out)
{
    int64_t sc = a->sc;
    int ok = 1;
    if (a->dtype == FL_F64 && sc == 1) {
        const double *s = (const double *)p;
        for (int64_t k = 0; k < n; k++) ok &= fl_in01(s[k]);
        *out = s;
        return ok;
    }
    FL_TARGET_SWITCH(double)
    *out = buf;
    return ok;
}

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

/* per-lane constants of a piece */
typedef struct { flv one, scale, alpha, alpha_c, gamma; int use_alpha, pow_mode; double gamma_d; } fl_vconst;

/* the coefficient wc of a term with target factor c: 0 where c = 0, whatever the weight (c NaN
 * stays NaN: -|c| is then not < 0 and c*0 is NaN) */
static inline flv fl_vcoef(flv c, flv wc)
{
    return flv_sel_neg(flv_neg(flv_abs(c)), wc, flv_mul(c, flv_set1(0.0f)));
}

static inline void fl_vbce(const fl_vconst *K, flv x, flv y, flv w, flv pw, flv *loss, flv *grad)
{
    flv t = fl_vexp_mabs(x);
    flv yc = flv_sub(K->one, y);
    flv a = fl_vcoef(flv_mul(pw, y), flv_mul(flv_mul(w, pw), y)), b = fl_vcoef(yc, flv_mul(w, yc));
    *loss = fl_vsoftplus2(x, a, b, fl_vlog1p_unit(t));
    if (grad) {
        flv sp, sn;
        fl_vsigmoids(x, t, &sp, &sn);
        *grad = flv_mul(flv_sub(flv_mul(b, sp), flv_mul(a, sn)), K->scale);
    }
}

static inline void fl_vfocal(const fl_vconst *K, flv x, flv y, flv *loss, flv *grad)
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

/* one vector of the piece: its loss (and gradient) for x, y and the weights w, pw */
static inline flv fl_lane_loss(int focal, const fl_vconst *K, flv vx, flv vy, flv vw, flv vp, flv *vg)
{
    flv vl;
    if (focal) fl_vfocal(K, vx, vy, &vl, vg);
    else fl_vbce(K, vx, vy, vw, vp, &vl, vg);
    return vl;
}

/* One piece of n contiguous elements; returns the sum of its losses (double). With check set,
 * the targets are checked here, in the pass that reads them, and *ok cleared if one is not in
 * [0, 1]. focal: the focal loss, else BCE. The logits x and the outputs l and g are of dtype
 * dt (float32, float16 or bfloat16: widened as loaded, narrowed as stored). */
FL_ALWAYS_INLINE double fl_lanes_f32_body(const fl_bce_ctx *c, const void *x, const float *y, const float *w,
                                          const float *pw, void *l, void *g, int64_t n, int check, int *ok,
                                          int focal, int32_t dt)
{
    fl_vconst K = {flv_set1(1.0f), flv_set1((float)c->o.grad_scale), flv_set1((float)c->o.alpha),
                   flv_set1((float)(1.0 - c->o.alpha)), flv_set1((float)c->o.gamma),
                   c->o.alpha >= 0.0, c->pow_mode, c->o.gamma};
    fl_dacc acc = fl_dacc_zero();
    fl_vrange range = {flv_set1(0.0f), flv_set1(0.0f)};
    flv vg;
    int64_t k = 0;
    /* four vectors per step: each is one long dependency chain (exp, log1p), so independent
     * chains side by side keep the vector units busy where one would wait on latencies */
    for (; k + 4 * FL_W <= n; k += 4 * FL_W) {
        flv vl[4], vgs[4];
        FL_UNROLL(4)
        for (int j = 0; j < 4; j++) {
            int64_t o = k + j * FL_W;
            flv vx = fl_xload(x, o, dt), vy = flv_load(y + o);
            flv vw = w ? flv_load(w + o) : K.one, vp = pw ? flv_load(pw + o) : K.one;
            vl[j] = fl_lane_loss(focal, &K, vx, vy, vw, vp, g ? &vgs[j] : NULL);
            if (check) fl_vrange_add(&range, vy);
        }
        FL_UNROLL(4)
        for (int j = 0; j < 4; j++) {
            acc = fl_dacc_add(acc, vl[j]);
            if (l) fl_xstore_part(l, k + j * FL_W, vl[j], FL_W, dt);
            if (g) fl_xstore_part(g, k + j * FL_W, vgs[j], FL_W, dt);
        }
    }
    for (; k + FL_W <= n; k += FL_W) {
        flv vx = fl_xload(x, k, dt), vy = flv_load(y + k);
        flv vw = w ? flv_load(w + k) : K.one, vp = pw ? flv_load(pw + k) : K.one;
        flv vl = fl_lane_loss(focal, &K, vx, vy, vw, vp, g ? &vg : NULL);
        if (check) fl_vrange_add(&range, vy);
        acc = fl_dacc_add(acc, vl);
        if (l) fl_xstore_part(l, k, vl, FL_W, dt);
        if (g) fl_xstore_part(g, k, vg, FL_W, dt);
    }
    if (k < n) {
        int64_t m = n - k;
        flv vx = fl_xload_part(x, k, m, 0.0f, dt), vy = flv_load_part(y + k, m, 0.0f);
        flv vw = w ? flv_load_part(w + k, m, 0.0f) : K.one, vp = pw ? flv_load_part(pw + k, m, 0.0f) : K.one;
        flv vl = fl_lane_loss(focal, &K, vx, vy, vw, vp, g ? &vg : NULL);
        if (check) fl_vrange_add(&range, vy);
        /* the fill lanes hold finite losses of x = y = 0: mask them out of the sum */
        acc = fl_dacc_add(acc, flv_mul(vl, flv_load_part(fl_ones, m, 0.0f)));
        if (l) fl_xstore_part(l, k, vl, m, dt);
        if (g) fl_xstore_part(g, k, vg, m, dt);
    }
    if (check) *ok &= fl_vrange_in01(range);
    return fl_dacc_sum(acc);
}

/* fl_lanes_f32_body for logits of dtype dt, with the common option sets (no weights, no per-element loss, targets
 * checked here; loss or loss and gradient) compiled as constants: no branch in the loop */
FL_ALWAYS_INLINE double fl_lanes_t(const fl_bce_ctx *c, const void *x, const float *y, const float *w,
                                   const float *pw, void *l, void *g, int64_t n, int check, int *ok, int32_t dt)
{
    int focal = c->o.kind == FL_LOSS_FOCAL;
    if (!w && !pw && !l && check) {
        if (focal) {
            return g ? fl_lanes_f32_body(c, x, y, NULL, NULL, NULL, g, n, 1, ok, 1, dt)
                     : fl_lanes_f32_body(c, x, y, NULL, NULL, NULL, NULL, n, 1, ok, 1, dt);
        }
        return g ? fl_lanes_f32_body(c, x, y, NULL, NULL, NULL, g, n, 1, ok, 0, dt)
                 : fl_lanes_f32_body(c, x, y, NULL, NULL, NULL, NULL, n, 1, ok, 0, dt);
    }
    return fl_lanes_f32_body(c, x, y, w, pw, l, g, n, check, ok, focal, dt);
}

/* ---------------- float64 elements ---------------- */

static inline double fl_mul0_d(double a, double b) { double p = a * b; return p == p ? p : 0.0; }

static inline double fl_softplus2_d(double x, double a, double b, double L)
{
    double rn = x < 0.0 ? -x : 0.0, rp = x > 0.0 ? x : 0.0;
    return (fl_mul0_d(a, rn) + fl_mul0_d(b, rp)) + (a + b) * L;
}

/* q^gamma scaled by 2^512 where it is below about 2^-300 (*down = 2^-512 then, else 1): a loss
 * or gradient built from a factor that small can fall below the normal range, where each of
 * its products would round to the subnormal grid; scaled, the result is rounded there once,
 * by the final multiplication by *down (the fuzz harness found a loss 1 subnormal unit off). */
static inline double fl_pow_scaled_d(double q, int mode, double gamma, double *down)
{
    int small;
    double m;
    switch (mode) {
    case FL_POW_ONE:
        small = 0;
        m = 1.0;
        break;
    case FL_POW_ID:
        small = q < 0x1p-300;
        m = small ? q * 0x1p512 : q;
        break;
    case FL_POW_SQ:
        small = q < 0x1p-150;
        m = small ? (q * 0x1p256) * (q * 0x1p256) : q * q;
        break;
    default: {
        /* 2^-300 = e^-207.9; the shift's rounding, at most ulp(355) = 6e-14 relative, is
         * no larger than the rounding of gamma*log q that far out */
        double lq = gamma * fl_log_d(q);
        small = lq < -208.0;
        m = fl_exp_d(small ? lq + 512.0 * FL_LN2_HI_D + 512.0 * FL_LN2_LO_D : lq);
    }
    }
    *down = small ? 0x1p-512 : 1.0;
    return m;
}

/* the float64 twin of fl_lanes_t, element by element (each ISA build vectorises the loops);
 * l receives the losses (a scratch row when the caller does not keep them) */
static double fl_elems_f64(const fl_bce_ctx *c, const double *x, const double *y, const double *w,
                           const double *pw, double *l, double *g, int64_t n)
{
    double scale = c->o.grad_scale, alpha = c->o.alpha, gamma = c->o.gamma;
    int use_alpha = alpha >= 0.0, mode = c->pow_mode;
    if (c->o.kind == FL_LOSS_BCE) {
        for (int64_t k = 0; k < n; k++) {
            double xk = x[k], yk = y[k], wk = w ? w[k] : 1.0, pk = pw ? pw[k] : 1.0;
            double t = fl_exp_d(-fabs(xk));
            double yc = 1.0 - yk;
            double a = pk * yk == 0.0 ? 0.0 : (wk * pk) * yk, b = yc == 0.0 ? 0.0 : wk * yc; /* see fl_vcoef */
            l[k] = fl_softplus2_d(xk, a, b, fl_log1p_d(t));
            if (g) {
                double r = 1.0 / (1.0 + t), tr = t * r;
                double sp = xk < 0.0 ? tr : r, sn = xk < 0.0 ? r : tr;
                g[k] = (b * sp - a * sn) * scale;
            }
        }
    } else {
        for (int64_t k = 0; k < n; k++) {
            double xk = x[k], yk = y[k], yc = 1.0 - yk;
            double t = fl_exp_d(-fabs(xk));
            double ce = fl_softplus2_d(xk, yk, yc, fl_log1p_d(t));
            double r = 1.0 / (1.0 + t), tr = t * r;
            double sp = xk < 0.0 ? tr : r, sn = xk < 0.0 ? r : tr;
            double q = sp * yc + sn * yk, down;
            double mod = fl_pow_scaled_d(q, mode, gamma, &down);
            double at = use_alpha ? alpha * yk + (1.0 - alpha) * yc : 1.0;
            /* a small ce is scaled up too, for the same reason: down becomes 2^-1024 (exact) */
            int ce_small = ce < 0x1p-600;
            double ce_s = ce_small ? ce * 0x1p512 : ce, ldown = ce_small ? down * 0x1p-512 : down;
            l[k] = (at * (ce_s * mod)) * ldown;
            if (g) {
                double dce = sp * yc - yk * sn;
                double t2 = ((gamma * ce) * mod) * ((sp * sn / q) * (yc - yk));
                t2 = t2 == t2 ? t2 : 0.0;
                g[k] = ((at * (mod * dce + t2)) * scale) * down;
            }
        }
    }
    /* eight compensated lanes in a fixed order: plain running sums lost up to 700 ULP over a
     * million elements each within 0.5 ULP */
    fl_csum8 acc = {{0}, {0}};
    for (int64_t k = 0; k < n; k++) fl_csum8_add(&acc, (int)(k & 7), l[k]);
    double total = fl_csum8_total(&acc);
    if (isfinite(total)) return total;
    /* an infinite loss (x = +-inf) or a nan: the compensation holds inf - inf, the plain sum
     * the right value */
    total = 0.0;
    for (int64_t k = 0; k < n; k++) total += l[k];
    return total;
}

/* ---------------- pieces, blocks, driver ---------------- */

/* element k0 of row (i0, i1) of a */
static inline char *fl_piece_ptr(const fl_arr *a, int64_t i0, int64_t i1, int64_t k0)
{
    return fl_row_ptr(a, i0, i1) + k0 * a->sc * (int64_t)fl_esize(a->dtype);
}

/* scratch of a task: six rows of one piece (x, y, w, pw, loss, grad) */
#define FL_BCE_BUFS 6

static double fl_piece_f32(const fl_bce_ctx *c, int64_t i0, int64_t i1, int64_t k0, int64_t n,
                           float *buf, int *ok)
{
    int64_t m = c->chunk;
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
    double s = fl_x_dispatch(dt, fl_lanes_t, c, x, y, w, pw, l, g, n, lanes_check, ok);
    if (l && !native) fl_row_out_f32(c->loss, lrow, n, (const float *)l);
    if (g && !native) fl_row_out_f32(c->grad, grow, n, (const float *)g);
    return s;
}

static double fl_piece_f64(const fl_bce_ctx *c, int64_t i0, int64_t i1, int64_t k0, int64_t n,
                           double *buf, int *ok)
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
    double s = fl_elems_f64(c, x, y, w, pw, l, g, n);
    if (lrow) fl_row_out_f64(c->loss, lrow, n, l);
    if (g) fl_row_out_f64(c->grad, grow, n, g);
    return s;
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

static void fl_bce_task(void *vctx, int64_t b0, int64_t b1)
{
    fl_bce_ctx *c = (fl_bce_ctx *)vctx;
    size_t esz = c->f64 ? sizeof(double) : sizeof(float);
    void *buf = malloc(FL_BCE_BUFS * (size_t)c->chunk * esz);
    for (int64_t b = b0; b < b1; b++) {
        if (!buf) { c->status[b] = FL_ENOMEM; continue; }
        int64_t u1 = (b + 1) * c->per_block < c->n_pieces ? (b + 1) * c->per_block : c->n_pieces;
        double sum = 0.0, comp = 0.0; /* compensated: a block may hold thousands of short pieces */
        int ok = 1;
        for (int64_t u = b * c->per_block; u < u1; u++) {
            int64_t i0, i1, k0, n;
            fl_piece_pos(c, u, &i0, &i1, &k0, &n);
            fl_neumaier(&sum, &comp, c->f64 ? fl_piece_f64(c, i0, i1, k0, n, (double *)buf, &ok)
                                            : fl_piece_f32(c, i0, i1, k0, n, (float *)buf, &ok));
        }
        if (c->partial) c->partial[b] = isfinite(sum) ? sum + comp : sum;
        c->status[b] = ok ? FL_OK : FL_EBADTARGET;
    }
    free(buf);
}

static void fl_check_task(void *vctx, int64_t b0, int64_t b1)
{
    fl_bce_ctx *c = (fl_bce_ctx *)vctx;
    float *buf = (float *)malloc((size_t)c->chunk * sizeof(float));
    for (int64_t b = b0; b < b1; b++) {
        if (!buf) { c->status[b] = FL_ENOMEM; continue; }
        int64_t u1 = (b + 1) * c->per_block < c->n_pieces ? (b + 1) * c->per_block : c->n_pieces;
        int ok = 1;
        for (int64_t u = b * c->per_block; u < u1; u++) {
            int64_t i0, i1, k0, n;
            const float *y;
            fl_piece_pos(c, u, &i0, &i1, &k0, &n);
            ok &= fl_targets_f32(c->y, fl_piece_ptr(c->y, i0, i1, k0), n, buf, &y, 1);
        }
        c->status[b] = ok ? FL_OK : FL_EBADTARGET;
    }
    free(buf);
}

/* Split the grid into pieces and blocks, run task over the blocks, combine in block order.
 * FL_ENOMEM wins over FL_EBADTARGET (the answer would be incomplete either way). */
static int fl_bce_drive(fl_bce_ctx *c, fl_task_fn task, double *total)
{
    int64_t nrows = c->g.n0 * c->g.n1;
    if (total) *total = 0.0;
    if (nrows <= 0 || c->g.c <= 0) return FL_OK;
    c->chunk = c->g.c < FL_BLOCK_ELEMS ? c->g.c : FL_BLOCK_ELEMS;
    c->per_row = (c->g.c + c->chunk - 1) / c->chunk;
    c->per_block = fl_rows_per_block(c->chunk);
    c->n_pieces = nrows * c->per_row;
    int64_t n_blocks = (c->n_pieces + c->per_block - 1) / c->per_block;
    c->status = (unsigned char *)malloc((size_t)n_blocks);
    c->partial = total ? (double *)malloc((size_t)n_blocks * sizeof(double)) : NULL;
    if (!c->status || (total && !c->partial)) {
        free(c->status);
        free(c->partial);
        return FL_ENOMEM;
    }
    fl_parallel_for(n_blocks, task, c);
    int st = FL_OK;
    double sum = 0.0, comp = 0.0;
    for (int64_t b = 0; b < n_blocks; b++) {
        if (c->status[b] == FL_ENOMEM) st = FL_ENOMEM;
        else if (c->status[b] == FL_EBADTARGET && st == FL_OK) st = FL_EBADTARGET;
        if (c->partial) fl_neumaier(&sum, &comp, c->partial[b]);
    }
    if (total) *total = isfinite(sum) ? sum + comp : sum;
    free(c->status);
    free(c->partial);
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
               const fl_arr *grad, fl_grid g, const fl_bce_opts *o, double *total)
{
    fl_bce_ctx c = {x, y, w, pw, loss, grad, g, *o, x->dtype == FL_F64, fl_pow_mode(o->gamma),
                    0, 0, 0, 0, NULL, NULL};
    return fl_bce_drive(&c, fl_bce_task, total);
}

int FL_FN(check_binary_target)(const fl_arr *y, fl_grid g)
{
    fl_bce_opts o = {FL_LOSS_BCE, -1.0, 0.0, 1.0, 1};
    fl_bce_ctx c = {NULL, y, NULL, NULL, NULL, NULL, g, o, 0, FL_POW_ONE, 0, 0, 0, 0, NULL, NULL};
    return fl_bce_drive(&c, fl_check_task, NULL);
}
