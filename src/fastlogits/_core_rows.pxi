# Included by _core.pyx: the row kernels of post-processing (fl_softmax.c, fl_reduce.c,
# fl_sigmoid.c, fl_select.c).

cdef extern from "fastlogits.h":
    int fl_softmax(const fl_arr *x, const fl_arr *y, fl_grid g, int mode) nogil
    int fl_row_reduce(const fl_arr *x, const fl_arr *out, fl_grid g, int what) nogil
    int fl_elementwise(const fl_arr *x, const fl_arr *y, fl_grid g, int op) nogil
    int fl_argmax(const fl_arr *x, const fl_arr *out, fl_grid g) nogil
    int fl_topk(const fl_arr *x, const fl_arr *values, const fl_arr *indices, fl_grid g, int64_t k) nogil
    int fl_threshold(const fl_arr *x, const fl_arr *out, fl_grid g, double t) nogil


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

