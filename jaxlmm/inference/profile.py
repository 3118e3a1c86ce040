"""Likelihood profiles and profile confidence intervals (lme4's ``profile.merMod`` and
``confint.merMod(method = "profile")``).

Everything is on the ML deviance ``D = -2 log L`` (a REML fit is refitted by ML first, as lme4
does), with ``D_hat`` its minimum. For one parameter ``psi`` held at ``x`` the others are
re-optimised and

    zeta(x) = sign(x - psi_hat) sqrt(min D | psi = x  -  D_hat),

approximately standard normal; the ``level`` interval is ``{x : |zeta(x)| <= z}`` with
``z = qnorm((1 + level) / 2)``, its ends found by root finding (lme4 interpolates a spline).

- Variance parameters are profiled on lme4's sd/cor scale with ``sigma`` free: the deviance in
  ``(theta, sigma)`` (beta at its conditional optimum) is minimised over the other sds, the
  correlations (rows of a unit-row Cholesky factor of each correlation matrix) and
  ``log sigma``.
- Fixed effect ``beta_j`` at ``b``: column ``j`` leaves ``X`` and ``b x_j`` joins the offset. The
  ``XY`` stage of the Gram matrix is mapped linearly, ``[X, y] -> [X_{-j}, e, y - b x_j]`` with
  ``e`` a unit column orthogonal to everything (coefficient zero), so the reduced model keeps the
  full model's structure and no pass over the rows is needed; the deviance is minimised over
  all variance parameters as above.

One compiled BFGS (``minimize_bfgs`` inside ``jax.jit``; which parameter is held is data, not
structure) serves the ML refit and every point of every profile of a model, warm-started from
the neighbouring point.

Boundaries follow lme4: where a profile reaches the bound of its parameter (sd = 0,
cor = -1 or 1) before ``|zeta| = z`` the interval ends at that bound.

This module traces the curves and finds the interval ends; the unconstrained parametrisation and
the compiled minimisation at one point are in :mod:`jaxlmm.inference.profile_layout`.
"""

from __future__ import annotations

import dataclasses
import warnings
import weakref
from collections.abc import Iterable

import jax.numpy as jnp
import numpy as np
import pandas as pd
import scipy.optimize

from .. import distributions
from ..arguments import check_level, positive_int
from ..errors import ArgumentError, FitWarning
from ..optim.finish import SINGULAR_TOL
from ..lmm.fit import conditional_estimates
from ..progress import progress
from ..lmm.objective import ModelArrays
from ..covariance.sdcor import sdcor_from_varpar, sdcor_names
from ..precision import float64
from .profile_layout import (
    VarLayout,
    canonical_unconstrained,
    profile_point,
    transformed_jit,
    unconstrained_sizes,
    unconstrained_start,
    var_layout,
    xy_map,
)

# host LAPACK callbacks cost more than XLA's own factorization on small dense tails
XLA_TAIL_MAX = 256
XTOL = 1e-9  # root tolerance relative to the first step (a standard-error scale)
MAX_STEPS = 60  # outward steps when bracketing an interval end
MAX_MULT = 10.0  # largest growth of an outward step (lme4's maxmult)
DZ_MAX = 1.0  # largest intended change of zeta per outward step
DEV_TOL = 1e-6  # a profile deviance below the minimum by more than this (relative) is reported


# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Profiler:
    """The ML optimum of a fit and what every profile of it shares."""

    names: list[str]
    n_vp: int
    estimate: np.ndarray  # sd/cor/sigma then beta, at the ML optimum
    lower: np.ndarray  # parameter bounds (lme4's)
    upper: np.ndarray
    scale: np.ndarray  # a first step for each parameter
    base: float  # ML deviance at the optimum
    u_hat: np.ndarray  # unconstrained variance vector at the optimum
    varpar: np.ndarray  # (theta, sigma) at the optimum
    M: ModelArrays  # ML arrays
    M_fit: ModelArrays  # the fit's own arrays (beta at theta does not depend on REML/ML)
    free: VarLayout  # nothing held


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _profiler(fit) -> _Profiler:
    try:
        return _CACHE[fit]
    except (KeyError, TypeError):
        pass
    pr = _make_profiler(fit)
    try:
        _CACHE[fit] = pr
    except TypeError:
        pass
    return pr


def _make_profiler(fit) -> _Profiler:
    model = fit._model
    design, specs = model.design, model.specs
    p = design.p
    with float64():
        M = model.arrays(False)
        if M.host_lapack and M.structure.m <= XLA_TAIL_MAX:
            M = model.arrays(False, host_lapack=False)
        M_fit = model.arrays(fit.reml)
        free = var_layout(-1, specs)[0]
        u = unconstrained_start(np.asarray(fit.theta), float(fit.sigma), specs)
        if fit.reml:  # lme4's refitML: the ML optimum from the REML one
            u, base, vp = profile_point(jnp.asarray(u), jnp.asarray(0.0, dtype=jnp.float64), free,
                                 jnp.eye(p + 1, dtype=jnp.float64), jnp.zeros(p + 1, dtype=jnp.float64), M)
            u, vp, base = np.asarray(u), np.asarray(vp), float(base)
            # a boundary fit: snap sds below lme4's singularity tolerance to zero when that is
            # no worse (zero is a stationary point of the even deviance, so it stays there)
            n_sd = unconstrained_sizes(specs)[0]
            small = np.abs(u[:n_sd]) < SINGULAR_TOL * vp[-1]
            if small.any():
                u0 = u.copy()
                u0[:n_sd][small] = 0.0
                u2, base2, vp2 = profile_point(jnp.asarray(u0), jnp.asarray(0.0, dtype=jnp.float64), free,
                                        jnp.eye(p + 1, dtype=jnp.float64),
                                        jnp.zeros(p + 1, dtype=jnp.float64), M)
                if float(base2) <= base + 1e-9 * (1.0 + abs(base)):
                    u, vp, base = np.asarray(u2), np.asarray(vp2), float(base2)
            beta = conditional_estimates(vp[:-1], M_fit).beta
        else:
            vp = np.append(np.asarray(fit.theta, dtype=np.float64), fit.sigma)
            base = float(fit.objective)
            beta = np.asarray(fit.fixef, dtype=np.float64)
    sdcor = sdcor_from_varpar(np.asarray(vp, dtype=np.float64), specs, undefined=0.0)
    names = sdcor_names(design, specs) + list(design.x_names)
    sd_mask = np.concatenate([np.array(s.diagonal) for s in specs] + [np.array([True])])
    lower = np.concatenate([np.where(sd_mask, 0.0, -1.0), np.full(p, -np.inf)])
    upper = np.concatenate([np.where(sd_mask, np.inf, 1.0), np.full(p, np.inf)])
    vscale = np.where(sd_mask, 0.2 * np.maximum(sdcor, 0.05 * sdcor[-1]), 0.1)
    se = np.asarray(fit.se, dtype=np.float64)
    return _Profiler(
        names=names, n_vp=sdcor.shape[0], estimate=np.concatenate([sdcor, beta]), lower=lower,
        upper=upper, scale=np.concatenate([vscale, np.where(se > 0, se, 1.0)]), base=base,
        u_hat=canonical_unconstrained(np.asarray(u), specs), varpar=np.asarray(vp), M=M, M_fit=M_fit,
        free=free,
    )


class _Curve:
    """zeta of one parameter as a function of its value; keeps every point's deviance and
    minimiser, and warm-starts each minimisation from the nearest point computed before."""

    def __init__(self, pr: _Profiler, k: int):
        self.pr, self.k = pr, k
        self.xhat = float(pr.estimate[k])
        self.fixed = k >= pr.n_vp
        self.p = pr.M.p
        # sds start at least this far from zero, a stationary point of the even deviance
        self.floor = 1e-3 * pr.estimate[pr.n_vp - 1]
        u0 = pr.u_hat.copy()
        with float64():
            if self.fixed:
                self.j = k - pr.n_vp
                self.lay, self.log_sd = pr.free, np.zeros(unconstrained_sizes(pr.M.specs)[0], bool)
            else:
                self.lay, self.log_sd = var_layout(k, pr.M.specs)
                n_sd = self.log_sd.shape[0]
                u0[:n_sd][self.log_sd] = np.log(np.maximum(u0[:n_sd][self.log_sd], self.floor))
        # value -> (zeta, minimiser u, deviance, (theta, sigma))
        self.points: dict[float, tuple] = {self.xhat: (0.0, u0, pr.base, pr.varpar)}
        self._warned = False

    def _xy(self, x: float):
        if self.fixed:
            return xy_map(self.p, self.j, x)
        return np.eye(self.p + 1), np.zeros(self.p + 1)

    def _minimise(self, x: float, start: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        start = start.copy()
        n_sd = self.log_sd.shape[0]
        sd = start[:n_sd]
        tiny = ~self.log_sd & (np.abs(sd) < self.floor)
        sd[tiny] = np.where(sd[tiny] < 0, -self.floor, self.floor)
        sd[self.log_sd] = np.maximum(sd[self.log_sd], np.log(self.floor))
        E, e = self._xy(x)
        with float64():
            u, f, vp = profile_point(jnp.asarray(start), jnp.asarray(x, dtype=jnp.float64), self.lay,
                              jnp.asarray(E), jnp.asarray(e), self.pr.M)
        f = float(f)
        base = self.pr.base
        if f < base - DEV_TOL * max(1.0, abs(base)) and not self._warned:
            self._warned = True
            warnings.warn(f"profiling {self.pr.names[self.k]} found a deviance {base - f:.3g} below the "
                          "fit's optimum: the fit had not converged (intervals are relative to it)",
                          FitWarning, stacklevel=4)
        return f, np.asarray(u), np.asarray(vp)

    def zeta(self, x: float) -> float:
        """``sign(x - x_hat) sqrt(D(x) - D_hat)`` (cached)."""
        x = float(x)
        if x in self.points:
            return self.points[x][0]
        # warm start from the nearest point between the estimate and x: the branch followed
        # outward from the optimum, as lme4 does (a profile can have other local minima)
        side = np.sign(x - self.xhat)
        inner = [t for t in self.points
                 if (t - self.xhat) * side >= 0 and abs(t - self.xhat) <= abs(x - self.xhat)]
        near = min(inner, key=lambda t: abs(t - x))
        f, u, vp = self._minimise(x, self.points[near][1])
        z = float(side * np.sqrt(max(f - self.pr.base, 0.0)))
        self.points[x] = (z, u, f, vp)
        return z

    def centre(self) -> None:
        """Minimise at the estimate itself (its deviance is otherwise taken as ``D_hat``)."""
        f, u, vp = self._minimise(self.xhat, self.points[self.xhat][1])
        self.points[self.xhat] = (0.0, u, f, vp)

    def all_parameters(self, x: float) -> np.ndarray:
        """sd/cor/sigma and beta at the profile point ``x`` (after :meth:`zeta`)."""
        pr = self.pr
        vp = self.points[x][3]
        with float64():
            if self.fixed:
                E, e = self._xy(x)
                M = transformed_jit(pr.M_fit, jnp.asarray(E), jnp.asarray(e))
            else:
                M = pr.M_fit
            beta = conditional_estimates(vp[:-1], M).beta
        if self.fixed:
            beta[self.j] = x
        return np.concatenate([sdcor_from_varpar(np.asarray(vp, dtype=np.float64), pr.M.specs, undefined=0.0), beta])

    def end(self, target: float, direction: int) -> float:
        """The value on side ``direction`` (+1/-1) where ``|zeta| = target``; the parameter's bound
        when the profile reaches it first (lme4's convention); nan when no crossing is found."""
        pr, k = self.pr, self.k
        lo, hi = pr.lower[k], pr.upper[k]
        bound = hi if direction > 0 else lo
        x0, z0 = self.xhat, 0.0
        if x0 == bound:
            return float(bound)
        step = float(pr.scale[k])
        x1 = float(np.clip(x0 + direction * step, lo, hi))
        for _ in range(MAX_STEPS):
            z1 = self.zeta(x1)
            if direction * z1 >= target:
                a, b = sorted((x0, x1))
                try:
                    return scipy.optimize.brentq(lambda t: self.zeta(t) - direction * target, a, b,
                                                 xtol=XTOL * step, rtol=1e-12)
                except ValueError:  # non-finite deviances in the bracket
                    return float("nan")
            if x1 == bound:
                return float(bound)
            dx = abs(x1 - x0)
            dz = direction * (z1 - z0)
            if dz > 0 and np.isfinite(dz):
                want = min(target - direction * z1, DZ_MAX)
                new = min(want * dx / dz * 1.1 + 0.01 * dx, MAX_MULT * dx)
            else:
                new = 2.0 * dx
            x0, z0 = x1, z1
            x1 = float(np.clip(x1 + direction * new, lo, hi))
        return float("nan")


# --------------------------------------------------------------------------------------------
# public API


def _which(which, names: list[str], n_vp: int) -> list[int]:
    """Indices selected by ``which``: None (all), a name, ``"theta_"`` (variance parameters),
    ``"beta_"`` (fixed effects), or a list of these."""
    if which is None:
        return list(range(len(names)))
    items = [which] if isinstance(which, str) else list(which)
    if not items:
        raise ArgumentError("which selects no parameter")
    out = set()
    for w in items:
        if not isinstance(w, str):
            raise ArgumentError(f"which must name parameters, got {w!r}")
        if w == "theta_":
            out.update(range(n_vp))
        elif w == "beta_":
            out.update(range(n_vp, len(names)))
        elif w in names:
            out.add(names.index(w))
        else:
            raise ArgumentError(f"which: no parameter {w!r}; the parameters are {names} "
                                "(or 'theta_', 'beta_')")
    return sorted(out)


def _parameter_names(fit) -> tuple[list[str], int]:
    """lme4's names of all parameters (sd/cor per term, sigma, fixed effects) and how many are
    variance parameters; without any computation."""
    model = getattr(fit, "_model", None)
    if model is None:
        raise ArgumentError("this fit does not carry its model; profiles need jaxlmm.lmer's result")
    vnames = sdcor_names(model.design, model.specs)
    return vnames + list(model.design.x_names), len(vnames)


def confint_profile(fit, level: float = 0.95, which: str | Iterable[str] | None = None) -> pd.DataFrame:
    """Profile-likelihood confidence intervals (lme4's ``confint(fit)``): the values where
    ``zeta = -+ qnorm((1 + level) / 2)`` on the ML deviance profile of each parameter.

    Rows: sds and correlations of each term in theta order, ``sigma``, the fixed effects (lme4's
    names; ``which`` selects names, ``"theta_"`` or ``"beta_"``); columns ``lower``, ``upper``.
    An interval whose profile reaches a bound first (sd 0, correlation -1 or 1) ends there.
    A REML fit is profiled on the ML deviance, after an ML refit (as lme4 does).
    """
    lv = check_level(level, "level")
    names, n_vp = _parameter_names(fit)
    idx = _which(which, names, n_vp)
    pr = _profiler(fit)
    z = float(distributions.norm_ppf(0.5 + lv / 2))
    rows = []
    for k in idx:
        c = _Curve(pr, k)
        rows.append((c.end(z, -1), c.end(z, +1)))
    return pd.DataFrame(rows, index=[names[k] for k in idx], columns=["lower", "upper"])


def profile(fit, which: str | Iterable[str] | None = None, *, level_max: float = 0.99,
            n_points: int = 10) -> pd.DataFrame:
    """The likelihood profiles (lme4's ``profile(fit)``), long format for plotting.

    For each selected parameter: its ML estimate and ``n_points`` values on each side, evenly
    spaced out to where ``|zeta|`` reaches ``sqrt(qchisq(level_max, n_par))`` (lme4's cutoff, with
    ``n_par`` all variance and fixed-effect parameters) or to the parameter's bound. Columns:
    ``parameter``, ``value``, ``zeta``, ``deviance`` (the minimised ML deviance, ``zeta^2`` above
    its minimum) and the value of every parameter at that point.
    """
    lv = check_level(level_max, "level_max")
    n_points = positive_int(n_points, "n_points")
    names, n_vp = _parameter_names(fit)
    idx = _which(which, names, n_vp)
    pr = _profiler(fit)
    cutoff = float(np.sqrt(distributions.chi2_ppf(lv, len(names))))
    frames = []
    with progress(len(idx), "likelihood profiles", unit="parameter") as bar:
        for k in idx:
            frames.append(_profile_one(_Curve(pr, k), names, k, cutoff, n_points))
            bar.update(1)
    return pd.concat(frames, ignore_index=True)


def _profile_one(c: "_Curve", names: list, k: int, cutoff: float, n_points: int) -> pd.DataFrame:
    """One parameter's profile: the estimate and ``n_points`` values on each side."""
    c.centre()
    xs = [c.xhat]
    for direction in (-1, 1):
        e = c.end(cutoff, direction)
        if np.isfinite(e) and e != c.xhat:
            xs += list(c.xhat + (e - c.xhat) * np.arange(1, n_points + 1) / n_points)
    xs = sorted({float(x) for x in xs})
    for x in sorted(xs, key=lambda t: abs(t - c.xhat)):  # outward: warm starts stay close
        c.zeta(x)
    df = pd.DataFrame(np.array([c.all_parameters(x) for x in xs]), columns=names)
    df.insert(0, "deviance", [c.points[x][2] for x in xs])
    df.insert(0, "zeta", [c.points[x][0] for x in xs])
    df.insert(0, "value", xs)
    df.insert(0, "parameter", names[k])
    return df
