"""The in-JAX trust-region Newton: classic test functions, indefinite Hessians, the exact
subproblem, jit/vmap, and reference fits (lme4's optimum or lower)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_data, load_reference

from jaxlmm.terms.design import build_design
from jaxlmm.lmm.model import LmerModel
from jaxlmm.lmm.objective import objective
from jaxlmm.precision import float64
from jaxlmm.covariance.start import moment_start
from jaxlmm.optim.trust_region import (
    minimize_trust_region,
    solve_subproblem,
    value_grad_hessian,
)


def rosenbrock(x, a):
    return jnp.sum(a * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


def saddle(x):
    # a saddle at 0 (Hessian diag(2, -2)); minima at (0, +-1/sqrt(2)), value -1/4
    return x[0] ** 2 - x[1] ** 2 + x[1] ** 4


@pytest.mark.parametrize("x0", [[-1.2, 1.0], [-1.2, 1.0, 0.5], [0.0, 0.0, 0.0]])
def test_rosenbrock_minimum_found_under_jit(x0):
    with float64():
        run = jax.jit(lambda x, a: minimize_trust_region(rosenbrock, x, a, gtol=1e-9))
        r = run(jnp.asarray(x0), 100.0)
        np.testing.assert_allclose(np.asarray(r.x), np.ones(len(x0)), atol=1e-6)
        assert int(r.status) in (0, 3)
        assert int(r.nhev) <= int(r.nfev) <= int(r.n_iter) + 1


@pytest.mark.parametrize("x0", [[1.0, 0.0], [0.0, 0.0], [0.3, 1e-9]])
def test_indefinite_start_leaves_the_saddle(x0):
    with float64():
        _, _, H = value_grad_hessian(saddle)(jnp.asarray(x0))
        assert np.linalg.eigvalsh(np.asarray(H))[0] < 0  # indefinite at the start
        r = jax.jit(lambda x: minimize_trust_region(saddle, x))(jnp.asarray(x0))
        assert float(r.fun) == pytest.approx(-0.25, abs=1e-12)
        np.testing.assert_allclose(np.abs(np.asarray(r.x)), [0.0, 2**-0.5], atol=1e-6)
        assert int(r.status) in (0, 3)
        assert np.linalg.eigvalsh(np.asarray(r.hess))[0] > 0


def test_subproblem_kkt_conditions():
    rng = np.random.default_rng(1)
    with float64():
        for case in range(40):
            n = 1 + case % 7
            A = rng.normal(size=(n, n))
            H = (A + A.T) / 2 + (case % 3 - 1) * np.eye(n)  # indefinite, PD-ish, shifted
            g = rng.normal(size=n) * (1e-8 if case % 5 == 0 else 1.0)  # near-hard cases too
            delta = float(rng.uniform(0.05, 3.0))
            ev, Q = np.linalg.eigh(H)
            p, pred, lam = (np.asarray(v) for v in solve_subproblem(jnp.asarray(ev), jnp.asarray(Q),
                                                                      jnp.asarray(g), jnp.asarray(delta)))
            lam = float(lam)
            pn = np.linalg.norm(p)
            assert pn <= delta * (1 + 1e-6)
            assert lam >= 0 and ev[0] + lam >= -1e-9 * max(1.0, abs(ev).max())
            m = g @ p + 0.5 * p @ H @ p
            assert float(pred) == pytest.approx(-m, rel=1e-8, abs=1e-12)
            # no better point on the ball: compare with many random feasible points
            Z = rng.normal(size=(2000, n))
            Z *= (delta * rng.uniform(0, 1, size=(2000, 1)) ** (1 / n)) / np.linalg.norm(Z, axis=1, keepdims=True)
            mz = Z @ g + 0.5 * np.einsum("ki,ij,kj->k", Z, H, Z)
            assert m <= mz.min() + 1e-9 * max(1.0, abs(mz.min()))
            if lam > 1e-8 * max(1.0, abs(ev).max()):
                assert pn == pytest.approx(delta, rel=1e-6)  # complementarity


def test_iteration_limit_reports_status_2():
    with float64():
        r = minimize_trust_region(rosenbrock, jnp.asarray([-1.2, 1.0]), 100.0, max_iter=2)
        assert int(r.status) == 2 and int(r.n_iter) == 2


def _model(fid):
    ref = load_reference(fid)
    d = build_design(ref["formula"], load_data(ref["data"]), weights=ref["weights"], offset=ref["offset"])
    model = LmerModel.from_design(d)
    return ref, d, model


@pytest.mark.parametrize("fid", ["sleepstudy_slope_reml", "penicillin_crossed_reml",
                                 "dyestuff2_reml_singular", "sleepstudy_weights_reml"])
def test_reference_fits_reach_lme4_optimum(fid):
    ref, d, model = _model(fid)
    with float64():
        M = model.arrays(ref["REML"], host_lapack=False)  # forward mode for the Hessian
        run = jax.jit(lambda x, MM: minimize_trust_region(objective, x, MM))
        for x0 in (moment_start(d, model.specs), np.ones(model.n_theta)):
            r = run(jnp.asarray(x0), M)
            f = float(r.fun)
            assert f <= ref["objective"] * (1 + 1e-6) + 1e-9
            assert int(r.status) in (0, 3)
            assert int(r.nhev) <= 30


def test_vmapped_starts_reach_the_same_optimum():
    ref, _, model = _model("sleepstudy_slope_reml")
    with float64():
        M = model.arrays(True, host_lapack=False)
        starts = jnp.asarray([[1.0, 0.0, 1.0], [0.5, 0.1, 0.3], [2.0, -0.5, 1.0]])
        r = jax.jit(jax.vmap(lambda x0: minimize_trust_region(objective, x0, M)))(starts)
    np.testing.assert_allclose(np.asarray(r.fun), ref["objective"], rtol=1e-10)
    np.testing.assert_allclose(np.abs(np.asarray(r.x)[:, [0, 2]]), [[0.966733, 0.230910]] * 3, rtol=1e-4)
