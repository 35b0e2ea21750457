"""The training-loop recipes shipped in the wheel (fastlogits.recipes.torch and .jax) against
the frameworks' own cross-entropy, under their transformations (autograd twice, jit, grad,
vmap). Each test imports its framework inside (pytest.importorskip; the JAX tests find it
without importing it, and run in a child process), so only it skips when the framework is not
installed.
"""
import jax_cases
import numpy as np
import pytest
from child import child_process


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


def test_importing_the_package_imports_no_framework():
    import subprocess
    import sys

    code = ("import sys, fastlogits, fastlogits.recipes; "
            "print(sorted(m for m in ('torch', 'jax') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------------------------ PyTorch

@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(64, 7), (8, 5, 3), (6,)])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_torch_recipe_matches_torch(reduction, shape, weighted, label_smoothing):
    torch = pytest.importorskip("torch")
    from fastlogits.recipes.torch import cross_entropy

    ignore_index = -1
    x, y, c = _data(shape, np.float64, ignore_index)
    weight = torch.linspace(0.5, 2.0, c, dtype=torch.float64) if weighted else None
    kw = dict(weight=weight, ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing)

    xt_ref = torch.tensor(x, requires_grad=True)
    want = torch.nn.functional.cross_entropy(xt_ref, torch.tensor(y), **kw)
    xt = torch.tensor(x, requires_grad=True)
    got = cross_entropy(xt, torch.tensor(y), **kw)
    np.testing.assert_allclose(got.detach().numpy(), want.detach().numpy(), rtol=1e-10, atol=1e-12)

    upstream = torch.linspace(0.5, 1.5, want.numel(), dtype=torch.float64).reshape(want.shape)
    (want * upstream).sum().backward()
    (got * upstream).sum().backward()
    np.testing.assert_allclose(xt.grad.numpy(), xt_ref.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_torch_recipe_float32_training_step():
    torch = pytest.importorskip("torch")
    from fastlogits.recipes.torch import cross_entropy

    x, y, _ = _data((32, 10), np.float32, -100)
    xt = torch.tensor(x, requires_grad=True)
    loss = cross_entropy(xt, torch.tensor(y))
    loss.backward()
    xr = torch.tensor(x, requires_grad=True)
    torch.nn.functional.cross_entropy(xr, torch.tensor(y)).backward()
    assert loss.dtype == torch.float32
    np.testing.assert_allclose(xt.grad.numpy(), xr.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_torch_recipe_refuses_a_second_derivative():
    """The saved gradient is a constant to autograd: differentiating the gradient again gave
    zero silently (hessian, hvp; the Hessian of cross-entropy is not zero). Every way of asking
    for a second derivative now raises; the first derivative is unchanged."""
    torch = pytest.importorskip("torch")
    from fastlogits.recipes.torch import cross_entropy

    x, y, _ = _data((4, 5), np.float64, -100)
    xt = torch.tensor(x, requires_grad=True)
    target = torch.tensor(y)

    def loss(v):
        return cross_entropy(v, target)

    def grad_of_grad():
        (g,) = torch.autograd.grad(loss(xt), xt, create_graph=True)
        g.pow(2).sum().backward()

    for second in (lambda: torch.autograd.gradgradcheck(loss, (xt,)),
                   lambda: torch.autograd.functional.hessian(loss, xt),
                   lambda: torch.autograd.functional.hvp(loss, xt, torch.ones_like(xt)),
                   grad_of_grad):
        with pytest.raises(RuntimeError, match="differentiable once"):
            second()
    assert torch.autograd.gradcheck(loss, (xt,))
    (g,) = torch.autograd.grad(loss(xt), xt, create_graph=True)  # first order under create_graph
    xr = torch.tensor(x, requires_grad=True)
    (want,) = torch.autograd.grad(torch.nn.functional.cross_entropy(xr, target), xr)
    np.testing.assert_allclose(g.detach().numpy(), want.numpy(), rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------------------------------- JAX
# The bodies are in tests/jax_cases.py and run in a child process (tests/child.py).

@pytest.fixture(scope="module")
def jax_child():
    with child_process("jax") as pool:
        yield pool


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_jax_recipe_matches_the_jax_formula(jax_child, reduction, label_smoothing):
    x, y, _ = _data((16, 6), np.float64, -100)
    y[y < 0] = 0  # the plain JAX formula has no ignore_index
    jax_child.submit(jax_cases.recipe_matches_the_jax_formula, x, y, reduction, label_smoothing).result()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_jax_recipe_under_vmap(jax_child, reduction):
    """jax.vmap over a batch of problems: each batch element is its own problem (a "mean" is
    over that element's rows only), with and without grad inside, jit outside, and with the
    labels shared (unbatched) by every element."""
    jax_child.submit(jax_cases.recipe_under_vmap, reduction).result()
