"""The training-loop recipes of docs/recipes/ against the frameworks' own cross-entropy.

The recipes are imported by file path (they are documentation, not part of the package).
Each test skips without its framework, and until ``fastlogits.cross_entropy_and_grad`` exists
in the installed package, or outside a source checkout (docs/ is not installed).
"""
import importlib.util
import os

import numpy as np
import pytest

import fastlogits

RECIPES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "recipes")

pytestmark = pytest.mark.skipif(not hasattr(fastlogits, "cross_entropy_and_grad"),
                                reason="fastlogits.cross_entropy_and_grad is not in this build yet")


def _load(name):
    path = os.path.join(RECIPES, name + ".py")
    if not os.path.exists(path):
        pytest.skip(f"needs the source tree ({path})")
    spec = importlib.util.spec_from_file_location("recipe_" + name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _data(shape, dtype, ignore_index, seed=0):
    """Logits of `shape` (class axis 1, or 0 for 1-D) and class indices, some ignored."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    c = shape[1] if len(shape) > 1 else shape[0]
    row_shape = shape[:1] + shape[2:] if len(shape) > 1 else ()
    y = rng.integers(0, c, size=row_shape).astype(np.int64)
    if y.ndim:
        y.flat[::5] = ignore_index
    return x, y, c


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(64, 7), (8, 5, 3), (6,)])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_torch_recipe_matches_torch(reduction, shape, weighted, label_smoothing):
    torch = pytest.importorskip("torch")
    recipe = _load("torch_cross_entropy")
    ignore_index = -1
    x, y, c = _data(shape, np.float64, ignore_index)
    weight = torch.linspace(0.5, 2.0, c, dtype=torch.float64) if weighted else None
    kw = dict(weight=weight, ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing)

    xt_ref = torch.tensor(x, requires_grad=True)
    want = torch.nn.functional.cross_entropy(xt_ref, torch.tensor(y), **kw)
    xt = torch.tensor(x, requires_grad=True)
    got = recipe.cross_entropy(xt, torch.tensor(y), **kw)
    np.testing.assert_allclose(got.detach().numpy(), want.detach().numpy(), rtol=1e-10, atol=1e-12)

    upstream = torch.linspace(0.5, 1.5, want.numel(), dtype=torch.float64).reshape(want.shape)
    (want * upstream).sum().backward()
    (got * upstream).sum().backward()
    np.testing.assert_allclose(xt.grad.numpy(), xt_ref.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_torch_recipe_float32_training_step():
    torch = pytest.importorskip("torch")
    recipe = _load("torch_cross_entropy")
    x, y, _ = _data((32, 10), np.float32, -100)
    xt = torch.tensor(x, requires_grad=True)
    loss = recipe.cross_entropy(xt, torch.tensor(y))
    loss.backward()
    xr = torch.tensor(x, requires_grad=True)
    torch.nn.functional.cross_entropy(xr, torch.tensor(y)).backward()
    assert loss.dtype == torch.float32
    np.testing.assert_allclose(xt.grad.numpy(), xr.grad.numpy(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_jax_recipe_matches_optax_formula(reduction, label_smoothing):
    jax = pytest.importorskip("jax")
    jnp = pytest.importorskip("jax.numpy")
    jax.config.update("jax_enable_x64", True)
    recipe = _load("jax_cross_entropy")
    x, y, c = _data((16, 6), np.float64, -100)
    y[y < 0] = 0  # the plain JAX formula below has no ignore_index
    ce = recipe.make_cross_entropy(reduction=reduction, label_smoothing=label_smoothing)

    def plain(logits):
        logp = jax.nn.log_softmax(logits, axis=-1)
        target = (1 - label_smoothing) * jax.nn.one_hot(y, c) + label_smoothing / c
        per_row = -jnp.sum(target * logp, axis=-1)
        return {"mean": jnp.mean, "sum": jnp.sum, "none": lambda v: v}[reduction](per_row)

    upstream = jnp.linspace(0.5, 1.5, 16) if reduction == "none" else 1.0
    got, got_grad = jax.value_and_grad(lambda v: jnp.sum(ce(v, jnp.asarray(y)) * upstream))(jnp.asarray(x))
    want, want_grad = jax.value_and_grad(lambda v: jnp.sum(plain(v) * upstream))(jnp.asarray(x))
    np.testing.assert_allclose(got, want, rtol=1e-10)
    np.testing.assert_allclose(got_grad, want_grad, rtol=1e-10, atol=1e-12)
