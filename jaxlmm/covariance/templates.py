"""Relative covariance factors: theta <-> lower-triangular templates ``T_i`` (lme4's order).

Term ``i`` with ``p_i`` columns has ``Var(b_i) = sigma^2 T_i T_i'``. theta lists, term by term,
the column-major lower triangle of ``T_i`` (only its diagonal for an uncorrelated ``||`` term).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
from ..errors import ArgumentError


@dataclasses.dataclass(frozen=True)
class TemplateSpec:
    """Where each theta entry sits in a ``p x p`` template."""

    p: int
    rows: tuple[int, ...]
    cols: tuple[int, ...]

    @property
    def size(self) -> int:
        return len(self.rows)

    @property
    def diagonal(self) -> tuple[bool, ...]:
        return tuple(r == c for r, c in zip(self.rows, self.cols))


def template_spec(p: int, uncorrelated: bool) -> TemplateSpec:
    if uncorrelated:
        idx = [(k, k) for k in range(p)]
    else:
        idx = [(r, c) for c in range(p) for r in range(c, p)]
    return TemplateSpec(p=p, rows=tuple(r for r, _ in idx), cols=tuple(c for _, c in idx))


def theta_start(specs: tuple[TemplateSpec, ...]) -> np.ndarray:
    """lme4's start: identity templates."""
    return diagonal_mask(specs).astype(np.float64)


def templates(theta, specs: tuple[TemplateSpec, ...]) -> list:
    """``[T_1, ..., T_k]`` from theta (works on jax arrays inside jit)."""
    out, k = [], 0
    for s in specs:
        T = jnp.zeros((s.p, s.p), dtype=theta.dtype)
        T = T.at[np.array(s.rows), np.array(s.cols)].set(theta[k : k + s.size])
        out.append(T)
        k += s.size
    return out


def templates_np(theta: np.ndarray, specs) -> list[np.ndarray]:
    out, k = [], 0
    for s in specs:
        T = np.zeros((s.p, s.p))
        T[np.array(s.rows), np.array(s.cols)] = theta[k : k + s.size]
        out.append(T)
        k += s.size
    return out


def rectify(theta: np.ndarray, specs) -> tuple[np.ndarray, np.ndarray]:
    """Flip the sign of template columns with a negative diagonal (``T T'`` is unchanged).

    Returns the rectified theta and the sign (+1/-1) applied to each entry.
    """
    theta = np.array(theta, dtype=np.float64)
    sign = np.ones_like(theta)
    k = 0
    for s in specs:
        for c in range(s.p):
            sel = [k + a for a in range(s.size) if s.cols[a] == c]
            d = [k + a for a in range(s.size) if s.cols[a] == c and s.rows[a] == c][0]
            if theta[d] < 0:
                theta[sel] = -theta[sel]
                sign[sel] = -1.0
        k += s.size
    return theta, sign


def diagonal_mask(specs) -> np.ndarray:
    return np.concatenate([np.array(s.diagonal, dtype=bool) for s in specs] + [np.zeros(0, bool)])


def theta_names(terms) -> list[str]:
    """lme4-style names of theta entries of random-effects ``terms`` (each with ``name``,
    ``width``, ``uncorrelated``, ``column_names``): ``g.x`` on the diagonal, ``g.x.z`` below."""
    names = []
    for t in terms:
        spec = template_spec(t.width, t.uncorrelated)
        for r, c in zip(spec.rows, spec.cols):
            cn = t.column_names
            names.append(f"{t.name}.{cn[r]}" if r == c else f"{t.name}.{cn[r]}.{cn[c]}")
    return names


def check_theta(values, specs, names, what: str = "start") -> np.ndarray:
    """A starting theta given by the user, validated before any computation: numbers, one per
    theta parameter (lme4's order, ``names``), finite, and inside the parameter space (diagonal
    template entries, ratios of standard deviations, are >= 0 as lme4's lower bounds say)."""
    try:
        theta = np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise ArgumentError(f"{what} must be numbers (theta in lme4's order), got {values!r}") from None
    k = sum(s.size for s in specs)
    if theta.shape[0] != k:
        raise ArgumentError(f"{what} has {theta.shape[0]} values; this model has {k} theta parameters "
                            f"({', '.join(names)})")
    bad = ~np.isfinite(theta)
    if bad.any():
        j = int(np.nonzero(bad)[0][0])
        raise ArgumentError(f"{what}[{j}] ({names[j]}) is {theta[j]}: start values must be finite")
    neg = diagonal_mask(specs) & (theta < 0)
    if neg.any():
        j = int(np.nonzero(neg)[0][0])
        raise ArgumentError(f"{what}[{j}] ({names[j]}) is {theta[j]:g}: a diagonal template entry (a ratio of "
                            "standard deviations) must be >= 0")
    return theta
