"""The JAX recipe's checks (fastlogits.recipes.jax), run by tests/test_recipes.py and
tests/test_doctests.py in a child process (tests/child.py says why). Each function raises
AssertionError with NumPy's report when a check fails."""
import numpy as np


def _x64():
    import jax
    return jax, jax.enable_x64(True)


def _plain_jax_ce(jax, jnp, y, c, reduction, label_smoothing):
    def plain(logits):
        logp = jax.nn.log_softmax(logits, axis=-1)
        target = (1 - label_smoothing) * jax.nn.one_hot(y, c) + label_smoothing / c
        per_row = -jnp.sum(target * logp, axis=-1)
        return {"mean": jnp.mean, "sum": jnp.sum, "none": lambda v: v}[reduction](per_row)
    return plain


def recipe_matches_the_jax_formula(x, y, reduction, label_smoothing):
    jax, x64 = _x64()
    jnp = jax.numpy
    from fastlogits.recipes.jax import make_cross_entropy

    with x64:
        c = x.shape[-1]
        ce = make_cross_entropy(reduction=reduction, label_smoothing=label_smoothing)
        plain = _plain_jax_ce(jax, jnp, y, c, reduction, label_smoothing)
        upstream = jnp.linspace(0.5, 1.5, x.shape[0]) if reduction == "none" else 1.0
        got, got_grad = jax.jit(jax.value_and_grad(lambda v: jnp.sum(ce(v, jnp.asarray(y)) * upstream)))(jnp.asarray(x))
        want, want_grad = jax.value_and_grad(lambda v: jnp.sum(plain(v) * upstream))(jnp.asarray(x))
        np.testing.assert_allclose(got, want, rtol=1e-10)
        np.testing.assert_allclose(got_grad, want_grad, rtol=1e-10, atol=1e-12)


def recipe_under_vmap(reduction):
    jax, x64 = _x64()
    jnp = jax.numpy
    from fastlogits.recipes.jax import make_cross_entropy

    with x64:
        rng = np.random.default_rng(3)
        xb = jnp.asarray(rng.standard_normal((5, 8, 6)) * 3)
        yb = jnp.asarray(rng.integers(0, 6, (5, 8)))
        yb = yb.at[:, ::3].set(-100)  # ignored rows: the "mean" denominator differs per element
        ce = make_cross_entropy(reduction=reduction, label_smoothing=0.05)
        want = [ce(xb[i], yb[i]) for i in range(5)]
        want_grad = [jax.grad(lambda v, i=i: jnp.sum(ce(v, yb[i])))(xb[i]) for i in range(5)]

        got = jax.jit(jax.vmap(ce))(xb, yb)
        np.testing.assert_array_equal(np.asarray(got), np.stack([np.asarray(w) for w in want]))
        got_grad = jax.vmap(jax.grad(lambda v, t: jnp.sum(ce(v, t))))(xb, yb)
        np.testing.assert_array_equal(np.asarray(got_grad), np.stack([np.asarray(g) for g in want_grad]))
        # grad of a function of the vmapped losses
        grad_outside = jax.grad(lambda v: jnp.sum(jax.vmap(ce)(v, yb)))(xb)
        np.testing.assert_array_equal(np.asarray(grad_outside), np.asarray(got_grad))
        # labels shared by the whole batch (in_axes None)
        shared = jax.vmap(ce, in_axes=(0, None))(xb, yb[0])
        np.testing.assert_array_equal(np.asarray(shared), np.stack([np.asarray(ce(xb[i], yb[0])) for i in range(5)]))
