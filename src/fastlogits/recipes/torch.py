"""PyTorch recipe: fastlogits' fused cross-entropy as a ``torch.autograd.Function``.

The forward pass computes the loss and its gradient in one pass over the logits
(``fl.cross_entropy_and_grad``); backward only scales the saved gradient. Semantics are those
of ``torch.nn.functional.cross_entropy`` (class axis 1, or 0 for a 1-D input)::

    from fastlogits.recipes.torch import cross_entropy
    loss = cross_entropy(logits, target, weight=w, ignore_index=-100,
                         reduction="mean", label_smoothing=0.1)
    loss.backward()

CPU tensors of float32 or float64 (float16/bfloat16 work too: fastlogits computes them in
float32 and returns their own dtype). The saved gradient is a constant to autograd, so the
function is differentiable once: a second derivative (``create_graph=True`` then a derivative
of the gradient, ``gradgradcheck``, ``torch.autograd.functional.hessian`` or ``hvp``) raises
instead of silently coming out as zero.
"""
from typing import Any, Optional, Tuple

import numpy as np
import torch

import fastlogits as fl

_SECOND_DERIVATIVE = (
    "fastlogits.recipes.torch.cross_entropy is differentiable once: its gradient comes from "
    "fastlogits as a constant to autograd, so second derivatives (a derivative of the gradient "
    "under create_graph=True: gradgradcheck, hessian, hvp) are not available"
)


def _to_torch(a: Any) -> torch.Tensor:
    """A NumPy result (or Python float) as a tensor; ml_dtypes bfloat16 goes through its bits."""
    a = np.asarray(a)
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(np.array(a))


class _OnceDifferentiableGradient(torch.autograd.Function):  # type: ignore[misc]
    """``grad * grad_output``, the gradient as recorded when autograd records the backward pass
    (create_graph=True): a node tied to the logits whose own backward raises, so a second
    derivative fails loudly. torch's ``@once_differentiable`` is not enough here: it ties its
    error to the upstream gradient only, and ``hessian``/``hvp`` (whose upstream gradient is a
    constant) would still get zeros."""

    @staticmethod
    def forward(ctx: Any, grad: torch.Tensor, grad_output: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return grad * grad_output

    @staticmethod
    def backward(ctx: Any, *grad_outputs: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:
        raise RuntimeError(_SECOND_DERIVATIVE)


class FastCrossEntropy(torch.autograd.Function):  # type: ignore[misc]
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
        ctx.save_for_backward(_to_torch(grad), logits)
        return _to_torch(loss).to(logits.dtype)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:
        grad, logits = ctx.saved_tensors
        if grad_output.ndim > 0:  # reduction="none": one upstream value per row
            grad_output = grad_output.unsqueeze(ctx.axis)
        if torch.is_grad_enabled():  # create_graph=True: this gradient may be differentiated
            return _OnceDifferentiableGradient.apply(grad, grad_output, logits), None, None, None, None, None
        return grad * grad_output, None, None, None, None, None


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor] = None,
                  ignore_index: int = -100, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> torch.Tensor:
    """Drop-in for ``torch.nn.functional.cross_entropy`` on CPU tensors.

    Examples
    --------
    >>> import torch
    >>> from fastlogits.recipes.torch import cross_entropy
    >>> logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 1.5, 0.3]], requires_grad=True)
    >>> loss = cross_entropy(logits, torch.tensor([0, 1]))
    >>> loss.backward()
    >>> round(float(loss), 4), logits.grad.shape
    (0.3391, torch.Size([2, 3]))
    """
    result: torch.Tensor = FastCrossEntropy.apply(logits, target, weight, ignore_index, reduction,
                                                  label_smoothing)
    return result
