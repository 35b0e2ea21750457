"""fastlogits: logits to probabilities, predictions, losses and gradients, fast, on the CPU.

The public API is fixed by the project's API contract; every function accepts anything
``np.asarray`` does plus CPU DLPack objects (PyTorch tensors, JAX arrays) and never modifies
its inputs. The submodules ``fastlogits.reference`` (the NumPy oracle), ``fastlogits.dask``
(needs Dask) and ``fastlogits.recipes`` are imported on first use, ``fl.reference`` included,
and so is ``fl.open_logits`` (with the file readers behind it).
"""
from typing import TYPE_CHECKING, Any

from ._version import __version__
from ._config import _select_isa_from_env, get_num_threads, set_num_threads, show_config
from ._bce import (
    bce_with_logits,
    bce_with_logits_and_grad,
    sigmoid_focal_loss,
    sigmoid_focal_loss_and_grad,
)
from ._calibration import calibration_curve
from ._ce import cross_entropy, cross_entropy_and_grad
from ._decode import apply_penalties, filter_logits, sample, token_logprobs
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
from ._score import score
from ._scorer import Scorer
from ._sequence import sequence_scores
from ._temperature import fit_temperature

_select_isa_from_env()

from ._threadpool import register as _register_threadpoolctl  # noqa: E402

_register_threadpoolctl()

_LAZY_SUBMODULES = ("dask", "recipes", "reference")

if TYPE_CHECKING:
    from . import dask, recipes, reference  # noqa: F401
    from ._files import open_logits
else:

    def __getattr__(name: str) -> Any:
        """``fl.reference``, ``fl.dask``, ``fl.recipes`` and ``fl.open_logits``: imported on
        first access, so that ``import fastlogits`` stays fast and Dask stays optional."""
        if name in _LAZY_SUBMODULES:
            import importlib

            return importlib.import_module(f"{__name__}.{name}")
        if name == "open_logits":
            from ._files import open_logits

            return open_logits
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

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
