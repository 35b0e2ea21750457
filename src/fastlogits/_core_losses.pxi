# Included by _core.pyx: the loss kernels (fl_bce.c, fl_ce.c).

cdef extern from "fastlogits.h":
    ctypedef struct fl_bce_opts:
        int kind
        double alpha
        double gamma
        double grad_scale
        int check_target
        int per_element
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
    dims[1] = FL_RSUM_WORDS
    cdef cnp.ndarray sums = cnp.PyArray_ZEROS(2, dims, cnp.NPY_INT64, 0)
    memcpy(cnp.PyArray_DATA(sums), &r.ce, 4 * sizeof(fl_rsum))
    return sums, r.n_valid, r.first_bad

