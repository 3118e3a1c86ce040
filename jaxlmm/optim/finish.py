"""What happens after the optimiser stops, written once for every model family: the status
messages, the convergence rule, the boundary snap, and the check that the point is a minimum.

- **Convergence**: status 0 (``max|g| <= gtol``), or a search stopped by the objective-change or
  rounding rule (status 1 or 3) with ``max|g| <= CONVERGED_GRAD sqrt(max(1, |f|))`` off the
  boundary (the gradient's rounding noise grows with the objective's size: about 3e-3 for
  InstEval's 2.4e5); and a finite objective, a finite gradient, and no direction of negative
  curvature (a saddle) at the end.
- **Boundary snap**: diagonal template entries below ``SINGULAR_TOL`` (lme4's ``isSingular``
  tolerance) are set to exactly zero when that is no worse (``1e-9`` relative).
- **Minimum check**: the Hessian by one-sided differences of the exact gradient at the optimum
  (``d`` evaluations in the optimiser's own compiled loop); a clearly negative eigenvalue on the
  free coordinates, or coordinates that never moved from a start where their gradient is exactly
  zero (a stationary start, e.g. an even function at 0), are probed along that direction; a
  lower point found there restarts the optimiser (:func:`escape_points`).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

SINGULAR_TOL = 1e-4  # lme4's isSingular tolerance on the diagonal of the templates
GTOL = 1e-6
CONVERGED_GRAD = 1e-3
SNAP_RTOL = 1e-9
MAX_RESTARTS = 2

MESSAGES = {
    0: "gradient tolerance reached",
    1: "no further decrease possible (rounding level)",
    2: "iteration limit reached",
    3: "relative change of the objective below tolerance",
    4: "the objective is not finite at the starting values",
}


def message(status: int) -> str:
    return MESSAGES.get(int(status), "unknown")


def converged(status, gmax, f):
    """The convergence rule (module docstring); numpy-vectorised over fits."""
    status, gmax, f = np.asarray(status), np.asarray(gmax, dtype=float), np.asarray(f, dtype=float)
    ok = (status == 0) | (np.isin(status, (1, 3)) & (gmax <= CONVERGED_GRAD * np.sqrt(np.maximum(1.0, np.abs(f)))))
    return ok & np.isfinite(f) & np.isfinite(gmax)


def fd_step(x):
    """Step of the differences of the gradient: ``1e-4 (1 + |x_i|)`` (numpy or jax)."""
    return 1e-4 * (1.0 + abs(x))


def snap_points(x, diag_mask):
    """``x`` with the diagonal template entries below ``SINGULAR_TOL`` set to zero (numpy or jax)."""
    return x * ~(diag_mask & (abs(x) < SINGULAR_TOL))


def snap_ok(f_snap: float, f: float) -> bool:
    """Whether the snapped point is no worse than the optimum."""
    return bool(np.isfinite(f_snap) and f_snap <= f + SNAP_RTOL * (1.0 + abs(f)))


def forward_hessian(g_points: np.ndarray, g: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Symmetrised one-sided differences of exact gradients: rows ``g_points[i]`` at ``x + h_i e_i``."""
    H = (np.asarray(g_points) - np.asarray(g)[None, :]) / np.asarray(h)[:, None]
    return 0.5 * (H + H.T)


def central_points(x, diag_mask, snap_tol):
    """The ``2d + 1`` points ``x_s, x_s + h_i e_i, x_s - h_i e_i`` (``h = fd_step(x_s)``) around
    ``x_s``: ``x`` with the diagonal template entries below ``snap_tol`` in size set to zero (the
    boundary). Traced (jax) inside an optimiser's loop; :func:`central_hessian` reads them."""
    xs = jnp.where(diag_mask & (jnp.abs(x) < snap_tol), 0.0, x)
    E = jnp.diag(fd_step(xs))
    return jnp.concatenate([xs[None], xs[None] + E, xs[None] - E])


def central_hessian(g: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Central differences of exact gradients ``g (2d, d)`` at ``x + h_i e_i`` then
    ``x - h_i e_i``, symmetrised: error ``O(h^2)``, about 1e-8 relative."""
    d = h.shape[0]
    H = (g[:d] - g[d:]) / (2.0 * h[:, None])
    return 0.5 * (H + H.T)


def min_eigen(H: np.ndarray, free: np.ndarray) -> tuple[float, np.ndarray | None]:
    """The smallest eigenvalue of ``H`` on the ``free`` coordinates and its eigenvector (zeros on
    the others); ``(inf, None)`` without free coordinates or with a non-finite ``H``."""
    idx = np.nonzero(free)[0]
    if not idx.size:
        return np.inf, None
    Hf = H[np.ix_(idx, idx)]
    if not np.all(np.isfinite(Hf)):
        return np.nan, None
    w, V = np.linalg.eigh(Hf)
    v = np.zeros(H.shape[0])
    v[idx] = V[:, 0]
    return float(w[0]), v


def negative_curvature(lam: float, H: np.ndarray, free: np.ndarray) -> bool:
    """A clearly negative eigenvalue: below ``-1e-4`` times the largest curvature (and 1e-6)."""
    if not np.isfinite(lam):
        return False
    idx = np.nonzero(free)[0]
    scale = float(np.max(np.abs(np.diag(H)[idx]))) if idx.size else 1.0
    return lam < -max(1e-6, 1e-4 * scale)


def escape_points(x: np.ndarray, x0: np.ndarray, g: np.ndarray, H: np.ndarray, free: np.ndarray) -> np.ndarray:
    """Points to probe when the end ``x`` may not be a minimum: along the eigenvector of a clearly
    negative curvature of ``H``, and along each coordinate that never moved from the start ``x0``
    and has an exactly zero gradient ``g`` (a stationary start). Returns ``(k, d)``, possibly
    empty."""
    pts = []
    lam, v = min_eigen(H, free)
    if v is not None and negative_curvature(lam, H, free):
        for a in (0.5, 0.1, 0.02):
            step = a * max(1.0, float(np.max(np.abs(x))))
            pts += [x + step * v, x - step * v]
    stuck = (x == x0) & (g == 0.0)
    for i in np.nonzero(stuck)[0]:
        for a in (0.5, 0.1):
            e = np.zeros_like(x)
            e[i] = a * max(1.0, abs(float(x[i])))
            pts += [x + e, x - e]
    return np.array(pts).reshape(len(pts), x.shape[0])


def better(f_probe: float, f: float) -> bool:
    """A probe lower than the optimum beyond rounding."""
    return bool(np.isfinite(f_probe) and f_probe < f - 1e-10 * (1.0 + abs(f)))


def lower_start(x: np.ndarray, x0: np.ndarray, g: np.ndarray, H: np.ndarray, free: np.ndarray,
                f: float, value) -> tuple[np.ndarray | None, int]:
    """The lowest of :func:`escape_points` by ``value(point) -> float``, when it is lower than
    the end's ``f`` beyond rounding (a start to search again from), else None; and the number of
    evaluations made."""
    pts = escape_points(x, x0, g, H, free)
    vals = [value(p) for p in pts]
    if vals:
        best = int(np.argmin(vals))
        if better(vals[best], f):
            return pts[best], len(vals)
    return None, len(vals)


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
