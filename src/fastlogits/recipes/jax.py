"""JAX recipe: fastlogits' fused cross-entropy as a ``jax.custom_vjp`` function.

The forward pass runs ``fl.cross_entropy_and_grad`` on the host through ``jax.pure_callback``
(so it works under ``jax.jit`` on the CPU backend) and keeps the gradient as the residual; the
backward pass scales it::

    from fastlogits.recipes.jax import make_cross_entropy
    ce = make_cross_entropy(reduction="mean", label_smoothing=0.1)
    loss, grads = jax.value_and_grad(lambda x: ce(x, labels))(logits)
    per_example = jax.vmap(ce)(batched_logits, batched_labels)

``logits`` has the class axis last (``axis=-1``, JAX's convention); ``labels`` holds integer
class indices. The options (class weights, ``ignore_index``, reduction, label smoothing) are
fixed when the function is made, so they need not be traced.

Under ``jax.vmap`` the callback receives the whole batch at once (``vmap_method=
"broadcast_all"``): with ``reduction="none"`` the batch is more rows for one kernel call; a
reduced loss is computed per batch element, each over its own rows, exactly as unbatched.
Needs JAX 0.4.34 or later (``vmap_method``).
"""
from typing import Any, Callable, Optional, Tuple, cast

import jax
import jax.numpy as jnp
import numpy as np

import fastlogits as fl


def make_cross_entropy(weight: Optional[Any] = None, ignore_index: int = -100,
                       reduction: str = "mean", label_smoothing: float = 0.0) -> Callable[[Any, Any], Any]:
    """A differentiable ``ce(logits, labels)`` with PyTorch's cross-entropy semantics.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from fastlogits.recipes.jax import make_cross_entropy
    >>> ce = make_cross_entropy()
    >>> logits = jnp.array([[2.0, 0.5, -1.0], [0.1, 1.5, 0.3]])
    >>> loss, grad = jax.value_and_grad(ce)(logits, jnp.array([0, 1]))
    >>> round(float(loss), 4), grad.shape
    (0.3391, (2, 3))
    """
    w = None if weight is None else np.asarray(weight)

    def _one(x: np.ndarray, y: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        loss, grad = fl.cross_entropy_and_grad(x, y, axis=-1, weight=w, ignore_index=ignore_index,
                                               reduction=reduction, label_smoothing=label_smoothing)
        return np.asarray(loss, dtype=x.dtype), np.asarray(grad)

    def _loss_and_grad(logits: Any, labels: Any) -> Tuple[Any, Any]:
        ndim = logits.ndim  # of one example: vmap's batch dimensions come in front of it

        def host(x: np.ndarray, y: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
            x, y = np.asarray(x), np.asarray(y)
            batch = x.shape[:x.ndim - ndim]
            if not batch or reduction == "none":  # rows are independent: one call for all
                return _one(x, y)
            xs = x.reshape((-1,) + x.shape[len(batch):])
            ys = y.reshape((-1,) + y.shape[len(batch):])
            parts = [_one(xb, yb) for xb, yb in zip(xs, ys)]
            loss = np.stack([p[0] for p in parts]).reshape(batch)
            return loss, np.stack([p[1] for p in parts]).reshape(x.shape)

        loss_shape = logits.shape[:-1] if reduction == "none" else ()
        shapes = (jax.ShapeDtypeStruct(loss_shape, logits.dtype),
                  jax.ShapeDtypeStruct(logits.shape, logits.dtype))
        result: Tuple[Any, Any] = jax.pure_callback(host, shapes, logits, labels, vmap_method="broadcast_all")
        return result

    def loss_only(logits: Any, labels: Any) -> Any:
        return _loss_and_grad(logits, labels)[0]

    def ce_fwd(logits: Any, labels: Any) -> Tuple[Any, Any]:
        return _loss_and_grad(logits, labels)

    def ce_bwd(grad: Any, g: Any) -> Tuple[Any, None]:
        if reduction == "none":  # one upstream value per row
            g = jnp.expand_dims(g, -1)
        return grad * g, None   # integer labels get no cotangent

    ce = jax.custom_vjp(loss_only)
    ce.defvjp(ce_fwd, ce_bwd)
    return cast(Callable[[Any, Any], Any], ce)
