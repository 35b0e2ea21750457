# Included by _core.pyx: the evaluation kernels (fl_score.c, fl_seq.c).

cdef extern from "fastlogits.h":
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
        int64_t *pcn
        uint64_t *pcf
    int fl_score(const fl_arr *x, const fl_arr *target, const fl_arr *weight, fl_grid g,
                 const fl_score_opts *o, fl_rsum *acc) nogil
    void fl_score_pc_fold(const fl_score_opts *o, int64_t c) nogil
    ctypedef struct fl_seq_args:
        fl_arr x
        fl_arr tokens
        int64_t ignore_index
        double temperature
    int fl_sequence_scores(const fl_seq_args *a, fl_grid g, fl_rsum *logprob, int64_t *count,
                           uint8_t *greedy, int64_t *first_bad) nogil


def score(tuple x, tuple target, weight, tuple grid, int mode, bint want_rank, int64_t k,
          int64_t bins, double temperature, int64_t sums, cnp.ndarray acc, int64_t ignore_index,
          int per_class, int64_t auc_bins, cm, cmw, pc, pcn, pcf):
    """Merge a chunk's weighted sums into ``acc`` (C-contiguous int64 sum states,
    (10 + 3*bins, RSUM_WORDS)); ``sums`` says which to fill (fl_score_opts); ``weight`` is a
    spec or None (weights of 1). Per-class sums (``per_class`` bits, fl_score_opts): ``cm``
    C-contiguous int64 (C, C) counts, ``cmw`` int64 (C, C, RSUM_WORDS) states, ``pc`` int64
    (C, npc, RSUM_WORDS) states with their exact parts ``pcn`` (int64 (C, npc)) and ``pcf``
    (uint64 (C, bins or 0, 2)), each None when not used."""
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
    o.pcn = NULL if pcn is None else <int64_t *>cnp.PyArray_DATA(<cnp.ndarray>pcn)
    o.pcf = NULL if pcf is None else <uint64_t *>cnp.PyArray_DATA(<cnp.ndarray>pcf)
    cdef fl_rsum *pacc = <fl_rsum *>cnp.PyArray_DATA(acc)
    cdef int st
    with nogil:
        st = fl_score(&cx, &ct, pw, g, &o, pacc)
    _check(st)


def score_pc_fold(int per_class, int64_t bins, int64_t auc_bins, cnp.ndarray pc, cnp.ndarray pcn,
                  cnp.ndarray pcf):
    """Deposit the exact per-class sums ``pcn`` and ``pcf`` (as ``score`` fills them) into the
    states ``pc`` (C-contiguous, as ``score`` takes them), then zero them."""
    cdef fl_score_opts o
    o.per_class = per_class
    o.bins = bins
    o.auc_bins = auc_bins
    o.pc = <fl_rsum *>cnp.PyArray_DATA(pc)
    o.pcn = <int64_t *>cnp.PyArray_DATA(pcn)
    o.pcf = <uint64_t *>cnp.PyArray_DATA(pcf)
    cdef int64_t c = pc.shape[0]
    with nogil:
        fl_score_pc_fold(&o, c)


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

