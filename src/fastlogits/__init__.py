"""fastlogits: logits to probabilities, predictions, losses and gradients, fast, on the CPU.

The public API is fixed by the project's API contract; every function accepts anything
``np.asarray`` does plus CPU DLPack objects (PyTorch tensors, JAX arrays) and never modifies
its inputs. The submodules ``fastlogits.reference`` (the NumPy oracle), ``fastlogits.dask``
(needs Dask) and ``fastlogits.recipes`` are imported on first use, ``fl.reference`` included,
and so is ``fl.open_logits`` (with the file readers behind it).
"""
from typing import TYPE_CHECKING, Any

from ._version import __version__
from ._config import (_select_isa_from_env, _stream_from_env, _subnormals_from_env, get_num_threads, set_num_threads,
                      show_config)
from ._bce import (
    bce_with_logits,
    bce_with_logits_and_grad,
    sigmoid_focal_loss,
    sigmoid_focal_loss_and_grad,
)
from ._ce import cross_entropy, cross_entropy_and_grad
from ._post import (
    entropy,
    log_sigmoid,
    log_softmax,
    logsumexp,
    predict,
    predict_binary,
    sigmoid,
    softmax,
    topk,
)

_select_isa_from_env()
_stream_from_env()
_subnormals_from_env()

from ._threadpool import register as _register_threadpoolctl  # noqa: E402

_register_threadpoolctl()

_LAZY_SUBMODULES = ("dask", "recipes", "reference")
# the evaluation, decoding and file functions, by the module that defines them: imported on
# first use, so that `import fastlogits` (paid by every command-line call) stays near NumPy's
_LAZY_NAMES = {
    "Scorer": "_scorer", "score": "_score", "fit_temperature": "_temperature",
    "calibration_curve": "_calibration", "sequence_scores": "_sequence", "open_logits": "_files",
    "apply_penalties": "_decode", "filter_logits": "_decode", "sample": "_decode", "token_logprobs": "_decode",
}

if TYPE_CHECKING:
    from . import dask, recipes, reference  # noqa: F401
    from ._calibration import calibration_curve
    from ._decode import apply_penalties, filter_logits, sample, token_logprobs
    from ._files import open_logits
    from ._score import score
    from ._scorer import Scorer
    from ._sequence import sequence_scores
    from ._temperature import fit_temperature
else:

    def __getattr__(name: str) -> Any:
        """The submodules ``fl.reference``, ``fl.dask``, ``fl.recipes`` and the functions of
        ``_LAZY_NAMES``: imported on first access, so that ``import fastlogits`` stays fast and
        Dask stays optional."""
        import importlib

        if name in _LAZY_SUBMODULES:
            return importlib.import_module(f"{__name__}.{name}")
        if name in _LAZY_NAMES:
            value = getattr(importlib.import_module(f"{__name__}.{_LAZY_NAMES[name]}"), name)
            globals()[name] = value
            return value
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

    def __dir__() -> "list[str]":
        return sorted(set(globals()) | set(_LAZY_NAMES) | set(_LAZY_SUBMODULES))

__all__ = [
    "Scorer",
    "__version__",
    "apply_penalties",
    "bce_with_logits",
    "bce_with_logits_and_grad",
    "calibration_curve",
    "cross_entropy",
    "cross_entropy_and_grad",
    "entropy",
    "filter_logits",
    "fit_temperature",
    "get_num_threads",
    "log_sigmoid",
    "log_softmax",
    "logsumexp",
    "open_logits",
    "predict",
    "predict_binary",
    "sample",
    "score",
    "sequence_scores",
    "set_num_threads",
    "show_config",
    "sigmoid",
    "sigmoid_focal_loss",
    "sigmoid_focal_loss_and_grad",
    "softmax",
    "token_logprobs",
    "topk",
]
