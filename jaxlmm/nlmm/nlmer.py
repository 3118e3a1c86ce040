"""``nlmer``: nonlinear mixed models (model string or callable -> design -> arrays -> Laplace /
AGQ optimisation or Lindstrom-Bates iterations -> :class:`NlmerResult`): the front door, with
every argument checked before any computation."""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import ArgumentError, DataError
from ..lmm.model import LmerModel
from ..precision import float64
from . import fit as nfit
from .build import arrays_of, fit_arrays, start_x
from .design import MeanFunction, NlmmDesign, build_nlmm_design, mean_function
from .result import NlmerResult
from .selfstart import SelfStart
from .system import NlmmArrays, fixed_phi, mean_jacobian

MAX_AGQ = 25


def _check_start(start: Any) -> dict:
    if not isinstance(start, dict) or not start:
        raise ArgumentError("start must be a dict of fixed-effect starting values by parameter name, such as "
                            "{'Asym': 170, 'xmid': 700, 'scal': 350}")
    out = {}
    for k, v in start.items():
        if not isinstance(k, str) or not k.isidentifier():
            raise ArgumentError(f"start key {k!r} is not a parameter name")
        try:
            a = np.atleast_1d(np.asarray(v, dtype=np.float64)).ravel()
        except (TypeError, ValueError):
            raise ArgumentError(f"start[{k!r}] must be a number (or a list of numbers for a parameter with a "
                                f"fixed-effects formula), got {v!r}") from None
        if isinstance(v, bool) or a.size == 0 or not np.all(np.isfinite(a)):
            raise ArgumentError(f"start[{k!r}] must be finite numbers, got {v!r}")
        out[k] = a
    return out


def _start_beta(design: NlmmDesign, start: dict) -> np.ndarray:
    missing = [p for p in design.params if p not in start]
    if missing:
        raise ArgumentError(f"start has no value for the parameter {missing[0]!r} of the model")
    extra = [k for k in start if k not in design.params]
    if extra:
        raise ArgumentError(f"start names {extra[0]!r}, which is not a parameter of the model "
                            f"({', '.join(design.params)})")
    beta = []
    for p, A, names in zip(design.params, design.A, design.a_names):
        v = start[p]
        if v.size == A.shape[1]:
            beta.extend(v)
        elif v.size == 1:  # the intercept; the other coefficients start at zero
            beta.extend([float(v[0])] + [0.0] * (A.shape[1] - 1))
        else:
            raise ArgumentError(f"start[{p!r}] has {v.size} values; the parameter has {A.shape[1]} coefficients "
                                f"({', '.join(names)})")
    return np.asarray(beta)


def _nested(codes_a: np.ndarray, codes_b: np.ndarray) -> bool:
    """Whether every level of ``b`` lies within one level of ``a``."""
    pairs = np.unique(np.stack([codes_b, codes_a], axis=1), axis=0)
    return len(pairs) == len(np.unique(codes_b))


def _check_method(method: Any, nagq: Any, reml: Any, design: NlmmDesign) -> tuple[str, int]:
    if method not in ("laplace", "agq", "lb"):
        raise ArgumentError(f"method must be 'laplace', 'agq' or 'lb', got {method!r}")
    if isinstance(nagq, bool) or not isinstance(nagq, (int, np.integer)) or not 1 <= int(nagq) <= MAX_AGQ:
        raise ArgumentError(f"nagq must be an integer from 1 to {MAX_AGQ}, got {nagq!r}")
    nagq = int(nagq)
    if not isinstance(reml, bool):
        raise ArgumentError(f"reml must be True or False, got {reml!r}")
    if reml and method != "lb":
        raise ArgumentError(f"reml=True is for method='lb' (nlme's REML); method={method!r} maximises the likelihood")
    if (design.correlation is not None or design.variance is not None) and method != "lb":
        what = " and ".join(n for n, v in (("correlation", design.correlation), ("variance", design.variance))
                            if v is not None)
        raise ArgumentError(f"a residual {what} structure is fitted by method='lb' (nlme's, with correlation= and "
                            f"weights=); method={method!r} takes independent residuals")
    if design.correlation is not None or design.variance is not None:
        # the structures' own checks (groups nested in every grouping factor, times, strata),
        # before any computation
        LmerModel.from_design(design.lmm, design.correlation, design.variance, moment_start=False)
    terms = design.lmm.terms
    if method == "agq" and nagq == 1:
        method = "laplace"
    if method == "laplace" and nagq > 1:
        method = "agq"
    if method == "agq" and (len(terms) != 1 or terms[0].width != 1):
        raise ArgumentError(f"nagq={nagq} (adaptive Gauss-Hermite) needs one random effect per group, a single "
                            "term such as '(Asym | Tree)'; this model has "
                            + ", ".join(f"{t.width} in ({' + '.join(t.column_names)} | {t.name})" for t in terms)
                            + ": use method='laplace'")
    if method == "lb":
        for i in range(len(terms)):
            for j in range(i):
                a, b = terms[i].codes, terms[j].codes
                if not (_nested(a, b) or _nested(b, a)):
                    raise ArgumentError(f"method='lb' (nlme) takes nested grouping only, and {terms[j].name!r} and "
                                        f"{terms[i].name!r} are crossed; use method='laplace'")
    return method, nagq


@jax.jit
def _start_check(beta, G: NlmmArrays):
    phi = fixed_phi(beta, G)
    f, J = mean_jacobian(phi, G)
    return phi, f, J


def _check_model_at(design: NlmmDesign, G: NlmmArrays, beta: np.ndarray) -> None:
    """The mean must be one finite value per row, with finite derivatives, at the start."""
    with float64():
        try:
            phi, f, J = _start_check(jnp.asarray(beta), G)
        except ArgumentError:
            raise
        except Exception as e:  # noqa: BLE001 - the user's function failed: say so, as ours
            raise ArgumentError(f"the model function failed at the start values: {type(e).__name__}: {e}") from None
        phi, f, J = np.asarray(phi), np.asarray(f), np.asarray(J)
    rows = design.lmm.row_index

    def at(r):
        vals = ", ".join(f"{p}={phi[r, k]:.6g}" for k, p in enumerate(design.params))
        cols = ", ".join(f"{c}={design.data[c][r]:.6g}" for c in design.mean.columns if c in design.data)
        return vals + (f"; {cols}" if cols else "")

    bad = ~np.isfinite(f)
    if bad.any():
        r = int(np.nonzero(bad)[0][0])
        raise DataError(f"the model's mean is {f[r]} at row {rows[r]!r} at the start values ({at(r)}): give other "
                        "start values or rewrite the model")
    badj = ~np.isfinite(J)
    if badj.any():
        r, k = (int(v[0]) for v in np.nonzero(badj))
        raise DataError(f"the derivative of the model's mean with respect to {design.params[k]!r} is not finite at "
                        f"row {rows[r]!r} at the start values ({at(r)})")


def _check_rowwise(design: NlmmDesign, G: NlmmArrays, beta: np.ndarray) -> None:
    """A callable mean must be row-wise: row ``r``'s value depends on row ``r``'s parameters only
    (checked on the Jacobian of the first rows)."""
    m = min(design.n, 12)
    with float64():
        phi = np.asarray(fixed_phi(jnp.asarray(beta), G))
        data = {c: jnp.asarray(v[:m]) for c, v in design.data.items()}

        def f(p):
            return jnp.broadcast_to(design.mean({n: p[:, k] for k, n in enumerate(design.params)}, data), (m,))

        try:
            Jf = np.asarray(jax.jacfwd(f)(jnp.asarray(phi[:m])))  # (m, m, P)
        except Exception as e:  # noqa: BLE001
            raise ArgumentError(f"the model function failed at the start values: {type(e).__name__}: {e}") from None
    off = Jf * (1.0 - np.eye(m))[:, :, None]
    if np.any(np.abs(off) > 0):
        raise ArgumentError("the model function is not row-wise: its value at one row depends on the parameters of "
                            "another; write f(params, data) with element-wise operations")


def check_max_iter(max_iter) -> int:
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise ArgumentError(f"max_iter must be a positive integer, got {max_iter!r}")
    return int(max_iter)


def model_and_start(model: Any, start: Any) -> tuple[MeanFunction, tuple, SelfStart | None, dict | None]:
    """The mean function, the parameter names given, the self-starting model (if ``model`` is
    one) and the checked start (``None`` when a self-starting model will supply it from the
    data)."""
    self_start = model if isinstance(model, SelfStart) else None
    if self_start is not None:
        model = self_start.text
    if self_start is None or start is not None:
        start = _check_start(start)
        names = tuple(start)
    else:
        names = self_start.params
    return mean_function(model, names), names, self_start, start


def fixed_start(design: NlmmDesign, self_start: SelfStart | None, start: dict | None, method: Any, nagq: Any,
                reml: Any) -> tuple[str, int, np.ndarray, NlmmArrays]:
    """The method and ``nagq`` checked against the design, the fixed-effect start ``beta0`` (from
    the self-starting model on the design's response when ``start`` is None) and the device
    arrays, with the model checked finite and row-wise at ``beta0``."""
    if start is None:
        start = _check_start(self_start.start(design.lmm.y, design.data))
    method, nagq = _check_method(method, nagq, reml, design)
    beta0 = _start_beta(design, start)
    G = arrays_of(design, method, nagq)
    if design.mean.function is not None:
        _check_rowwise(design, G, beta0)
    _check_model_at(design, G, beta0)
    return method, nagq, beta0, G


def nlmer(model: Any, data: Any, start: dict | None = None, random: str | None = None, *, fixed: dict | None = None,
          method: str = "laplace", nagq: int = 1, reml: bool = False, correlation=None, variance=None, weights=None,
          max_iter: int = 1000) -> NlmerResult:
    """Fit a nonlinear mixed model ``y = f(phi) + e``, ``phi = A beta + B b`` per row.

    ``model``: ``"response ~ expression"`` of parameters and columns (:mod:`jaxlmm.nlmm.expression`)
    or ``(response, f)`` with a JAX callable ``f(params, data) -> mean``, row-wise, or a
    self-starting model of :mod:`jaxlmm.nonlinear` (``jaxlmm.nonlinear.logistic("y", "age")``).
    ``start``: fixed-effect starting values by parameter (a list for a parameter with a
    ``fixed`` formula, in its coefficient order); optional for a self-starting model. ``random``: lme4 bars over
    parameter names, ``"(Asym | Tree)"``, ``"(lKa + lCl || Subject)"``, nested ``"(Asym | Block/Plot)"``, crossed
    terms. ``fixed``: ``{"Asym": "Type * Treatment"}``, a parameter's own fixed-effects formula.
    ``method``: ``"laplace"`` (lme4's nlmer), ``"agq"`` with ``nagq`` nodes (one random effect
    per group), ``"lb"`` (nlme's Lindstrom-Bates; ``reml`` as nlme's ``method = "REML"``).
    ``weights``: prior weights (residual variance ``sigma^2 / w``). ``correlation``, ``variance``:
    residual structures within groups nested in every grouping factor, as for :func:`jaxlmm.lmer`
    (``jaxlmm.AR1("Tree", "occasion")``, ``jaxlmm.VarPower("conc")``; nlme's ``correlation=`` and
    ``weights=``), with ``method="lb"``.
    """
    t0 = time.perf_counter()
    max_iter = check_max_iter(max_iter)
    mean, names, self_start, start = model_and_start(model, start)
    design = build_nlmm_design(mean, data, names, random, fixed, weights, correlation=correlation, variance=variance)
    method, nagq, beta0, G = fixed_start(design, self_start, start, method, nagq, reml)
    beta_nls, rss, nls_ok = nfit.nls_start(G, beta0)
    if not (nls_ok and np.all(np.isfinite(beta_nls)) and np.isfinite(rss) and rss > 0):
        beta_nls = beta0
        with float64():
            r = np.asarray(G.y) - np.asarray(_start_check(jnp.asarray(beta0), G)[1])
        rss = float(np.sum(np.asarray(G.w) * r * r))
    return fit_arrays(design, G, method, nagq, reml, start_x(design, beta_nls, rss), max_iter, NlmerResult, t0,
                      stacklevel=3)
