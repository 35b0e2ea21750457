"""Kernel status codes (csrc/fastlogits.h) become exceptions through one table in _core.pyx:
FL_ENOMEM -> MemoryError, FL_EBADTARGET -> BadTargetError (a ValueError); an unknown code ->
RuntimeError, never a MemoryError that would send users hunting for memory."""
import os
import re

import numpy as np
import pytest

import fastlogits as fl
from fastlogits import _core

HEADER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "csrc", "fastlogits.h")

# A class axis of 2**40 elements as a zero-stride view: a few bytes of memory, but every row
# gathered into a scratch row of 2**40 floats, which no allocator grants: FL_ENOMEM, reached
# without exhausting anything.
HUGE = 2**40


def _huge(dtype, rows=3):
    return np.broadcast_to(np.asarray(1, dtype=dtype), (rows, HUGE))


def _status_codes():
    """name -> value of every status code #defined in fastlogits.h."""
    with open(HEADER) as f:
        return {m.group(1): int(m.group(2)) for m in re.finditer(r"#define (FL_E\w+|FL_OK) (\d+)", f.read())}


@pytest.mark.skipif(not os.path.exists(HEADER), reason="needs the source tree (csrc/fastlogits.h)")
def test_every_status_code_of_the_header_has_its_exception():
    codes = _status_codes()
    assert codes.get("FL_OK") == 0 and len(codes) >= 3, codes
    expected = {"FL_ENOMEM": MemoryError, "FL_EBADTARGET": _core.BadTargetError}
    assert set(codes) - {"FL_OK"} == set(expected), "a new status code needs its row in _STATUS_ERRORS and here"
    for name, exc in expected.items():
        err = _core.status_error(codes[name])
        assert type(err) is exc, (name, err)
        assert str(err).startswith("fastlogits: ")


def test_an_unknown_status_is_not_reported_as_memory():
    err = _core.status_error(99)
    assert type(err) is RuntimeError and "unknown status 99" in str(err)


@pytest.mark.parametrize("func", [
    lambda x: fl.logsumexp(x),
    lambda x: fl.entropy(x),
    lambda x: fl.predict(x),
    lambda x: fl.topk(x, 2),
], ids=["logsumexp", "entropy", "predict", "topk"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_enomem_is_memory_error(func, dtype):
    with pytest.raises(MemoryError, match="fastlogits: a kernel could not allocate its scratch memory"):
        func(_huge(dtype))


def test_ebadtarget_is_a_value_error_from_the_kernel():
    x = np.zeros((4, 3), np.float32)
    y = np.array([[0, 1, 1], [0, 0, 1], [1, 2, 0], [0, 0, 0]], np.int64)
    spec_y = (y, 4, 3, 0, 1)  # int64 targets: their rows as the kernels see them
    with pytest.raises(_core.BadTargetError, match="binary target"):
        _core.check_binary_target(spec_y, (4, 1, 3))
    assert issubclass(_core.BadTargetError, ValueError)
    # the public function turns it into a message naming the value and its position
    with pytest.raises(ValueError, match=r"target: expected 0 or 1 \(integer targets\), got 2 at position \(2, 1\)"):
        fl.bce_with_logits(x, y)
    with pytest.raises(ValueError, match=r"got 2 at position \(2, 1\)"):
        fl.bce_with_logits_and_grad(x, y, grad_out=np.empty_like(x))
