"""nlmer's objectives against computations done the slow obvious way: adaptive Gauss-Hermite
against per-group numerical integration (scipy quad), Laplace against a dense joint computation
(the full Jacobian in b, the mode by dense Newton) on generated crossed and nested problems, a
linear mean against lmer's deviance, and exact gradients against central differences."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy import integrate

import jaxlmm
from conftest import load_data
from jaxlmm.covariance.templates import template_spec, templates_np
from jaxlmm.nlmm import pnls
from jaxlmm.nlmm.design import build_nlmm_design, mean_function
from jaxlmm.nlmm.system import nlmm_arrays
from jaxlmm.precision import float64

LOGIS = "y ~ Asym / (1 + exp((xmid - t) / scal))"
FOL = "conc ~ Dose * exp(lKe + lKa - lCl) * (exp(-exp(lKe) * Time) - exp(-exp(lKa) * Time)) / (exp(lKa) - exp(lKe))"


def arrays(model, data, start, random, nagq=1, weights=None, fixed=None):
    d = build_nlmm_design(mean_function(model, tuple(start)), data, tuple(start), random, fixed, weights)
    specs = tuple(template_spec(t.width, t.uncorrelated) for t in d.lmm.terms)
    with float64():
        return d, specs, nlmm_arrays(d, specs, nagq=nagq)


def value(x, G):
    with float64():
        return float(jax.jit(pnls.objective)(jnp.asarray(x), G))


def grad(x, G):
    with float64():
        return np.asarray(jax.jit(jax.grad(pnls.objective))(jnp.asarray(x), G))


def generated(kind: str, seed: int = 0, n_per: int = 3):
    """A logistic growth curve with random Asym and xmid on crossed (g1 x g2) or nested (a/b)
    groups, unbalanced (rows dropped at random)."""
    rng = np.random.default_rng(seed)
    if kind == "crossed":
        g1, g2 = np.meshgrid(np.arange(7), np.arange(5), indexing="ij")
        g1, g2 = np.repeat(g1.ravel(), n_per), np.repeat(g2.ravel(), n_per)
        df = pd.DataFrame({"g1": [f"a{v}" for v in g1], "g2": [f"b{v}" for v in g2]})
        ba, bx = rng.normal(0, 15, 7)[g1], rng.normal(0, 40, 5)[g2]
    else:
        a = np.repeat(np.arange(4), 3 * 2 * n_per)
        b = np.repeat(np.arange(12), 2 * n_per)
        df = pd.DataFrame({"a": [f"a{v}" for v in a], "b": [f"b{v % 3}" for v in b]})
        ba, bx = rng.normal(0, 15, 4)[a] + rng.normal(0, 8, 12)[b], 0.0
    t = rng.uniform(100, 1500, len(df))
    df["t"] = t
    df["y"] = (190 + ba) / (1 + np.exp((700 + bx - t) / 350)) + rng.normal(0, 6, len(df))
    df["w"] = rng.uniform(0.5, 2.0, len(df))
    keep = rng.uniform(size=len(df)) > 0.15
    return df[keep].reset_index(drop=True)


def dense_laplace(x, d, specs, G):
    """-2 log L (Laplace, Gauss-Newton curvature) from dense matrices: Z (n, q) mapping all random
    effects to the parameters' rows, the mode by Newton on the dense penalised RSS, the full
    Jacobian of f in u by jax.jacfwd."""
    k = sum(s.size for s in specs)
    P = len(d.params)
    theta, beta, sigma = x[:k], x[k : k + d.p], np.exp(x[k + d.p])
    Ts = templates_np(theta, specs)
    n = d.n
    blocks = []  # per term: (n * P, levels * w) dense map from u to phi
    for i, t in enumerate(d.lmm.terms):
        Zi = np.zeros((n, P, t.n_levels, t.width))
        for c, pk in enumerate(d.term_params[i]):
            Zi[np.arange(n), pk, t.codes, c] = t.columns[:, c]
        Zi = np.einsum("nplc,cd->npld", Zi, Ts[i])  # b = T u per level
        blocks.append(Zi.reshape(n, P, -1))
    Z = np.concatenate(blocks, axis=2)  # (n, P, q)
    A = np.zeros((n, P))
    for kk, (a, (s, e)) in enumerate(zip(d.A, d.beta_slices)):
        A[:, kk] = a @ beta[s:e]
    y, w = d.lmm.y, d.lmm.weights
    def f(u):
        data = {c: jnp.asarray(v) for c, v in d.data.items()}  # (inside float64: traced there)
        phi = jnp.asarray(A) + jnp.einsum("npq,q->np", jnp.asarray(Z), u)
        return d.mean({p: phi[:, j] for j, p in enumerate(d.params)}, data)

    def g(u):
        r = jnp.asarray(y) - f(u)
        return jnp.sum(jnp.asarray(w) * r * r) + jnp.sum(u * u)

    with float64():
        u = jnp.zeros(Z.shape[2])
        gg, hh = jax.jit(jax.grad(g)), jax.jit(jax.hessian(g))
        for _ in range(100):
            step = jnp.linalg.solve(hh(u), gg(u))
            u = u - step
            if float(jnp.max(jnp.abs(step))) < 1e-13 * (1 + float(jnp.max(jnp.abs(u)))):
                break
        J = np.asarray(jax.jacfwd(f)(u))
        gv = float(g(u))
    H = np.eye(len(u)) + J.T @ (w[:, None] * J)
    return n * np.log(2 * np.pi * sigma**2) - np.sum(np.log(w)) + gv / sigma**2 + np.linalg.slogdet(H)[1]


@pytest.mark.parametrize("kind,random,weighted", [
    ("crossed", "(Asym | g1) + (xmid | g2)", False),
    ("crossed", "(Asym + xmid | g1) + (xmid | g2)", True),
    ("nested", "(Asym | a/b)", False),
    ("nested", "(Asym + scal || a/b)", True),
])
def test_laplace_equals_dense(kind, random, weighted):
    df = generated(kind)
    start = {"Asym": 190.0, "xmid": 700.0, "scal": 350.0}
    d, specs, G = arrays(LOGIS, df, start, random, weights="w" if weighted else None)
    k = sum(s.size for s in specs)
    rng = np.random.default_rng(1)
    for _ in range(2):
        theta = rng.uniform(0.5, 4.0, k) * np.where(np.concatenate([s.diagonal for s in specs]), 1.0, 0.2)
        x = np.concatenate([theta, [185.0, 690.0, 340.0], [np.log(6.5)]])
        assert value(x, G) == pytest.approx(dense_laplace(x, d, specs, G), rel=1e-10)


def test_laplace_gradient_matches_central_differences():
    df = generated("crossed", seed=3)
    start = {"Asym": 190.0, "xmid": 700.0, "scal": 350.0}
    d, specs, G = arrays(LOGIS, df, start, "(Asym + xmid | g1) + (xmid | g2)", weights="w")
    x = np.array([2.0, 0.7, 3.0, 4.0, 185.0, 690.0, 340.0, np.log(6.5)])
    g = grad(x, G)
    h = 1e-5 * (1 + np.abs(x))
    fd = np.array([(value(x + h[i] * np.eye(len(x))[i], G) - value(x - h[i] * np.eye(len(x))[i], G)) / (2 * h[i])
                   for i in range(len(x))])
    assert np.max(np.abs(g - fd) / (1 + np.abs(fd))) < 1e-5
    assert np.max(np.abs(g)) > 1.0  # not at a stationary point: the comparison has content


@pytest.fixture(scope="module")
def theoph():
    return load_data("Theoph")


def test_agq_equals_quadrature(theoph):
    """AGQ with 25 nodes against scipy quad of each subject's marginal likelihood in b (lCl's
    random effect enters nonlinearly)."""
    start = {"lKe": -2.5, "lKa": 0.5, "lCl": -3.0}
    d, specs, G = arrays(FOL, theoph, start, "(lCl | Subject)", nagq=25)
    theta, beta, sigma = 0.4, np.array([-2.5, 0.45, -3.2]), 0.8
    x = np.r_[theta, beta, np.log(sigma)]
    codes = d.lmm.terms[0].codes
    y, dose, time = d.lmm.y, d.data["Dose"], d.data["Time"]
    total = 0.0
    for j in range(d.lmm.terms[0].n_levels):
        m = codes == j

        def loglik(b):
            lke, lka, lcl = beta[0], beta[1], beta[2] + b
            mu = dose[m] * np.exp(lke + lka - lcl) * (np.exp(-np.exp(lke) * time[m]) - np.exp(-np.exp(lka) * time[m])) \
                / (np.exp(lka) - np.exp(lke))
            sd_b = sigma * theta
            return (np.sum(-0.5 * np.log(2 * np.pi * sigma**2) - 0.5 * (y[m] - mu) ** 2 / sigma**2)
                    - 0.5 * np.log(2 * np.pi * sd_b**2) - 0.5 * b * b / sd_b**2)

        grid = np.linspace(-3, 3, 601)
        top = max(loglik(b) for b in grid)
        val, err = integrate.quad(lambda b: np.exp(loglik(b) - top), -3, 3, epsabs=0, epsrel=1e-13, limit=200)
        total += -2 * (np.log(val) + top)
    assert value(x, G) == pytest.approx(total, rel=1e-8)
    # and Laplace differs (the integrand is not Gaussian), so the comparison has content
    _, _, G1 = arrays(FOL, theoph, start, "(lCl | Subject)", nagq=1)
    assert abs(value(x, G1) - total) > 1e-5 * abs(total)


def test_agq_gradient_matches_central_differences(theoph):
    start = {"lKe": -2.5, "lKa": 0.5, "lCl": -3.0}
    _, _, G = arrays(FOL, theoph, start, "(lCl | Subject)", nagq=9)
    x = np.array([0.4, -2.5, 0.45, -3.2, np.log(0.8)])
    g = grad(x, G)
    h = 1e-5 * (1 + np.abs(x))
    fd = np.array([(value(x + h[i] * np.eye(5)[i], G) - value(x - h[i] * np.eye(5)[i], G)) / (2 * h[i]) for i in range(5)])
    assert np.max(np.abs(g - fd) / (1 + np.abs(fd))) < 1e-5


@pytest.mark.parametrize("reml", [False, True])
def test_linear_mean_is_lmer(sleepstudy, reml):
    """With f linear in its parameters the Laplace objective is the LMM's ML deviance exactly,
    and Lindstrom-Bates is lmer (ML or REML) after one linearisation."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jaxlmm.FitWarning)
        ref = jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", sleepstudy, reml=reml)
        lbf = jaxlmm.nlmer("Reaction ~ b0 + b1 * Days", sleepstudy, {"b0": 250, "b1": 10}, "(b0 + b1 | Subject)",
                           method="lb", reml=reml)
    assert lbf.objective == pytest.approx(ref.objective, rel=1e-10)
    assert np.allclose(lbf.fixef, ref.fixef, rtol=1e-7) and np.allclose(lbf.se, ref.se, rtol=1e-6)
    assert np.allclose(lbf.theta, ref.theta, rtol=1e-5, atol=1e-7)
    if reml:
        return
    lap = jaxlmm.nlmer("Reaction ~ b0 + b1 * Days", sleepstudy, {"b0": 250, "b1": 10}, "(b0 + b1 | Subject)")
    assert lap.objective == pytest.approx(ref.objective, rel=1e-10)
    assert np.allclose(lap.fixef, ref.fixef, rtol=1e-6)
    assert np.allclose(lap.theta, ref.theta, rtol=1e-4, atol=1e-6)
    assert lap.sigma == pytest.approx(ref.sigma, rel=1e-5)
    # at lmer's own estimates the two objectives agree to rounding
    _, _, G = arrays("Reaction ~ b0 + b1 * Days", sleepstudy, {"b0": 250, "b1": 10}, "(b0 + b1 | Subject)")
    x = np.r_[ref.theta, ref.fixef.to_numpy(), np.log(ref.sigma)]
    assert value(x, G) == pytest.approx(ref.objective, rel=1e-12)
