"""PyTorch recipe: fastlogits' fused cross-entropy as a ``torch.autograd.Function``.

The forward pass computes the loss and its gradient in one pass over the logits
(``fl.cross_entropy_and_grad``); backward only scales the saved gradient. Semantics are those
of ``torch.nn.functional.cross_entropy`` (class axis 1, or 0 for a 1-D input)::

    from torch_cross_entropy import cross_entropy
    loss = cross_entropy(logits, target, weight=w, ignore_index=-100,
                         reduction="mean", label_smoothing=0.1)
    loss.backward()

CPU tensors of float32 or float64 (float16/bfloat16 work too: fastlogits computes them in
float32 and returns their own dtype).
"""
from typing import Any, Optional, Tuple

import numpy as np
import torch

import fastlogits as fl


def _to_torch(a: Any) -> torch.Tensor:
    """A NumPy result (or Python float) as a tensor; ml_dtypes bfloat16 goes through its bits."""
    a = np.asarray(a)
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(np.array(a))


class FastCrossEntropy(torch.autograd.Function):
    """loss = cross_entropy(logits, target, ...); the gradient is computed with the loss."""

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor],
                ignore_index: int, reduction: str, label_smoothing: float) -> torch.Tensor:
        axis = 1 if logits.ndim >= 2 else 0
        w = None if weight is None else weight.detach().cpu().numpy()
        loss, grad = fl.cross_entropy_and_grad(
            logits.detach(), target, axis=axis, weight=w, ignore_index=ignore_index,
            reduction=reduction, label_smoothing=label_smoothing)
        ctx.axis = axis
        ctx.save_for_backward(_to_torch(grad))
        return _to_torch(loss).to(logits.dtype)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:
        (grad,) = ctx.saved_tensors
        if grad_output.ndim > 0:  # reduction="none": one upstream value per row
            grad_output = grad_output.unsqueeze(ctx.axis)
        return grad * grad_output, None, None, None, None, None


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor] = None,
                  ignore_index: int = -100, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> torch.Tensor:
    """Drop-in for ``torch.nn.functional.cross_entropy`` on CPU tensors."""
    return FastCrossEntropy.apply(logits, target, weight, ignore_index, reduction, label_smoothing)
