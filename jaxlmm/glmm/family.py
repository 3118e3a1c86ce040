"""Response distributions and link functions for generalized linear mixed models.

A :class:`Family` holds a :class:`Link` (``eta = g(mu)``, ``mu = g^{-1}(eta)``, ``dmu/deta``)
and the distribution's variance function ``V(mu)``, unit deviance and ``-2 log p(y | mu)``.
Everything is written with ``jax.numpy`` so that penalised iteratively reweighted least squares
can run inside ``jit``; every function maps arrays of shape ``(n,)`` to ``(n,)``.

Families (R's names and canonical links): ``binomial`` (``logit``; also ``probit``,
``cloglog``), ``poisson`` (``log``), ``gamma`` (``inverse``; also ``log``). A binomial response
is 0/1, or a proportion ``y`` in [0, 1] with ``weights`` = number of trials (as R's ``glm``).
"""

from __future__ import annotations

import copyreg
import dataclasses
from typing import Callable

import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln, ndtr, xlogy

from ..errors import ArgumentError, DataError

_EPS = 2.220446049250313e-16  # R's .Machine$double.eps: keeps mu inside (0, 1) / (0, inf)


@dataclasses.dataclass(frozen=True)
class Link:
    """``eta = link(mu)``, ``mu = inverse(eta)``, ``mu_eta(eta) = d mu / d eta``."""

    name: str
    link: Callable
    inverse: Callable
    mu_eta: Callable


def _logit() -> Link:
    def inverse(eta):
        return jnp.clip(1.0 / (1.0 + jnp.exp(-eta)), _EPS, 1.0 - _EPS)

    def mu_eta(eta):
        e = jnp.exp(-jnp.abs(eta))
        return jnp.maximum(e / (1.0 + e) ** 2, _EPS)

    return Link("logit", lambda mu: jnp.log(mu / (1.0 - mu)), inverse, mu_eta)


def _probit() -> Link:
    def inverse(eta):
        return jnp.clip(ndtr(eta), _EPS, 1.0 - _EPS)

    def mu_eta(eta):
        return jnp.maximum(jnp.exp(-0.5 * eta * eta) / np.sqrt(2.0 * np.pi), _EPS)

    from jax.scipy.special import ndtri

    return Link("probit", ndtri, inverse, mu_eta)


def _cloglog() -> Link:
    def inverse(eta):
        return jnp.clip(-jnp.expm1(-jnp.exp(eta)), _EPS, 1.0 - _EPS)

    def mu_eta(eta):
        eta = jnp.minimum(eta, 700.0)
        return jnp.maximum(jnp.exp(eta) * jnp.exp(-jnp.exp(eta)), _EPS)

    return Link("cloglog", lambda mu: jnp.log(-jnp.log1p(-mu)), inverse, mu_eta)


def _log() -> Link:
    return Link("log", jnp.log, lambda eta: jnp.maximum(jnp.exp(eta), _EPS),
                lambda eta: jnp.maximum(jnp.exp(eta), _EPS))


def _inverse() -> Link:
    return Link("inverse", lambda mu: 1.0 / mu, lambda eta: 1.0 / eta, lambda eta: -1.0 / (eta * eta))


LINKS: dict[str, Callable[[], Link]] = {
    "logit": _logit, "probit": _probit, "cloglog": _cloglog, "log": _log, "inverse": _inverse,
}


@dataclasses.dataclass(frozen=True)
class Family:
    """A response distribution with its link.

    ``variance(mu)``: ``Var(y) = dispersion V(mu) / w``; ``unit_deviance(y, mu)``: ``d(y, mu)``
    with deviance residuals ``sign(y - mu) sqrt(w d)``; ``neg2_loglik(y, mu, w, dispersion)``:
    ``-2 log p(y | mu)`` per row (``w`` the prior weights, binomial trials). ``scale_free``:
    the dispersion is 1 (binomial, Poisson), otherwise estimated (Gamma)."""

    name: str
    link: Link
    variance: Callable
    unit_deviance: Callable
    neg2_loglik: Callable
    scale_free: bool
    links: tuple[str, ...]

    def deviance_residuals(self, y, mu, w):
        """``sign(y - mu) sqrt(w d(y, mu))``, shape ``(n,)``."""
        return jnp.sign(y - mu) * jnp.sqrt(jnp.maximum(w * self.unit_deviance(y, mu), 0.0))

    def pearson_residuals(self, y, mu, w):
        """``(y - mu) sqrt(w / V(mu))``, shape ``(n,)``."""
        return (y - mu) * jnp.sqrt(w / self.variance(mu))

    def check_response(self, y: np.ndarray, w: np.ndarray, name: str = "response") -> None:
        """Raise :class:`DataError` (before any computation) for values outside the support."""
        _CHECKS[self.name](np.asarray(y, dtype=float), np.asarray(w, dtype=float), name)

    def __repr__(self) -> str:
        return f"Family({self.name!r}, link={self.link.name!r})"


def _binomial_dev(y, mu):
    return 2.0 * (xlogy(y, y / mu) + xlogy(1.0 - y, (1.0 - y) / (1.0 - mu)))


def _binomial_nll(y, mu, w, dispersion=1.0):
    k = jnp.round(w * y)
    return -2.0 * (gammaln(w + 1.0) - gammaln(k + 1.0) - gammaln(w - k + 1.0)
                   + xlogy(k, mu) + xlogy(w - k, 1.0 - mu))


def _poisson_dev(y, mu):
    return 2.0 * (xlogy(y, y / mu) - (y - mu))


def _poisson_nll(y, mu, w, dispersion=1.0):
    return -2.0 * w * (xlogy(y, mu) - mu - gammaln(y + 1.0))


def _gamma_dev(y, mu):
    return 2.0 * (-jnp.log(y / mu) + (y - mu) / mu)


def _gamma_nll(y, mu, w, dispersion=1.0):
    shape = w / dispersion
    return -2.0 * (shape * jnp.log(shape * y / mu) - shape * y / mu - jnp.log(y) - gammaln(shape))


def _check_binomial(y, w, name):
    bad = ~np.isfinite(y) | (y < 0) | (y > 1)
    if bad.any():
        k = int(np.nonzero(bad)[0][0])
        raise DataError(f"binomial {name} must be 0/1 or a proportion in [0, 1]; row {k} has {y[k]}")
    k = w * y
    frac = np.abs(k - np.round(k)) > 1e-7 * np.maximum(1.0, np.abs(k))
    if frac.any():
        r = int(np.nonzero(frac)[0][0])
        raise DataError(f"binomial {name} times weights (number of trials) must be whole successes; "
                        f"row {r} has {y[r]} x {w[r]}")


def _check_poisson(y, w, name):
    bad = ~np.isfinite(y) | (y < 0)
    if bad.any():
        k = int(np.nonzero(bad)[0][0])
        raise DataError(f"poisson {name} must be non-negative counts; row {k} has {y[k]}")
    frac = np.abs(y - np.round(y)) > 1e-7 * np.maximum(1.0, y)
    if frac.any():
        k = int(np.nonzero(frac)[0][0])
        raise DataError(f"poisson {name} must be whole counts; row {k} has {y[k]}")


def _check_gamma(y, w, name):
    bad = ~np.isfinite(y) | (y <= 0)
    if bad.any():
        k = int(np.nonzero(bad)[0][0])
        raise DataError(f"gamma {name} must be positive; row {k} has {y[k]}")


_CHECKS = {"binomial": _check_binomial, "poisson": _check_poisson, "gamma": _check_gamma}

_FAMILIES = {
    # name: (canonical link, allowed links, variance, unit deviance, -2 log p, scale free)
    "binomial": ("logit", ("logit", "probit", "cloglog"), lambda mu: mu * (1.0 - mu), _binomial_dev,
                 _binomial_nll, True),
    "poisson": ("log", ("log",), lambda mu: mu, _poisson_dev, _poisson_nll, True),
    "gamma": ("inverse", ("inverse", "log"), lambda mu: mu * mu, _gamma_dev, _gamma_nll, False),
}


def family(name: "str | Family", link: str | None = None) -> Family:
    """The family called ``name`` (``"binomial"``, ``"poisson"``, ``"gamma"``; case-insensitive)
    with ``link`` (default: the canonical one), or ``name`` itself if it is a Family."""
    if isinstance(name, Family):
        if link is not None and link != name.link.name:
            return family(name.name, link)
        return name
    if not isinstance(name, str):
        raise ArgumentError(f"family must be a name or a jaxlmm Family, got {type(name).__name__}")
    key = name.strip().lower()
    if key not in _FAMILIES:
        raise ArgumentError(f"unknown family {name!r}; choose from {sorted(_FAMILIES)}")
    canonical, allowed, variance, dev, nll, scale_free = _FAMILIES[key]
    link = canonical if link is None else link
    if not isinstance(link, str) or link.strip().lower() not in allowed:
        raise ArgumentError(f"unknown link {link!r} for the {key} family; choose from {list(allowed)}")
    return Family(name=key, link=LINKS[link.strip().lower()](), variance=variance, unit_deviance=dev,
                  neg2_loglik=nll, scale_free=scale_free, links=allowed)


def binomial(link: str = "logit") -> Family:
    """Binomial responses (0/1, or proportions with weights = trials); links logit, probit, cloglog."""
    return family("binomial", link)


def poisson(link: str = "log") -> Family:
    """Poisson counts with the log link."""
    return family("poisson", link)


def gamma(link: str = "inverse") -> Family:
    """Gamma responses (positive); links inverse (canonical) and log."""
    return family("gamma", link)


# --- families: closures for links, pickled by name ----------------------------------------------


def _same_function(a, b) -> bool:
    return a is b or (getattr(a, "__code__", None) is not None and getattr(a, "__code__", None)
                      is getattr(b, "__code__", None))


def _reduce_family(fam):
    """Pickle a built-in family as ``family(name, link)``; any other family by its fields."""
    try:
        ref = family(fam.name, fam.link.name)
    except Exception:  # noqa: BLE001 - not a built-in family: pickled field by field
        ref = None
    names = ("variance", "unit_deviance", "neg2_loglik")
    links = ("link", "inverse", "mu_eta")
    if (ref is not None and ref.scale_free == fam.scale_free and ref.links == fam.links
            and all(_same_function(getattr(fam, n), getattr(ref, n)) for n in names)
            and all(_same_function(getattr(fam.link, n), getattr(ref.link, n)) for n in links)):
        return family, (fam.name, fam.link.name)
    return object.__reduce_ex__(fam, 4)


def _register() -> None:
    copyreg.pickle(Family, _reduce_family)


_register()
