"""Self-starting nonlinear models (R's ``SSlogis``, ``SSasymp``, ``SSasympOff``, ``SSfol``,
``SSbiexp``, ``SSmicmen``): each a :class:`SelfStart`, the model string with R's parameter names
and a rule for starting values from the data, so that ``nlmer`` needs no ``start``. The rules
use the pooled data (random effects ignored), and the fit refines them by nonlinear least
squares before the mixed model is fitted (:func:`jaxlmm.nlmm.fit.nls_start`).

``jaxlmm.nonlinear.logistic("circumference", "age")`` and so on; the columns are named by the
call. Formulas (``x`` the covariate):

- ``logistic``: ``Asym / (1 + exp((xmid - x) / scal))``
- ``asymptotic``: ``Asym + (R0 - Asym) exp(-exp(lrc) x)``
- ``asymptotic_offset``: ``Asym (1 - exp(-exp(lrc) (x - c0)))``
- ``first_order_absorption``: ``Dose exp(lKe + lKa - lCl) (exp(-exp(lKe) t) - exp(-exp(lKa) t)) / (exp(lKa) - exp(lKe))``
- ``biexponential``: ``A1 exp(-exp(lrc1) x) + A2 exp(-exp(lrc2) x)``
- ``michaelis_menten``: ``Vm x / (K + x)``
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from ..errors import ArgumentError, DataError


@dataclasses.dataclass(frozen=True)
class SelfStart:
    """A model string, its parameters and a starting-value rule ``initial(y, columns) -> dict``."""

    name: str
    text: str
    params: tuple[str, ...]
    columns: tuple[str, ...]
    initial: Callable = dataclasses.field(repr=False, compare=False)

    def start(self, y: np.ndarray, data: dict) -> dict:
        """Starting values from the response and the model's columns (rows used)."""
        y = np.asarray(y, dtype=np.float64)
        if y.size < len(self.params):
            raise DataError(f"{self.name} needs at least {len(self.params)} rows to find starting values")
        out = self.initial(y, *(np.asarray(data[c], dtype=np.float64) for c in self.columns))
        bad = [k for k, v in out.items() if not np.isfinite(v)]
        if bad:
            raise DataError(f"{self.name} found no starting value for {bad[0]!r} from these data; give start=...")
        return {k: float(out[k]) for k in self.params}


def _name(v, what: str) -> str:
    if not isinstance(v, str) or not v.isidentifier():
        raise ArgumentError(f"{what} must be a column name, got {v!r}")
    return v


def _line(x, y):
    """Least-squares intercept and slope of ``y`` on ``x`` (slope 0 for a constant ``x``)."""
    xm, ym = np.mean(x), np.mean(y)
    sxx = np.sum((x - xm) ** 2)
    b = np.sum((x - xm) * (y - ym)) / sxx if sxx > 0 else 0.0
    return ym - b * xm, b


def _logistic_start(y, x):
    asym = 1.05 * np.max(y) if np.max(y) > 0 else np.max(np.abs(y)) + 1.0
    p = np.clip(y / asym, 0.02, 0.98)
    a, b = _line(x, np.log(p / (1 - p)))
    if abs(b) < 1e-12:
        b = 1.0 / (np.std(x) + 1e-12)
    return {"Asym": asym, "xmid": -a / b, "scal": 1.0 / b}


def _asymp_start(y, x):
    rng = np.ptp(y) + 1e-12
    up = np.corrcoef(x, y)[0, 1] >= 0 if np.ptp(x) > 0 and np.ptp(y) > 0 else True
    asym = np.max(y) + 0.05 * rng if up else np.min(y) - 0.05 * rng
    a, s = _line(x, np.log(np.abs(asym - y)))
    k = -s if s < 0 else 1.0 / (np.ptp(x) + 1e-12)
    r0 = asym - (1.0 if up else -1.0) * np.exp(a)
    return {"Asym": asym, "R0": r0, "lrc": np.log(k)}


def _asymp_off_start(y, x):
    s = _asymp_start(y, x)
    ratio = np.clip(s["R0"] / s["Asym"], -10.0, 0.99)
    return {"Asym": s["Asym"], "lrc": s["lrc"], "c0": np.log(1.0 - ratio) / np.exp(s["lrc"])}


def _micmen_start(y, x):
    keep = (x > 0) & (y > 0)
    if keep.sum() >= 2:
        vm, slope = _line(y[keep] / x[keep], y[keep])
        if vm > 0 and slope < 0:
            return {"Vm": vm, "K": -slope}
    return {"Vm": np.max(y), "K": np.median(x[x > 0]) if np.any(x > 0) else 1.0}


def _fol_shape(t, ke, ka):
    return ke * ka / (ka - ke) * (np.exp(-ke * t) - np.exp(-ka * t))


def _fol_start(conc, dose, time):
    pos = conc > 0
    late = pos & (time >= np.median(time[pos]))
    _, s = _line(time[late], np.log(conc[late]))
    ke = -s if s < 0 else np.log(2) / (np.median(time) + 1e-12)
    # ka from the time of the peak of the pooled curve: t_max = log(ka / ke) / (ka - ke)
    tmax = time[np.argmax(conc)]
    lo, hi = ke * (1 + 1e-6), ke * 1e4
    for _ in range(200):
        mid = np.sqrt(lo * hi)
        if np.log(mid / ke) / (mid - ke) > tmax:
            lo = mid
        else:
            hi = mid
    ka = np.sqrt(lo * hi)
    g = dose * _fol_shape(time, ke, ka)
    inv_cl = np.sum(g * conc) / np.sum(g * g)
    return {"lKe": np.log(ke), "lKa": np.log(ka), "lCl": -np.log(inv_cl) if inv_cl > 0 else 0.0}


def _biexp_start(y, x):
    order = np.argsort(x)
    x, y = x[order], y[order]
    half = x >= np.median(x)
    late = half & (y > 0)
    a2, s2 = _line(x[late], np.log(y[late]))
    k2 = -s2 if s2 < 0 else 1.0 / (np.ptp(x) + 1e-12)
    r = y - np.exp(a2) * np.exp(-k2 * x)
    early = ~half & (r > 0)
    if early.sum() >= 2:
        a1, s1 = _line(x[early], np.log(r[early]))
        k1 = -s1 if -s1 > k2 else 3.0 * k2
    else:
        a1, k1 = a2, 3.0 * k2
    return {"A1": np.exp(a1), "lrc1": np.log(k1), "A2": np.exp(a2), "lrc2": np.log(k2)}


def logistic(response: str, x: str) -> SelfStart:
    """``Asym / (1 + exp((xmid - x) / scal))`` (R's ``SSlogis``)."""
    r, x = _name(response, "response"), _name(x, "x")
    return SelfStart("logistic", f"{r} ~ Asym / (1 + exp((xmid - {x}) / scal))", ("Asym", "xmid", "scal"), (x,),
                     _logistic_start)


def asymptotic(response: str, x: str) -> SelfStart:
    """``Asym + (R0 - Asym) exp(-exp(lrc) x)`` (R's ``SSasymp``)."""
    r, x = _name(response, "response"), _name(x, "x")
    return SelfStart("asymptotic", f"{r} ~ Asym + (R0 - Asym) * exp(-exp(lrc) * {x})", ("Asym", "R0", "lrc"), (x,),
                     _asymp_start)


def asymptotic_offset(response: str, x: str) -> SelfStart:
    """``Asym (1 - exp(-exp(lrc) (x - c0)))`` (R's ``SSasympOff``)."""
    r, x = _name(response, "response"), _name(x, "x")
    return SelfStart("asymptotic_offset", f"{r} ~ Asym * (1 - exp(-exp(lrc) * ({x} - c0)))", ("Asym", "lrc", "c0"),
                     (x,), _asymp_off_start)


def first_order_absorption(response: str, dose: str, time: str) -> SelfStart:
    """One compartment, first-order absorption and elimination (R's ``SSfol``): parameters
    ``lKe, lKa, lCl`` (logs of the elimination and absorption rates and of the clearance)."""
    r, d, t = _name(response, "response"), _name(dose, "dose"), _name(time, "time")
    text = (f"{r} ~ {d} * exp(lKe + lKa - lCl) * (exp(-exp(lKe) * {t}) - exp(-exp(lKa) * {t})) / "
            "(exp(lKa) - exp(lKe))")
    return SelfStart("first_order_absorption", text, ("lKe", "lKa", "lCl"), (d, t), _fol_start)


def biexponential(response: str, x: str) -> SelfStart:
    """``A1 exp(-exp(lrc1) x) + A2 exp(-exp(lrc2) x)`` (R's ``SSbiexp``; ``lrc1 > lrc2``)."""
    r, x = _name(response, "response"), _name(x, "x")
    return SelfStart("biexponential", f"{r} ~ A1 * exp(-exp(lrc1) * {x}) + A2 * exp(-exp(lrc2) * {x})",
                     ("A1", "lrc1", "A2", "lrc2"), (x,), _biexp_start)


def michaelis_menten(response: str, x: str) -> SelfStart:
    """``Vm x / (K + x)`` (R's ``SSmicmen``)."""
    r, x = _name(response, "response"), _name(x, "x")
    return SelfStart("michaelis_menten", f"{r} ~ Vm * {x} / (K + {x})", ("Vm", "K"), (x,), _micmen_start)


__all__ = ["SelfStart", "logistic", "asymptotic", "asymptotic_offset", "first_order_absorption", "biexponential",
           "michaelis_menten"]
