"""fastlogits: logits to probabilities, predictions, losses and gradients, fast, on the CPU.

The public API is fixed by the project's API contract; every function accepts anything
``np.asarray`` does plus CPU DLPack objects (PyTorch tensors, JAX arrays) and never modifies
its inputs.
"""
from ._version import __version__
from ._config import _select_isa_from_env, get_num_threads, set_num_threads, show_config
from ._bce import (
    bce_with_logits,
    bce_with_logits_and_grad,
    sigmoid_focal_loss,
    sigmoid_focal_loss_and_grad,
)
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
from ._score import fit_temperature, score

_select_isa_from_env()

from ._threadpool import register as _register_threadpoolctl  # noqa: E402

_register_threadpoolctl()

__all__ = [
    "__version__",
    "apply_penalties",
    "bce_with_logits",
    "bce_with_logits_and_grad",
    "cross_entropy",
    "cross_entropy_and_grad",
    "entropy",
    "filter_logits",
    "fit_temperature",
    "get_num_threads",
    "log_sigmoid",
    "log_softmax",
    "logsumexp",
    "predict",
    "predict_binary",
    "sample",
    "score",
    "set_num_threads",
    "show_config",
    "sigmoid",
    "sigmoid_focal_loss",
    "sigmoid_focal_loss_and_grad",
    "softmax",
    "token_logprobs",
    "topk",
]
