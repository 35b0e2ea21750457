# cython: language_level=3, boundscheck=False, wraparound=False
"""The binding: operand specs to C structs, the GIL released around every kernel.

An operand spec is the tuple ``(array, dtype_code, s0, s1, sc)`` built by ``fastlogits._layout``:
the array supplies the data pointer, the rest is the row grid in elements. A grid is
``(n0, n1, c)``. Nothing here checks arguments: the Python layer has done that. A kernel's
non-zero status becomes the exception of ``_STATUS_ERRORS``.
"""
cimport numpy as cnp
from libc.stdint cimport int32_t, int64_t, uint8_t
from libc.string cimport memcpy

cnp.import_array()


cdef extern from "fastlogits.h":
    enum:
        FL_OK
        FL_ENOMEM
        FL_EBADTARGET
    ctypedef struct fl_arr:
        void *data
        int32_t dtype
        int64_t s0
        int64_t s1
        int64_t sc
    ctypedef struct fl_grid:
        int64_t n0
        int64_t n1
        int64_t c
    int fl_softmax(const fl_arr *x, const fl_arr *y, fl_grid g, int mode) nogil
    int fl_row_reduce(const fl_arr *x, const fl_arr *out, fl_grid g, int what) nogil
    int fl_elementwise(const fl_arr *x, const fl_arr *y, fl_grid g, int op) nogil
    int fl_argmax(const fl_arr *x, const fl_arr *out, fl_grid g) nogil
    int fl_topk(const fl_arr *x, const fl_arr *values, const fl_arr *indices, fl_grid g, int64_t k) nogil
    int fl_threshold(const fl_arr *x, const fl_arr *out, fl_grid g, double t) nogil
    double fl_stream_read(const float *src, int64_t n) nogil
    void fl_stream_copy(float *dst, const float *src, int64_t n) nogil
    double fl_math_probe(int what, int64_t reps) nogil
    ctypedef struct fl_bce_opts:
        int kind
        double alpha
        double gamma
        double grad_scale
        int check_target
        int per_element
    ctypedef struct fl_rsum:
        int64_t w[8]
    int fl_bce(const fl_arr *x, const fl_arr *y, const fl_arr *w, const fl_arr *pw,
               const fl_arr *loss, const fl_arr *grad, fl_grid g, const fl_bce_opts *o,
               fl_rsum *total) nogil
    int fl_check_binary_target(const fl_arr *y, fl_grid g) nogil
    ctypedef struct fl_ce_args:
        fl_arr x
        fl_arr target
        fl_arr sample_weight
        fl_arr loss
        fl_arr grad
        const double *weight
        int64_t ignore_index
        double label_smoothing
        double z_loss
        double grad_scale_ce
        double grad_scale_z
        int targets_only
    ctypedef struct fl_ce_result:
        fl_rsum ce
        fl_rsum z
        fl_rsum d1
        fl_rsum d2
        int64_t n_valid
        int64_t first_bad
    int fl_cross_entropy(const fl_ce_args *args, fl_grid g, fl_ce_result *res) nogil
    ctypedef struct fl_score_opts:
        int32_t mode
        int32_t want_rank
        int64_t k
        int64_t bins
        double temperature
        int64_t sums
        int64_t ignore_index
        int32_t per_class
        int64_t auc_bins
        int64_t *cm
        fl_rsum *cmw
        fl_rsum *pc
    int fl_score(const fl_arr *x, const fl_arr *target, const fl_arr *weight, fl_grid g,
                 const fl_score_opts *o, fl_rsum *acc) nogil
    ctypedef struct fl_seq_args:
        fl_arr x
        fl_arr tokens
        int64_t ignore_index
        double temperature
    int fl_sequence_scores(const fl_seq_args *a, fl_grid g, fl_rsum *logprob, int64_t *count,
                           uint8_t *greedy, int64_t *first_bad) nogil
    void fl_rsum_merge_n(fl_rsum *into, const fl_rsum *other, int64_t n) nogil
    void fl_rsum_value_n(const fl_rsum *s, double *out, int64_t n) nogil
    void fl_rsum_add_n(fl_rsum *s, const double *x, int64_t n, int64_t stride) nogil
    int64_t fl_rsum_check_n(const fl_rsum *s, int64_t n) nogil
    const char *fl_isa_name()
    const char *fl_isa_best()
    int fl_isa_select(const char *name)


cdef extern from "fl_pool.h":
    int fl_get_num_threads() nogil
    void fl_set_num_threads(int n) nogil
    int fl_default_num_threads() nogil


cdef extern from "fl_build_info.h":
    const char *FL_BUILD_COMPILER
    const char *FL_BUILD_TYPE
    const char *FL_BUILD_TARGET
    const char *FL_BUILD_PATHS
    const char *FL_BUILD_SANITIZER


cdef fl_arr _operand(tuple spec):
    cdef fl_arr a
    cdef cnp.ndarray arr = <cnp.ndarray>spec[0]
    a.data = cnp.PyArray_DATA(arr)
    a.dtype = spec[1]
    a.s0 = spec[2]
    a.s1 = spec[3]
    a.sc = spec[4]
    return a


cdef fl_grid _grid(tuple g):
    cdef fl_grid r
    r.n0 = g[0]
    r.n1 = g[1]
    r.c = g[2]
    return r


class BadTargetError(ValueError):
    """FL_EBADTARGET: a binary target is not 0/1 (integers) or in [0, 1] (floats), or is nan."""


# Every status code of fastlogits.h and the exception it becomes, in one place.
_STATUS_ERRORS = {
    FL_ENOMEM: (MemoryError, "a kernel could not allocate its scratch memory"),
    FL_EBADTARGET: (BadTargetError, "a binary target is not 0/1 (integers) or in [0, 1] (floats), or is nan"),
}


def status_error(int status):
    """The exception for a kernel's non-zero status (RuntimeError for a code not in the table)."""
    exc, message = _STATUS_ERRORS.get(status, (RuntimeError, f"a kernel returned the unknown status {status}"))
    return exc(f"fastlogits: {message}")


cdef int _check(int status) except -1:
    if status != FL_OK:
        raise status_error(status)
    return 0


def softmax(tuple x, tuple y, tuple grid, int mode):
    cdef fl_arr cx = _operand(x), cy = _operand(y)
    cdef fl_grid g = _grid(grid)
    cdef int st
    with nogil:
        st = fl_softmax(&cx, &cy, g, mode)
    _check(st)


def row_reduce(tuple x, tuple out, tuple grid, int what):
    cdef fl_arr cx = _operand(x), co = _operand(out)
    cdef fl_grid g = _grid(grid)
    cdef int st
    with nogil:
        st = fl_row_reduce(&cx, &co, g, what)
    _check(st)


def elementwise(tuple x, tuple y, tuple grid, int op):
    cdef fl_arr cx = _operand(x), cy = _operand(y)
    cdef fl_grid g = _grid(grid)
    cdef int st
    with nogil:
        st = fl_elementwise(&cx, &cy, g, op)
    _check(st)


def argmax(tuple x, tuple out, tuple grid):
    cdef fl_arr cx = _operand(x), co = _operand(out)
    cdef fl_grid g = _grid(grid)
    cdef int st
    with nogil:
        st = fl_argmax(&cx, &co, g)
    _check(st)


def topk(tuple x, tuple values, tuple indices, tuple grid, int64_t k):
    cdef fl_arr cx = _operand(x), cv = _operand(values), ci = _operand(indices)
    cdef fl_grid g = _grid(grid)
    cdef int st
    with nogil:
        st = fl_topk(&cx, &cv, &ci, g, k)
    _check(st)


def threshold(tuple x, tuple out, tuple grid, double t):
    cdef fl_arr cx = _operand(x), co = _operand(out)
    cdef fl_grid g = _grid(grid)
    cdef int st
    with nogil:
        st = fl_threshold(&cx, &co, g, t)
    _check(st)


def stream_read(cnp.ndarray src):
    """Sum of a contiguous float32 array: one read pass, for bandwidth measurement."""
    cdef const float *p = <const float *>cnp.PyArray_DATA(src)
    cdef int64_t n = src.size
    cdef double s
    with nogil:
        s = fl_stream_read(p, n)
    return s


def stream_copy(cnp.ndarray dst, cnp.ndarray src):
    """Copy between contiguous float32 arrays of one size with non-temporal stores."""
    cdef float *d = <float *>cnp.PyArray_DATA(dst)
    cdef const float *s = <const float *>cnp.PyArray_DATA(src)
    cdef int64_t n = src.size
    with nogil:
        fl_stream_copy(d, s, n)


PROBE_ELEMENTS = 1024  # FL_PROBE_N: operations per pass of fl_math_probe
PROBE_OPS = {"exp": 0, "div": 1, "log1p": 2}  # FL_PROBE_EXP, FL_PROBE_DIV, FL_PROBE_LOG1P


def math_probe(str what, int64_t reps):
    """reps passes of the throughput loop of one operation ("exp", "div", "log1p"; fl_probe.c)
    over 1024 floats in L1, on the active ISA; returns its sum. Time the call:
    PROBE_ELEMENTS * reps operations."""
    cdef int op = PROBE_OPS[what]
    cdef double s
    with nogil:
        s = fl_math_probe(op, reps)
    return s


def bce(tuple x, tuple y, w, pw, loss, grad, tuple grid, int kind, double alpha, double gamma,
        double grad_scale, bint check_target, total, bint per_element):
    """Binary loss kernel; w, pw, loss, grad are specs or None; ``total`` a C-contiguous int64
    sum state (RSUM_WORDS) to set to the losses' sum, or None. BadTargetError when a target is
    invalid."""
    cdef fl_arr cx = _operand(x), cy = _operand(y), cw, cpw, cl, cg
    cdef fl_arr *pw_ = NULL
    cdef fl_arr *w_ = NULL
    cdef fl_arr *l_ = NULL
    cdef fl_arr *g_ = NULL
    if w is not None:
        cw = _operand(w)
        w_ = &cw
    if pw is not None:
        cpw = _operand(pw)
        pw_ = &cpw
    if loss is not None:
        cl = _operand(loss)
        l_ = &cl
    if grad is not None:
        cg = _operand(grad)
        g_ = &cg
    cdef fl_grid g = _grid(grid)
    cdef fl_bce_opts o
    o.kind = kind
    o.alpha = alpha
    o.gamma = gamma
    o.grad_scale = grad_scale
    o.check_target = check_target
    o.per_element = per_element
    cdef fl_rsum *t_ = NULL
    if total is not None:
        t_ = <fl_rsum *>cnp.PyArray_DATA(<cnp.ndarray>total)
    cdef int st
    with nogil:
        st = fl_bce(&cx, &cy, w_, pw_, l_, g_, g, &o, t_)
    _check(st)


def check_binary_target(tuple y, tuple grid):
    """BadTargetError unless every target is 0/1 (integers) or in [0, 1] (floats)."""
    cdef fl_arr cy = _operand(y)
    cdef fl_grid g = _grid(grid)
    cdef int st
    with nogil:
        st = fl_check_binary_target(&cy, g)
    _check(st)


cdef fl_arr _optional(object spec):
    cdef fl_arr a
    if spec is None:
        a.data = NULL
        a.dtype = 0
        a.s0 = a.s1 = a.sc = 0
        return a
    return _operand(spec)


def cross_entropy(tuple x, tuple target, object sample_weight, object loss, object grad, tuple grid,
                  object weight, int64_t ignore_index, double label_smoothing, double z_loss,
                  double grad_scale_ce, double grad_scale_z, bint targets_only):
    """The fused cross-entropy kernel. Optional operands (sample_weight, loss, grad) are specs
    or None; ``weight`` is a contiguous float64 array of the C classes or None. Returns
    ``(sums, n_valid, first_bad)``: sums is a (4, RSUM_WORDS) int64 array of the sum states
    ce, z, d1, d2 (see fl_ce_result in fastlogits.h)."""
    cdef fl_ce_args a
    cdef fl_ce_result r
    cdef cnp.ndarray w
    a.x = _operand(x)
    a.target = _operand(target)
    a.sample_weight = _optional(sample_weight)
    a.loss = _optional(loss)
    a.grad = _optional(grad)
    a.weight = NULL
    if weight is not None:
        w = <cnp.ndarray>weight
        a.weight = <const double *>cnp.PyArray_DATA(w)
    a.ignore_index = ignore_index
    a.label_smoothing = label_smoothing
    a.z_loss = z_loss
    a.grad_scale_ce = grad_scale_ce
    a.grad_scale_z = grad_scale_z
    a.targets_only = targets_only
    cdef fl_grid g = _grid(grid)
    cdef int st
    with nogil:
        st = fl_cross_entropy(&a, g, &r)
    _check(st)
    cdef cnp.npy_intp dims[2]
    dims[0] = 4
    dims[1] = 8
    cdef cnp.ndarray sums = cnp.PyArray_ZEROS(2, dims, cnp.NPY_INT64, 0)
    memcpy(cnp.PyArray_DATA(sums), &r.ce, 4 * sizeof(fl_rsum))
    return sums, r.n_valid, r.first_bad


def score(tuple x, tuple target, weight, tuple grid, int mode, bint want_rank, int64_t k,
          int64_t bins, double temperature, int64_t sums, cnp.ndarray acc, int64_t ignore_index,
          int per_class, int64_t auc_bins, cm, cmw, pc):
    """Merge a chunk's weighted sums into ``acc`` (C-contiguous int64 sum states,
    (10 + 3*bins, RSUM_WORDS)); ``sums`` says which to fill (fl_score_opts); ``weight`` is a
    spec or None (weights of 1). Per-class sums (``per_class`` bits, fl_score_opts): ``cm``
    C-contiguous int64 (C, C) counts, ``cmw`` int64 (C, C, RSUM_WORDS) states, ``pc`` int64
    (C, npc, RSUM_WORDS) states, each None when not used."""
    cdef fl_arr cx = _operand(x), ct = _operand(target), cw
    cdef fl_arr *pw = NULL
    if weight is not None:
        cw = _operand(weight)
        pw = &cw
    cdef fl_grid g = _grid(grid)
    cdef fl_score_opts o
    o.mode = mode
    o.want_rank = want_rank
    o.k = k
    o.bins = bins
    o.temperature = temperature
    o.sums = sums
    o.ignore_index = ignore_index
    o.per_class = per_class
    o.auc_bins = auc_bins
    o.cm = NULL if cm is None else <int64_t *>cnp.PyArray_DATA(<cnp.ndarray>cm)
    o.cmw = NULL if cmw is None else <fl_rsum *>cnp.PyArray_DATA(<cnp.ndarray>cmw)
    o.pc = NULL if pc is None else <fl_rsum *>cnp.PyArray_DATA(<cnp.ndarray>pc)
    cdef fl_rsum *pacc = <fl_rsum *>cnp.PyArray_DATA(acc)
    cdef int st
    with nogil:
        st = fl_score(&cx, &ct, pw, g, &o, pacc)
    _check(st)


def sequence_scores(tuple x, tuple tokens, tuple grid, int64_t ignore_index, double temperature,
                    cnp.ndarray logprob, cnp.ndarray count, cnp.ndarray greedy):
    """Merge the per-sequence scores of the rows into ``logprob`` (sum states, C-contiguous
    int64 (n0, RSUM_WORDS)), ``count`` (int64 (n0,)) and ``greedy`` (bool (n0,)), sequence i0
    being row i0 of the grid; returns the first row (grid order) with an out-of-range token,
    or -1."""
    cdef fl_seq_args a
    a.x = _operand(x)
    a.tokens = _operand(tokens)
    a.ignore_index = ignore_index
    a.temperature = temperature
    cdef fl_grid g = _grid(grid)
    cdef fl_rsum *lp = <fl_rsum *>cnp.PyArray_DATA(logprob)
    cdef int64_t *cnt = <int64_t *>cnp.PyArray_DATA(count)
    cdef uint8_t *gr = <uint8_t *>cnp.PyArray_DATA(greedy)
    cdef int64_t bad = -1
    cdef int st
    with nogil:
        st = fl_sequence_scores(&a, g, lp, cnt, gr, &bad)
    _check(st)
    return bad


RSUM_WORDS = 8  # FL_RSUM_WORDS


def rsum_check(cnp.ndarray states):
    """Index of the first of the C-contiguous int64 states (n, RSUM_WORDS) that no deposit can
    have made, or -1."""
    cdef const fl_rsum *s = <const fl_rsum *>cnp.PyArray_DATA(states)
    cdef int64_t n = states.size // RSUM_WORDS
    cdef int64_t r
    with nogil:
        r = fl_rsum_check_n(s, n)
    return r


def rsum_merge(cnp.ndarray into, cnp.ndarray other):
    """into[i] += other[i] for C-contiguous int64 states of one shape (..., RSUM_WORDS)."""
    cdef fl_rsum *a = <fl_rsum *>cnp.PyArray_DATA(into)
    cdef const fl_rsum *b = <const fl_rsum *>cnp.PyArray_DATA(other)
    cdef int64_t n = into.size // RSUM_WORDS
    with nogil:
        fl_rsum_merge_n(a, b, n)


def rsum_value(cnp.ndarray states, cnp.ndarray out):
    """out[i] = the sum of state i (C-contiguous states, float64 out of states.size // RSUM_WORDS)."""
    cdef const fl_rsum *s = <const fl_rsum *>cnp.PyArray_DATA(states)
    cdef double *o = <double *>cnp.PyArray_DATA(out)
    cdef int64_t n = out.size
    with nogil:
        fl_rsum_value_n(s, o, n)


def rsum_add(cnp.ndarray state, cnp.ndarray values):
    """Deposit the float64 1-D ``values`` (any stride) into one C-contiguous state."""
    cdef fl_rsum *s = <fl_rsum *>cnp.PyArray_DATA(state)
    cdef const double *x = <const double *>cnp.PyArray_DATA(values)
    cdef int64_t n = values.shape[0]
    cdef int64_t stride = values.strides[0] // 8 if n > 1 else 1
    with nogil:
        fl_rsum_add_n(s, x, n, stride)


def isa_name():
    return fl_isa_name().decode()


def isa_best():
    return fl_isa_best().decode()


def isa_select(str name):
    """0: selected; 1: unknown name; 2: not supported by this CPU or build."""
    return fl_isa_select(name.encode())


def get_num_threads():
    return fl_get_num_threads()


def set_num_threads(int n):
    fl_set_num_threads(n)


def default_num_threads():
    return fl_default_num_threads()


def build_info():
    """What this extension was built with (fl_build_info.h, generated by CMake)."""
    return {
        "compiler": FL_BUILD_COMPILER.decode(),
        "build_type": FL_BUILD_TYPE.decode(),
        "target": FL_BUILD_TARGET.decode(),
        "simd_paths": FL_BUILD_PATHS.decode().split(),
        "sanitizer": FL_BUILD_SANITIZER.decode() or None,
    }


# ---- decoding (API section 8) ----
from libc.stdint cimport uint32_t

cdef extern from "fastlogits.h":
    ctypedef struct fl_dec_args:
        fl_arr x
        fl_arr temperature
        fl_arr top_k
        fl_arr top_p
        fl_arr min_p
        fl_arr min_keep
        fl_arr seed
        fl_arr offset
        fl_arr stream
        fl_arr out
        fl_arr logprob
    int fl_filter_logits(const fl_dec_args *a, fl_grid g) nogil
    int fl_sample(const fl_dec_args *a, fl_grid g, int64_t *first_bad) nogil
    ctypedef struct fl_lp_args:
        fl_arr x
        fl_arr tokens
        fl_arr temperature
        fl_arr logprob
        fl_arr rank
        fl_arr top_logprob
        fl_arr top_token
        int64_t top_n
    int fl_token_logprobs(const fl_lp_args *a, fl_grid g, int64_t *first_bad) nogil
    ctypedef struct fl_pen_args:
        fl_arr x
        fl_arr prev
        fl_arr repetition
        fl_arr presence
        fl_arr frequency
        int64_t len
    int fl_apply_penalties(const fl_pen_args *a, fl_grid g, int64_t *first_bad) nogil
    void fl_philox4x32_10(const uint32_t *ctr, const uint32_t *key, uint32_t *out) nogil


cdef fl_dec_args _dec_args(tuple x, tuple settings, tuple out):
    """settings: (temperature, top_k, top_p, min_p, min_keep) specs"""
    cdef fl_dec_args a
    a.x = _operand(x)
    a.temperature = _operand(settings[0])
    a.top_k = _operand(settings[1])
    a.top_p = _operand(settings[2])
    a.min_p = _operand(settings[3])
    a.min_keep = _operand(settings[4])
    a.seed = _optional(None)
    a.offset = _optional(None)
    a.stream = _optional(None)
    a.out = _operand(out)
    a.logprob = _optional(None)
    return a


def filter_logits(tuple x, tuple settings, tuple out, tuple grid):
    """Filtered logits into ``out``; ``settings`` holds the specs of (temperature, top_k,
    top_p, min_p, min_keep), one value per row."""
    cdef fl_dec_args a = _dec_args(x, settings, out)
    cdef fl_grid g = _grid(grid)
    cdef int st
    with nogil:
        st = fl_filter_logits(&a, g)
    _check(st)


def sample(tuple x, tuple settings, tuple keys, tuple tokens, object logprob, tuple grid):
    """Draw one token per row into ``tokens``; ``keys`` holds the specs of (seed, offset,
    stream), stream None for the row's index; ``logprob`` is a spec or None. Returns the first
    row (grid order) without a distribution, or -1."""
    cdef fl_dec_args a = _dec_args(x, settings, tokens)
    a.seed = _operand(keys[0])
    a.offset = _operand(keys[1])
    a.stream = _optional(keys[2])
    a.logprob = _optional(logprob)
    cdef fl_grid g = _grid(grid)
    cdef int64_t bad = -1
    cdef int st
    with nogil:
        st = fl_sample(&a, g, &bad)
    _check(st)
    return bad


def token_logprobs(tuple x, tuple tokens, tuple temperature, tuple logprob, object rank, object top_logprob,
                   object top_token, tuple grid, int64_t top_n):
    """Log-probabilities (and ranks, top-n) of the chosen tokens; optional outputs are specs or
    None. Returns the first row (grid order) whose token is out of range, or -1."""
    cdef fl_lp_args a
    a.x = _operand(x)
    a.tokens = _operand(tokens)
    a.temperature = _operand(temperature)
    a.logprob = _operand(logprob)
    a.rank = _optional(rank)
    a.top_logprob = _optional(top_logprob)
    a.top_token = _optional(top_token)
    a.top_n = top_n
    cdef fl_grid g = _grid(grid)
    cdef int64_t bad = -1
    cdef int st
    with nogil:
        st = fl_token_logprobs(&a, g, &bad)
    _check(st)
    return bad


def apply_penalties(tuple x, tuple prev, tuple penalties, tuple grid, int64_t length):
    """Penalise the logits ``x`` in place from the histories ``prev``; ``penalties`` holds the
    specs of (repetition, presence, frequency). Returns the first position (row * length + j)
    of an id past the vocabulary, or -1 (then nothing was modified)."""
    cdef fl_pen_args a
    a.x = _operand(x)
    a.prev = _operand(prev)
    a.repetition = _operand(penalties[0])
    a.presence = _operand(penalties[1])
    a.frequency = _operand(penalties[2])
    a.len = length
    cdef fl_grid g = _grid(grid)
    cdef int64_t bad = -1
    cdef int st
    with nogil:
        st = fl_apply_penalties(&a, g, &bad)
    _check(st)
    return bad


def philox4x32_10(tuple counter, tuple key):
    """Philox-4x32-10 of a counter (4 words) and a key (2 words): the generator of ``sample``,
    for its known-answer tests."""
    cdef uint32_t c[4]
    cdef uint32_t k[2]
    cdef uint32_t o[4]
    for i in range(4):
        c[i] = counter[i]
    for i in range(2):
        k[i] = key[i]
    fl_philox4x32_10(c, k, o)
    return (o[0], o[1], o[2], o[3])
