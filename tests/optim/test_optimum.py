"""A fit never says it converged at a bad point (issue 14): start values are validated before any
computation, a response with no variation is refused, the end is checked (finite, a minimum:
stationary starts and saddles are escaped), the path does not depend on the units of the
covariates, no program is compiled per row count, and Ctrl-C stops a long fit within about a
second, leaving the process usable."""

import importlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import jax
import numpy as np
import pandas as pd
import pytest

import jaxlmm
from jaxlmm.errors import ArgumentError, DataError, FitError, FitWarning

from conftest import load_data, load_reference

F1 = "Reaction ~ Days + (1 | Subject)"
F2 = "Reaction ~ Days + (Days | Subject)"
CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"


@pytest.fixture(scope="module")
def sleep():
    return load_data("sleepstudy")


@pytest.fixture(scope="module")
def cbpp():
    return load_data("cbpp").astype({"period": str, "herd": str})


@pytest.fixture(scope="module")
def slope_fit(sleep):
    return jaxlmm.lmer(F2, sleep)


# ---------------------------------------------------------------- start values


@pytest.mark.parametrize("start, cls, match", [
    ([np.nan], ArgumentError, r"start\[0\] \(Subject.\(Intercept\)\) is nan"),
    ([np.inf], ArgumentError, "must be finite"),
    ([-1.0], ArgumentError, "must be >= 0"),
    ([1.0, 2.0], ArgumentError, "start has 2 values; this model has 1 theta parameters"),
    (["a"], ArgumentError, "start must be numbers"),
    ({"beta": [1]}, ArgumentError, "dict with the key 'theta'"),
    ([1e300], FitError, "not finite at the starting values"),
])
def test_bad_lmer_start_values(sleep, start, cls, match):
    # before: [1e300] ended at an infinite objective marked converged; [nan] gave NaN estimates
    with pytest.raises(cls, match=match):
        jaxlmm.lmer(F1, sleep, start=start)


def test_start_as_a_dict_of_theta(sleep, slope_fit):
    f = jaxlmm.lmer(F2, sleep, start={"theta": slope_fit.theta})
    assert f.objective == pytest.approx(slope_fit.objective, rel=1e-12)


@pytest.mark.parametrize("start, match", [
    ({"theta": [np.nan]}, r"start\['theta'\]\[0\] \(herd.\(Intercept\)\) is nan"),
    ({"theta": [-0.5]}, "must be >= 0"),
    ({"beta": [0.0, np.inf, 0, 0]}, r"start\['beta'\]\[1\] \(period2\) is inf"),
    ({"beta": [1, 2]}, r"start\['beta'\] has 2 values; this model has 4"),
    ({"beta": "abc"}, r"start\['beta'\] must be numbers"),
    ({"gamma": 1}, "keys 'theta' and/or 'beta'"),
])
def test_bad_glmer_start_values(cbpp, start, match):
    with pytest.raises(ArgumentError, match=match):
        jaxlmm.glmer(CBPP, cbpp, "binomial", start=start)


def test_glmer_far_start_is_not_called_converged(cbpp):
    # before: -2 log L 53,190 against 184.05, converged=True, no warning
    with pytest.warns(FitWarning, match="not positive definite"):
        f = jaxlmm.glmer(CBPP, cbpp, "binomial", start={"beta": [1e6, 0, 0, 0]})
    assert not f.converged and f.objective > 1e4
    assert f.diagnostics["hessian_ok"] is False or not np.isfinite(f.se).all()


# ---------------------------------------------------------------- constant responses


def test_constant_responses_are_refused(sleep, cbpp):
    with pytest.raises(DataError, match="response 'Reaction' is constant"):
        jaxlmm.lmer(F1, sleep.assign(Reaction=3.0))
    with pytest.raises(DataError, match="is constant"):
        jaxlmm.glmer("y ~ period + (1 | herd)", cbpp.assign(y=0), "binomial")  # lme4 refuses it too
    with pytest.raises(DataError, match="is constant"):
        jaxlmm.glmer("y ~ period + (1 | herd)", cbpp.assign(y=0), "poisson")
    with pytest.raises(DataError, match="response 'flat' is constant"):
        jaxlmm.lmer_many("~ Days + (1 | Subject)", sleep.assign(flat=1.0), ["Reaction", "flat"])
    with pytest.raises(DataError, match="response 'y2' is constant"):
        jaxlmm.lmer_many("~ Days + (1 | Subject)", sleep, np.column_stack([sleep.Reaction, np.ones(180)]))


def test_response_fitted_exactly_by_the_fixed_effects_is_refused(sleep, tmp_path):
    with pytest.raises(DataError, match="fitted exactly by the fixed effects"):
        jaxlmm.lmer(F1, sleep.assign(Reaction=2.0 + 3.0 * sleep.Days))
    # out of core, where no rows are kept: the Gram blocks say it
    sleep.assign(Reaction=250.0).to_parquet(tmp_path / "flat.parquet")
    with pytest.raises(DataError, match="fitted exactly by the fixed effects"):
        jaxlmm.lmer(F1, str(tmp_path / "flat.parquet"))


# ---------------------------------------------------------------- the end is a minimum


@pytest.mark.parametrize("start", [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
def test_stationary_starts_reach_the_optimum(sleep, slope_fit, start):
    # a diagonal entry started at exactly 0 has an exactly zero gradient (the criterion is even in
    # it): the optimiser never moves it and stops at a saddle of the full problem
    f = jaxlmm.lmer(F2, sleep, start=start)
    assert f.converged and f.optinfo["restarts"] >= 1
    assert f.objective == pytest.approx(slope_fit.objective, rel=1e-9)
    np.testing.assert_allclose(f.theta, slope_fit.theta, rtol=1e-4, atol=1e-5)


def test_scalar_term_started_at_zero(sleep):
    ref = jaxlmm.lmer(F1, sleep)
    f = jaxlmm.lmer(F1, sleep, start=[0.0])
    assert f.converged and f.objective == pytest.approx(ref.objective, rel=1e-10)
    assert f.theta[0] == pytest.approx(ref.theta[0], rel=1e-5)


def test_the_hessian_is_checked_and_reported(slope_fit):
    lam = slope_fit.optinfo["hessian_min_eig"]
    assert np.isfinite(lam) and lam > 0 and slope_fit.optinfo["restarts"] == 0


def test_escape_points_follow_negative_curvature_and_stuck_coordinates():
    from jaxlmm.optim import finish

    H = np.array([[2.0, 0.0], [0.0, -1.0]])
    x, x0 = np.array([0.3, 0.0]), np.array([1.0, 0.0])
    pts = finish.escape_points(x, x0, np.array([0.1, 0.0]), H, np.ones(2, bool))
    assert pts.shape[1] == 2 and np.all(pts[:, 0] == 0.3)  # along e_2 only
    lam, v = finish.min_eigen(H, np.ones(2, bool))
    assert lam == -1.0 and finish.negative_curvature(lam, H, np.ones(2, bool))
    # positive definite and nothing stuck: nothing to probe
    assert finish.escape_points(x, x0, np.array([0.1, 0.2]), np.eye(2), np.ones(2, bool)).shape[0] == 0
    # the boundary coordinate is left out of the curvature check
    assert finish.min_eigen(H, np.array([True, False]))[0] == 2.0


def test_convergence_rule_needs_finite_values():
    from jaxlmm.optim import finish

    assert finish.converged(0, 0.0, 1.0)
    assert not finish.converged(0, 0.0, np.inf)
    assert not finish.converged(3, np.nan, 1.0)
    assert finish.converged(3, 1e-4, 100.0) and not finish.converged(3, 1.0, 100.0)
    assert not finish.converged(2, 0.0, 1.0)


def test_overflowing_covariate_is_refused(sleep):
    # before: its norm overflowed and it was dropped as "aliased"
    with pytest.raises(DataError, match=r"column 'I\(Days \* 1e\+200\)' has values beyond 1e\+150"):
        jaxlmm.lmer("Reaction ~ I(Days * 1e200) + (1 | Subject)", sleep)
    with pytest.raises(DataError, match="beyond"):
        jaxlmm.lmer(F1, sleep.assign(Reaction=sleep.Reaction * 1e200))


# ---------------------------------------------------------------- covariate units


@pytest.mark.parametrize("reml", [True, False])
def test_random_slope_fit_does_not_depend_on_the_covariate_units(sleep, reml):
    # before: Days x 1e-4 stopped 9.57 above the optimum, x 1e4 warned falsely, x 1e8 was 661 off
    ref = jaxlmm.lmer(F2, sleep, reml=reml)
    for c in (1e-4, 1e4, 1e8):
        with warnings.catch_warnings():
            warnings.simplefilter("error", FitWarning)
            f = jaxlmm.lmer(F2, sleep.assign(Days=sleep.Days * c), reml=reml)
        # REML's log|X'V^-1 X| gains 2 log c from the rescaled fixed-effect column; ML is invariant
        shift = 2.0 * np.log(c) if reml else 0.0
        assert f.objective - shift == pytest.approx(ref.objective, rel=1e-8)
        np.testing.assert_allclose(f.fixef.to_numpy() * [1, c], ref.fixef.to_numpy(), rtol=1e-6)
        np.testing.assert_allclose(f.theta * [1, c, c], ref.theta, rtol=1e-5, atol=1e-7)
        assert f.converged and f.sigma == pytest.approx(ref.sigma, rel=1e-6)


def test_scaling_the_response_scales_beta_and_sigma(sleep):
    ref = jaxlmm.lmer(F2, sleep)
    for c in (1e-6, 1e6):
        f = jaxlmm.lmer(F2, sleep.assign(Reaction=sleep.Reaction * c))
        np.testing.assert_allclose(f.fixef.to_numpy(), ref.fixef.to_numpy() * c, rtol=1e-6)
        assert f.sigma == pytest.approx(ref.sigma * c, rel=1e-6)
        # theta to the optimiser's precision (its stopping rule is relative to |objective|, which moves)
        np.testing.assert_allclose(f.theta, ref.theta, rtol=1e-4, atol=1e-5)
        # REML criterion: (n - p) log c^2 more
        assert f.objective - (180 - 2) * np.log(c * c) == pytest.approx(ref.objective, rel=1e-9)


def test_glmer_does_not_depend_on_the_covariate_units(cbpp):
    df = cbpp.assign(t=cbpp.period.astype(float))
    ref = jaxlmm.glmer("cbind(incidence, size - incidence) ~ t + (1 | herd)", df, "binomial")
    for c in (1e-4, 1e4):
        f = jaxlmm.glmer("cbind(incidence, size - incidence) ~ t + (1 | herd)", df.assign(t=df.t * c), "binomial")
        assert f.converged and f.objective == pytest.approx(ref.objective, rel=1e-8)
        np.testing.assert_allclose(f.fixef.to_numpy() * [1, c], ref.fixef.to_numpy(), rtol=1e-5)
        np.testing.assert_allclose(f.se.to_numpy() * [1, c], ref.se.to_numpy(), rtol=1e-4)


def test_glmer_agrees_with_lme4_after_the_changes(cbpp):
    ref = load_reference("cbpp_binomial_laplace_tight")
    f = jaxlmm.glmer(CBPP, cbpp, "binomial")
    assert f.objective == pytest.approx(ref["minus2loglik"], rel=1e-9)
    np.testing.assert_allclose(f.se.to_numpy(), ref["se"], rtol=1e-4)


# ---------------------------------------------------------------- programs per row count


def _count_compiles():
    events = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda name, secs, **kw: events.append(name) if "backend_compile" in name else None)
    return events


def test_fits_on_subsets_compile_no_program_per_row_count(sleep, cbpp):
    # before: one compiled objective per row count, kept for the life of the process
    events = _count_compiles()
    rng = np.random.default_rng(5)
    jaxlmm.lmer(F2, sleep.drop(index=[0]))
    before = len(events)
    for k in range(2, 6):  # every subject keeps rows: the same structure, other row counts
        jaxlmm.lmer(F2, sleep.drop(index=rng.choice(180, size=3 * k, replace=False)))
    assert len(events) == before
    # glmer's rows are padded to a few bucket sizes (at most 4 per doubling): 48..56 rows share one
    from jaxlmm.glmm.rows import row_bucket

    assert {row_bucket(n) for n in range(49, 57)} == {56}
    keep = cbpp.groupby("herd").head(3).index  # every herd keeps rows
    spare = [i for i in cbpp.index if i not in set(keep)]
    jaxlmm.glmer(CBPP, cbpp.drop(index=spare[:1]), "binomial")
    before = len(events)
    for k in (2, 3, 5):
        jaxlmm.glmer(CBPP, cbpp.drop(index=spare[:k]), "binomial")
    assert len(events) == before


@pytest.mark.parametrize("family", ["binomial", "poisson", "gamma"])
def test_padding_rows_change_nothing(family):
    glmer_mod = importlib.import_module("jaxlmm.glmm.fit")
    rng = np.random.default_rng(11)
    g = np.repeat(np.arange(12), 5)
    x = rng.normal(size=60)
    eta = 0.3 * x + 0.5 * rng.normal(size=12)[g]
    y = {"binomial": rng.binomial(1, 1 / (1 + np.exp(-eta))).astype(float), "poisson": rng.poisson(np.exp(eta)) * 1.0,
         "gamma": rng.gamma(4.0, np.exp(eta) / 4.0)}[family]
    f = jaxlmm.glmer("y ~ x + (1 | g)", pd.DataFrame({"y": y, "x": x, "g": g.astype(str)}), family)
    model, d = f._model, f._model.design
    xs = np.concatenate([f.theta, f.fixef.to_numpy()] + ([[np.log(f.dispersion)]] if family == "gamma" else []))
    from jaxlmm.glmm import pirls
    from jaxlmm.precision import float64

    with float64():
        def at(n_pad):
            G = pirls.glmm_arrays([t.codes for t in d.terms], [t.columns for t in d.terms], d.X, d.y, d.weights,
                                  d.offset, model.specs, model.family, n_pad=n_pad)
            v, gr = glmer_mod.values_grads(jax.numpy.asarray(np.stack([xs, xs + 0.1])), G, 1)
            return np.asarray(v), np.asarray(gr)

        v0, g0 = at(None)
        v1, g1 = at(100)  # 40 padding rows
    assert np.all(np.isfinite(v1)) and np.all(np.isfinite(g1))
    np.testing.assert_allclose(v1, v0, rtol=1e-13)
    np.testing.assert_allclose(g1, g0, rtol=1e-10, atol=1e-11)


# ---------------------------------------------------------------- Ctrl-C


# a GLMM on 300,000 rows: about 0.2 s per evaluation, 60 of them; no host callback inside the
# compiled loop (lmer's large dense tails call host LAPACK, where Python could see the signal anyway)
CHILD = textwrap.dedent(r"""
    import sys, time
    import numpy as np, pandas as pd
    import jaxlmm
    from jaxlmm import datasets
    rng = np.random.default_rng(3)
    n = 300000
    a, b = rng.integers(0, 3000, n), rng.integers(0, 100, n)
    x = rng.normal(size=n)
    eta = 0.5 + 0.3 * x + 0.5 * rng.normal(size=3000)[a] + 0.3 * rng.normal(size=100)[b]
    df = pd.DataFrame({"y": rng.poisson(np.exp(eta)), "x": x, "a": a, "b": b})
    F = "y ~ x + (1 | a) + (1 | b)"
    jaxlmm.glmer(F, df, "poisson", max_iter=1)  # compiles the program (the same for the next fit)
    df["y"] = rng.poisson(np.exp(eta))
    print("fitting", flush=True)
    t0 = time.perf_counter()
    try:
        jaxlmm.glmer(F, df, "poisson")
        print("finished", time.perf_counter() - t0, flush=True)
    except KeyboardInterrupt:
        print("interrupted", time.perf_counter() - t0, flush=True)
    f = jaxlmm.lmer("Reaction ~ Days + (1 | Subject)", datasets.load("sleepstudy"))
    print("usable", f.converged, flush=True)
""")


def test_ctrl_c_stops_a_fit_within_about_a_second(tmp_path):
    # before: KeyboardInterrupt arrived only when the compiled fit returned (76 s late on 84 s)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "fitting", line + proc.stderr.read()
        time.sleep(1.5)
        sent = time.perf_counter()
        proc.send_signal(signal.SIGINT)
        line = proc.stdout.readline().split()
        latency = time.perf_counter() - sent
        assert line and line[0] == "interrupted", f"{line} {proc.stderr.read()}"
        assert latency < 3.0, f"KeyboardInterrupt took {latency:.2f} s"
        assert proc.stdout.readline().split() == ["usable", "True"]
    finally:
        proc.kill()
        proc.wait()
