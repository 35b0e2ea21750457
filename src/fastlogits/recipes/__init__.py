"""Training-loop recipes: fastlogits' fused cross-entropy inside autograd frameworks.

- :mod:`fastlogits.recipes.torch`: ``cross_entropy``, a ``torch.autograd.Function`` with the
  semantics of ``torch.nn.functional.cross_entropy`` (needs PyTorch);
- :mod:`fastlogits.recipes.jax`: ``make_cross_entropy``, a ``jax.custom_vjp`` function that
  runs on the host through ``jax.pure_callback`` and works under ``jit``, ``grad`` and
  ``vmap`` (needs JAX 0.4.34 or later).

Each imports its framework only when it is itself imported; ``fastlogits`` and this package
import neither.
"""
