"""The size of the compiled objective grows linearly with the number of random-effects terms
(issue 14: 20 crossed ``(1 | g)`` terms took 27-45 s to compile, 30 terms 160 s). Counted as
equations of the jaxpr of the objective and its gradient (nested programs included), which is
what XLA compiles: deterministic, unlike compile times (measured by
``benchmarks/bench_compile_terms.py``, not asserted)."""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from jaxlmm.kernels import analyze
from jaxlmm.kernels.cholesky import blocked_log_diagonal
from jaxlmm.kernels.structure import key_name


def n_equations(closed) -> int:
    def walk(jaxpr):
        total = 0
        for e in jaxpr.eqns:
            total += 1
            for p in e.params.values():
                for sub in (p if isinstance(p, (list, tuple)) else [p]):
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns"):
                        total += walk(inner)
        return total

    return walk(closed.jaxpr)


def crossed(k: int, n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = {f"g{i}": pd.Categorical(rng.integers(0, 12, size=n)) for i in range(k)}
    df["y"] = rng.normal(size=n)
    return pd.DataFrame(df)


def objective_size(k: int) -> int:
    from jaxlmm.terms.design import build_design
    from jaxlmm.lmm.model import LmerModel
    from jaxlmm.lmm.objective import objective
    from jaxlmm.precision import float64

    formula = "y ~ 1 + " + " + ".join(f"(1 | g{i})" for i in range(k))
    model = LmerModel.from_design(build_design(formula, crossed(k)))
    with float64():
        M = model.arrays(True)
        return n_equations(jax.make_jaxpr(jax.value_and_grad(objective))(jnp.ones(model.n_theta), M))


def assert_linear(sizes: dict) -> None:
    """Sizes at k, 2k, 4k: the second step may add at most a little over twice the first (a
    term-pair loop adds four times as much)."""
    a, b, c = (sizes[k] for k in sorted(sizes))
    assert c - b <= 2.2 * (b - a), sizes


def test_objective_and_gradient_grow_linearly_in_terms():
    assert_linear({k: objective_size(k) for k in (4, 8, 16)})


@pytest.mark.parametrize("panel", [False, True], ids=["pairs", "panel"])
def test_kernel_grows_linearly_in_stages(panel):
    """The blocked factorization with scaled off-diagonal blocks: one stage eliminated block
    diagonally, every other stage crossed with every other (the dense tail), both ways of
    updating the tail."""
    def size(k):
        rng = np.random.default_rng(k)
        nlevels = (15,) + (6,) * (k - 1) + (1,)
        widths = (1,) * k + (2,)
        n = 200
        codes = [rng.integers(0, l, size=n) for l in nlevels]
        offd, vals = {}, {}
        for i in range(len(nlevels)):
            for j in range(i):
                keys = np.unique(codes[j] * nlevels[i] + codes[i])
                offd[(i, j)] = (keys % nlevels[i], keys // nlevels[i])
                vals[key_name(i, j)] = np.ones((len(keys), widths[i], widths[j]))
        diag = [np.full((l, w, w), 50.0) * np.eye(w) for l, w in zip(nlevels, widths)]
        s = analyze(nlevels, widths, offd, panel=panel)

        def f(S):
            bd, lead, trail = blocked_log_diagonal(s, diag, vals, 1, scale=list(S) + [None])
            return sum(jnp.sum(b) for b in bd) + lead + jnp.sum(trail)

        with jax.enable_x64(True):
            S = [0.1 * jnp.ones((1, 1))] * k
            return n_equations(jax.make_jaxpr(jax.value_and_grad(f))(S))

    assert_linear({k: size(k) for k in (4, 8, 16)})
