# Included by _core.pyx: decoding (API section 8; fl_decode.c, fl_logprobs.c, fl_penalties.c).

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
