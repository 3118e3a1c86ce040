"""``glmer``: generalized linear mixed models (formula -> design -> GLMM arrays -> Laplace / AGQ
objective -> BFGS over ``(theta, beta)`` -> :class:`GlmerResult`), lme4's ``glmer``.

The optimiser works on ``(theta, beta)`` together (lme4's second stage, ``nAGQ > 0``), and on
``log phi`` too for the Gamma family, with exact JAX gradients of the Laplace or adaptive
Gauss-Hermite ``-2 log L`` (:mod:`jaxlmm.pirls`). It starts from the GLM fit without random
effects and identity templates. ``Var(beta)`` is the ``beta`` block of ``2 H^{-1}``, ``H`` the
Hessian of ``-2 log L`` in ``(theta, beta)`` (lme4's default). ``H`` is the central difference of
the exact gradient (error about 1e-8 relative; lme4 differences the objective itself), one
vmapped program of ``2d + 1`` gradients that compiles in a third of the time of
``jax.hessian`` through the Newton steps, which it matches (tests).
"""

from __future__ import annotations

import dataclasses
import functools
import re
import time
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import pirls
from .covariance import diagonal_mask, rectify, template_spec, templates_np, theta_start
from .design import Design, build_design
from .errors import ArgumentError, DataError, FitError, FitWarning, FormulaError
from .family import Family, family as make_family
from .fit import CONVERGED_GRAD, SINGULAR_TOL
from .frames import as_frame, column_names
from .optimize import minimize_bfgs
from .precision import float64
from .progress import logger

MAX_AGQ = 25


@dataclasses.dataclass(frozen=True, eq=False)
class GlmmModel:
    """Design, family and (cached) device arrays of one GLMM."""

    design: Design
    family: Family
    specs: tuple
    nagq: int
    _cache: dict = dataclasses.field(default_factory=dict, repr=False)

    def __getstate__(self) -> dict:
        """Pickled without ``_cache`` (device arrays, rebuilt on first use); see jaxlmm.saving."""
        from .saving import record_state

        return record_state(self)

    def __setstate__(self, state: dict) -> None:
        from .saving import restore_record

        restore_record(self, state)

    @property
    def n(self) -> int:
        return self.design.n

    @property
    def p(self) -> int:
        return self.design.p

    @property
    def n_theta(self) -> int:
        return sum(s.size for s in self.specs)

    @property
    def has_rows(self) -> bool:
        return True

    def arrays(self, y: np.ndarray | None = None) -> pirls.GlmmArrays:
        """Device arrays (call under ``float64()``); cached for the fitted response."""
        if y is None and "G" in self._cache:
            return self._cache["G"]
        d = self.design
        G = pirls.glmm_arrays([t.codes for t in d.terms], [t.columns for t in d.terms], d.X,
                              d.y if y is None else y, d.weights, d.offset, self.specs, self.family)
        if y is None:
            self._cache["G"] = G
        return G


# --- the compiled program (one per model structure and nagq) ------------------------------------


def fd_step(x):
    """Step of the central differences of the gradient: ``1e-4 (1 + |x_i|)`` (numpy or jax)."""
    return 1e-4 * (1.0 + abs(x))


def _hessian_points(x, diag_mask, snap_tol):
    """The ``2d + 1`` points ``x_s, x_s +- h_i e_i`` around ``x_s``: ``x`` with the diagonal
    template entries below ``snap_tol`` in size set to zero (the boundary)."""
    xs = jnp.where(diag_mask & (jnp.abs(x) < snap_tol), 0.0, x)
    E = jnp.diag(fd_step(xs))
    return jnp.concatenate([xs[None], xs[None] + E, xs[None] - E])


def fit_core(x0, G, nagq: int, max_iter, glm_beta, snap_tol):
    """BFGS over ``x = (theta, beta[, log phi])`` from ``x0`` (its ``beta`` and ``log phi``
    replaced by the GLM fit's when ``glm_beta``), then the value and gradient at the ``2d + 1``
    points of :func:`_hessian_points` in the same loop, with the modes and linear predictor at
    the first (see :func:`jaxlmm.optimize.minimize_bfgs`). PIRLS starts from the modes of the
    previous evaluation. ``max_iter``, ``glm_beta`` and
    ``snap_tol`` are traced."""
    k, p = G.n_theta, G.p
    beta0, phi0 = pirls.glm_coefficients(G)
    xs = x0.at[k : k + p].set(beta0)
    if not G.scale_free:
        xs = xs.at[k + p].set(jnp.log(phi0))
    x0 = jnp.where(glm_beta, xs, x0)
    d = x0.shape[0]
    diag_mask = np.concatenate([diagonal_mask(G.specs), np.zeros(d - k, bool)])
    return minimize_bfgs(pirls.objective_aux, x0, G, nagq, gtol=1e-6, max_iter=max_iter,
                         extra_points=lambda x: _hessian_points(x, diag_mask, snap_tol),
                         n_extra=2 * d + 1, has_aux=True, feed_aux=True)


_fit_program = jax.jit(fit_core, static_argnames=("nagq",))


def hessian_from_gradients(g: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Central differences of exact gradients ``g (2d, d)`` at ``x + h_i e_i`` then
    ``x - h_i e_i``, symmetrised: error ``O(h^2)``, about 1e-8 relative."""
    d = h.shape[0]
    H = (g[:d] - g[d:]) / (2.0 * h[:, None])
    return 0.5 * (H + H.T)


@functools.partial(jax.jit, static_argnames=("nagq",))
def _values_grads(X, G, nagq: int):
    """``-2 log L`` and its exact gradient at each row of ``X (m, d)`` (tests and tools)."""
    return jax.vmap(jax.value_and_grad(pirls.objective), in_axes=(0, None, None, None))(X, G, nagq, 1)


def hessian(model: "GlmmModel", x: np.ndarray) -> np.ndarray:
    """Hessian of ``-2 log L`` at ``x = (theta, beta[, log phi])`` by central differences of the
    exact gradient (a separate program; fits get theirs from :func:`fit_core`)."""
    with float64():
        x = np.asarray(x, dtype=np.float64)
        h = fd_step(x)
        E = np.diag(h)
        _, g = _values_grads(jnp.asarray(np.vstack([x + E, x - E])), model.arrays(), model.nagq)
        return hessian_from_gradients(np.asarray(g), h)


@jax.jit
def _factor_at(theta, eta, phi, G):
    """The blocked factor of ``Lambda' Z' W Z Lambda + I`` at the linear predictor ``eta``."""
    _, W = pirls.score_weights(eta, G, phi)
    diag, off = pirls.weighted_blocks(W, jnp.zeros_like(W), G, theta)
    d, o = pirls.scale_blocks(theta, G.specs, diag, off)
    return pirls.blocked_cholesky(G.structure, d, o)


def factor_at(model: "GlmmModel", theta: np.ndarray, eta: np.ndarray, phi: float):
    """Host copies of :func:`_factor_at` and of the structure (for conditional variances)."""
    with float64():
        G = model.arrays()
        f = _factor_at(jnp.asarray(theta), jnp.asarray(eta), jnp.asarray(phi), G)
        factor = ([np.asarray(d) for d in f.diag], {n: np.asarray(v) for n, v in f.off.items()},
                  np.asarray(f.tail))
        return factor, jax.tree_util.tree_map(np.asarray, G.structure)


# --- the response of a binomial model as cbind(successes, failures) ------------------------------

_CBIND = re.compile(r"^\s*cbind\s*\((?P<args>.*)\)\s*~(?P<rhs>.*)$", re.S)


def _split_top(s: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in s:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [a.strip() for a in out]


def _cbind(formula: str, data, weights):
    """``cbind(s, f) ~ rhs``: the proportion ``s / (s + f)`` as response, ``s + f`` trials as
    weights (R's binomial ``glm``). Returns the rewritten formula, data and weights."""
    m = _CBIND.match(formula)
    if m is None:
        return formula, data, weights, None
    args = _split_top(m.group("args"))
    if len(args) != 2 or not all(args):
        raise FormulaError(f"cbind() in {formula!r} needs two arguments: successes and failures")
    if weights is not None:
        raise ArgumentError("a cbind(successes, failures) response gives the trials; leave weights=None")
    df = as_frame(data).copy()
    vals = []
    for a in args:
        try:
            v = df.eval(a)
        except Exception as e:  # noqa: BLE001 - any failure to evaluate is the user's expression
            raise FormulaError(f"cannot evaluate {a!r} in cbind() of {formula!r}: {e}") from None
        vals.append(np.asarray(v, dtype=np.float64))
    s, f = vals
    bad = np.isfinite(s) & np.isfinite(f) & ((s < 0) | (f < 0))
    if bad.any():
        k = int(np.nonzero(bad)[0][0])
        raise DataError(f"cbind() counts must be non-negative; row {k} has ({s[k]}, {f[k]})")
    trials = s + f
    zero = np.isfinite(trials) & (trials == 0)
    if zero.any():
        k = int(np.nonzero(zero)[0][0])
        raise DataError(f"cbind() row {k} has no trials (0 successes and 0 failures): drop it")
    df["__jaxlmm_prop"] = s / trials
    df["__jaxlmm_trials"] = trials
    label = f"cbind({args[0]}, {args[1]})"
    return "__jaxlmm_prop ~" + m.group("rhs"), df, "__jaxlmm_trials", label


# --- the user API -------------------------------------------------------------------------------


def _check_nagq(nagq, design: Design) -> int:
    if isinstance(nagq, bool) or not isinstance(nagq, (int, np.integer)) or not 0 < int(nagq) <= MAX_AGQ:
        raise ArgumentError(f"nagq must be an integer from 1 to {MAX_AGQ}, got {nagq!r}")
    nagq = int(nagq)
    if nagq > 1 and (len(design.terms) != 1 or design.terms[0].width != 1):
        raise ArgumentError(
            f"nagq={nagq} (adaptive Gauss-Hermite) needs a single scalar random-effects term such as "
            "(1 | g); use nagq=1 (Laplace) for this model"
        )
    return nagq


def glmer(
    formula: str,
    data: Any,
    family: "str | Family" = "binomial",
    *,
    link: str | None = None,
    weights: str | np.ndarray | None = None,
    offset: str | np.ndarray | None = None,
    nagq: int = 1,
    start: dict | None = None,
    max_iter: int = 1000,
):
    """Fit a generalized linear mixed model ``g(E[y | b]) = X beta + Z b + offset`` in lme4 syntax.

    ``b ~ N(0, Lambda Lambda')``; ``y | b`` from ``family``: ``"binomial"`` (0/1, a proportion
    with ``weights`` = number of trials, or ``cbind(successes, failures) ~ ...``), ``"poisson"``,
    ``"gamma"``, or a :class:`jaxlmm.family.Family` (``jaxlmm.binomial("probit")``); ``link``
    overrides the family's link.

    Maximises the Laplace approximation (``nagq = 1``) or the adaptive Gauss-Hermite
    approximation with ``nagq`` nodes (one scalar random-effects term only) of the likelihood over
    ``(theta, beta)`` (and the dispersion for Gamma) with exact JAX gradients; the conditional
    modes come from PIRLS on the blocked sparse Cholesky at every evaluation.

    ``start``: ``{"theta": ..., "beta": ...}`` (either may be left out). Rows with missing values
    in any used column are dropped. Computation is in float64 without changing JAX's global
    configuration.
    """
    t0 = time.perf_counter()
    fam = make_family(family, link)
    if not isinstance(formula, str):
        raise ArgumentError(f"formula must be a string, got {type(formula).__name__}")
    formula, data, weights, label = _cbind(formula, data, weights)
    if label is not None and fam.name != "binomial":
        raise FormulaError(f"a cbind() response is for the binomial family, not {fam.name}")
    column_names(data)  # a clear error for data of the wrong kind, before anything else
    design = build_design(formula, data, weights=weights, offset=offset, residual=False)
    if label is not None:
        pf = dataclasses.replace(design.formula, formula=design.formula.formula.replace("__jaxlmm_prop", label))
        design = dataclasses.replace(design, formula=pf, response=label)
    fam.check_response(design.y, design.weights, f"response {design.response!r}")
    nagq = _check_nagq(nagq, design)
    specs = tuple(template_spec(t.width, t.uncorrelated) for t in design.terms)
    model = GlmmModel(design=design, family=fam, specs=specs, nagq=nagq)
    x0, glm_beta = _start(model, start)
    return fit_glmm(model, x0, glm_beta=glm_beta, max_iter=max_iter, t0=t0)


def _start(model: GlmmModel, start: dict | None) -> tuple[np.ndarray, bool]:
    """``x0`` and whether its ``beta`` (and ``log phi``) come from the GLM fit on the device."""
    theta = theta_start(model.specs)
    beta = np.zeros(model.p)
    glm_beta = True
    if start is not None:
        if not isinstance(start, dict) or set(start) - {"theta", "beta"}:
            raise ArgumentError("start must be a dict with keys 'theta' and/or 'beta'")
        if "theta" in start:
            theta = np.asarray(start["theta"], dtype=np.float64).ravel()
            if theta.shape[0] != model.n_theta:
                raise ArgumentError(f"start['theta'] has {theta.shape[0]} values; this model has {model.n_theta}")
        if "beta" in start:
            beta = np.asarray(start["beta"], dtype=np.float64).ravel()
            if beta.shape[0] != model.p:
                raise ArgumentError(f"start['beta'] has {beta.shape[0]} values; this model has {model.p}")
            glm_beta = False
    x0 = np.concatenate([theta, beta])
    if not model.family.scale_free:
        x0 = np.append(x0, 0.0)
    return x0, glm_beta


_MESSAGES = {0: "gradient tolerance reached", 1: "no further decrease possible (rounding level)",
             2: "iteration limit reached", 3: "relative change of the objective below tolerance"}


def optimise(model: GlmmModel, x0: np.ndarray, glm_beta: bool = False, max_iter: int = 1000) -> dict:
    """Run :func:`fit_core`; snap boundary theta to zero when that is no worse (else run again
    from the optimum without snapping), rectify the template signs. Returns the estimates
    ``x``, ``objective``, ``grad``, the Hessian ``H``, the modes ``u`` (for the unrectified
    ``x_raw``), ``eta`` and the PIRLS diagnostics."""
    k = model.n_theta
    with float64():
        G = model.arrays()
        args = (G, model.nagq, jnp.asarray(max_iter))
        r = _fit_program(jnp.asarray(x0), *args, jnp.asarray(glm_beta), jnp.asarray(SINGULAR_TOL))
        x = np.asarray(r.x)
        diag = np.concatenate([diagonal_mask(model.specs), np.zeros(len(x) - k, bool)])
        small = diag & (np.abs(x) < SINGULAR_TOL)
        f, g = float(r.fun), np.asarray(r.grad)
        n_evals, n_iter, status = int(r.nfev), int(r.n_iter), int(r.status)
        if small.any():
            f_snap = float(r.extra_f[0])
            if np.isfinite(f_snap) and f_snap <= f + 1e-9 * (1.0 + abs(f)):
                x, f, g = np.where(small, 0.0, x), f_snap, np.asarray(r.extra_g[0])
            else:  # the boundary is worse: derivatives at the optimum itself
                r = _fit_program(jnp.asarray(x), *args, jnp.asarray(False), jnp.asarray(0.0))
                x, f, g = np.asarray(r.x), float(r.fun), np.asarray(r.grad)
                n_evals += int(r.nfev)
                small = np.zeros_like(small)
        n_evals += 2 * len(x) + 1
        h = fd_step(x)
        H = hessian_from_gradients(np.asarray(r.extra_g[1:]), h)
        u, eta, it, ok = r.aux
        u, eta, it, ok = [np.asarray(v) for v in u], np.asarray(eta), int(it), bool(ok)
    x_raw = x.copy()
    x = x.copy()
    theta, sign = rectify(x[:k], model.specs)
    x[:k] = theta
    sign = np.concatenate([sign, np.ones(len(x) - k)])
    g = g * sign
    H = H * np.outer(sign, sign)
    gmax = float(np.max(np.abs(g[~small]))) if (~small).any() else 0.0
    converged = bool(np.isfinite(f)) and (
        status == 0 or (status in (1, 3) and gmax <= CONVERGED_GRAD * max(1.0, abs(f)) ** 0.5))
    return dict(x=x, x_raw=x_raw, objective=f, grad=g, H=H, n_iter=n_iter, n_evals=n_evals, status=status,
                converged=bool(converged), message=_MESSAGES.get(status, "unknown"),
                singular=bool(np.any(x[diag] < SINGULAR_TOL)), boundary=small, u=u, eta=eta,
                pirls_iterations=it, pirls_converged=ok and bool(np.isfinite(f)))


def beta_covariance(H: np.ndarray, k: int, p: int, boundary: np.ndarray) -> tuple[np.ndarray, bool]:
    """``Var(beta)``: the beta block of ``2 H^{-1}`` (rows of theta at the boundary left out).
    Returns ``(V, ok)``; ``ok`` False when ``H`` is not positive definite there (NaN then)."""
    keep = ~boundary
    Hk = H[np.ix_(keep, keep)]
    kb = int(np.sum(keep[:k]))
    try:
        np.linalg.cholesky(0.5 * (Hk + Hk.T))
    except np.linalg.LinAlgError:
        return np.full((p, p), np.nan), False
    A = 2.0 * np.linalg.inv(Hk)
    V = A[kb : kb + p, kb : kb + p]
    return 0.5 * (V + V.T), True


def fit_glmm(model: GlmmModel, x0: np.ndarray, *, glm_beta: bool = False, max_iter: int = 1000,
             t0: float | None = None, stacklevel: int = 3):
    """Optimise and assemble the :class:`GlmerResult` (lme4's ``optimizeGlmer`` + ``mkMerMod``)."""
    from .glmer_result import make_result

    t0 = time.perf_counter() if t0 is None else t0
    o = optimise(model, x0, glm_beta=glm_beta, max_iter=max_iter)
    if not np.isfinite(o["objective"]):
        raise FitError("the GLMM objective is not finite at the starting values: PIRLS found no "
                       "conditional modes there; check the response, offset and start values")
    k, p = model.n_theta, model.p
    V, vcov_ok = beta_covariance(o["H"], k, p, o["boundary"])
    pirls_ok = o["pirls_converged"]
    warn = []
    if not pirls_ok:
        warn.append(f"PIRLS did not converge to the conditional modes at the estimates "
                    f"({o['pirls_iterations']} iterations)")
    if not o["converged"]:
        warn.append(f"the optimiser did not converge ({o['message']}; max |gradient| "
                    f"{np.max(np.abs(o['grad'])):.3g})")
    if o["singular"] and model.design.terms:
        warn.append("boundary (singular) fit: a variance component is zero or a correlation is +-1")
    if not vcov_ok:
        warn.append("the Hessian of -2 log L is not positive definite: standard errors are NaN")
    info = dict(optimizer="bfgs (jax)", converged=bool(o["converged"] and pirls_ok), status=o["status"],
                message=o["message"], n_iter=o["n_iter"], n_evals=o["n_evals"], grad=o["grad"],
                grad_norm=float(np.max(np.abs(o["grad"]))) if o["grad"].size else 0.0,
                pirls_converged=pirls_ok, pirls_iterations=o["pirls_iterations"], hessian_ok=vcov_ok,
                warnings=tuple(warn), time_s=time.perf_counter() - t0)
    # b = Lambda u with the templates the modes were computed with (sign flips leave b unchanged)
    b = [ui @ T.T for ui, T in zip(o["u"], templates_np(o["x_raw"][:k], model.specs))]
    result = make_result(model, o, V, b, info)
    logger.info("fitted glmer %s (%s, nagq=%d): %d evaluations, %.2f s, -2 log L %.6f%s",
                model.design.formula.formula, model.family, model.nagq, o["n_evals"], info["time_s"],
                o["objective"], "" if not warn else " (" + "; ".join(warn) + ")")
    if warn:
        warnings.warn("; ".join(warn) + " (details in fit.diagnostics)", FitWarning, stacklevel=stacklevel)
    return result
