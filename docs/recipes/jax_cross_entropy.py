"""JAX recipe: fastlogits' fused cross-entropy as a ``jax.custom_vjp`` function.

The forward pass runs ``fl.cross_entropy_and_grad`` on the host through
``jax.pure_callback`` (so it also works under ``jax.jit`` on the CPU backend) and keeps the
gradient as the residual; the backward pass scales it::

    from jax_cross_entropy import make_cross_entropy
    ce = make_cross_entropy(reduction="mean", label_smoothing=0.1)
    loss, grads = jax.value_and_grad(lambda x: ce(x, labels))(logits)

``logits`` has the class axis last (``axis=-1``, JAX's convention); ``labels`` holds integer
class indices. The options (class weights, ``ignore_index``, reduction, label smoothing) are
fixed when the function is made, so they need not be traced.
"""
from typing import Any, Callable, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

import fastlogits as fl


def make_cross_entropy(weight: Optional[Any] = None, ignore_index: int = -100,
                       reduction: str = "mean", label_smoothing: float = 0.0) -> Callable[[Any, Any], Any]:
    """A differentiable ``ce(logits, labels)`` with PyTorch's cross-entropy semantics."""
    w = None if weight is None else np.asarray(weight)

    def _host(x: np.ndarray, y: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        loss, grad = fl.cross_entropy_and_grad(np.asarray(x), np.asarray(y), axis=-1, weight=w,
                                               ignore_index=ignore_index, reduction=reduction,
                                               label_smoothing=label_smoothing)
        return np.asarray(loss, dtype=x.dtype), np.asarray(grad)

    def _loss_and_grad(logits: Any, labels: Any) -> Tuple[Any, Any]:
        loss_shape = logits.shape[:-1] if reduction == "none" else ()
        shapes = (jax.ShapeDtypeStruct(loss_shape, logits.dtype),
                  jax.ShapeDtypeStruct(logits.shape, logits.dtype))
        return jax.pure_callback(_host, shapes, logits, labels)

    @jax.custom_vjp
    def ce(logits: Any, labels: Any) -> Any:
        return _loss_and_grad(logits, labels)[0]

    def ce_fwd(logits: Any, labels: Any) -> Tuple[Any, Any]:
        loss, grad = _loss_and_grad(logits, labels)
        return loss, grad

    def ce_bwd(grad: Any, g: Any) -> Tuple[Any, None]:
        if reduction == "none":  # one upstream value per row
            g = jnp.expand_dims(g, -1)
        return grad * g, None   # integer labels get no cotangent

    ce.defvjp(ce_fwd, ce_bwd)
    return ce
