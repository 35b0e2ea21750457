# Included by _core.pyx: the order-independent sum states (fl_rsum.c; fastlogits._rsum).

cdef extern from "fastlogits.h":
    void fl_rsum_init_n(fl_rsum *s, int64_t n) nogil
    void fl_rsum_merge_n(fl_rsum *into, const fl_rsum *other, int64_t n) nogil
    void fl_rsum_value_n(const fl_rsum *s, double *out, int64_t n) nogil
    void fl_rsum_add_n(fl_rsum *s, const double *x, int64_t n, int64_t stride) nogil
    int64_t fl_rsum_check_n(const fl_rsum *s, int64_t n) nogil


RSUM_WORDS = FL_RSUM_WORDS


def rsum_init(cnp.ndarray states):
    """Make every one of the C-contiguous int64 states (..., RSUM_WORDS) the state of an empty sum."""
    cdef fl_rsum *s = <fl_rsum *>cnp.PyArray_DATA(states)
    cdef int64_t n = states.size // RSUM_WORDS
    with nogil:
        fl_rsum_init_n(s, n)


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

