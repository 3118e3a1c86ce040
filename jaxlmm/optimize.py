"""A BFGS minimizer that runs entirely inside JAX (``lax.while_loop``): jit- and vmap-compatible.

Search direction ``d = -H g`` with the inverse-Hessian approximation ``H`` (scaled identity to
start, BFGS updates when the curvature condition ``s'y > 0`` holds), backtracking line search
(quadratic interpolation) with the Armijo condition. Gradients are exact (``jax.value_and_grad``).

Stops with ``status`` 0 when ``max|g| <= gtol``; 1 when no decrease beyond rounding
(``1e-14`` relative) is possible any more; 3 when the decrease per iteration falls below
``ftol * |f|`` after a full quasi-Newton step (or twice in a row), or when the predicted
remaining decrease ``g' H g / 2`` does; 2 at ``max_iter``. ``nfev`` counts value-and-gradient evaluations.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax


class BFGSResult(NamedTuple):
    x: jnp.ndarray
    fun: jnp.ndarray
    grad: jnp.ndarray
    n_iter: jnp.ndarray
    nfev: jnp.ndarray
    status: jnp.ndarray


class _State(NamedTuple):
    x: jnp.ndarray
    f: jnp.ndarray
    g: jnp.ndarray
    H: jnp.ndarray
    k: jnp.ndarray
    nfev: jnp.ndarray
    small: jnp.ndarray  # last iteration's decrease was below ftol
    status: jnp.ndarray  # -1 running


def minimize_bfgs(
    fun: Callable,
    x0: jnp.ndarray,
    *args,
    gtol: float = 1e-6,
    ftol: float = 1e-13,
    max_iter: int = 1000,
    max_backtrack: int = 60,
) -> BFGSResult:
    """Minimize ``fun(x, *args)`` from ``x0`` (see module docstring)."""
    vg = jax.value_and_grad(fun)
    dtype = x0.dtype
    nx = x0.shape[0]
    eye = jnp.eye(nx, dtype=dtype)
    f0, g0 = vg(x0, *args)
    gmax0 = jnp.max(jnp.abs(g0))
    # first step of length 0.1 * max(1, |x0|) along -g; BFGS rescales H after the first step
    H0 = eye * (0.1 * jnp.maximum(1.0, jnp.linalg.norm(x0)) / jnp.maximum(jnp.linalg.norm(g0), 1e-300))
    init = _State(x0, f0, g0, H0, jnp.asarray(0), jnp.asarray(1), jnp.asarray(False),
                  jnp.where(gmax0 <= gtol, 0, -1))

    def cond(s: _State):
        return s.status < 0

    def body(s: _State):
        d = -s.H @ s.g
        slope = jnp.dot(s.g, d)
        bad = ~(slope < 0)
        d = jnp.where(bad, -s.g / jnp.maximum(1.0, jnp.linalg.norm(s.g)), d)
        slope = jnp.dot(s.g, d)

        def ls_cond(c):
            t, fn, gn, j, ok = c
            # give up once the predicted decrease of the next trial is at rounding level
            visible = 0.5 * t * (-slope) > 1e-15 * jnp.abs(s.f)
            return (~ok) & (j < max_backtrack) & ((j == 0) | visible)

        def ls_body(c):
            t, fn_prev, _, j, _ = c
            # backtrack by minimising the quadratic through f(0), f'(0) and f(t), kept in
            # [t/10, t/2]; a non-finite trial value just shrinks by 10
            t_quad = -slope * t * t / (2.0 * (fn_prev - s.f - slope * t))
            t_new = jnp.where(jnp.isfinite(fn_prev) & (t_quad > 0), jnp.clip(t_quad, 0.1 * t, 0.5 * t), 0.1 * t)
            t = jnp.where(j == 0, t, t_new)
            fn, gn = vg(s.x + t * d, *args)
            ok = jnp.isfinite(fn) & (fn <= s.f + 1e-4 * t * slope) & jnp.all(jnp.isfinite(gn))
            return t, fn, gn, j + 1, ok

        t, fn, gn, nls, ok = lax.while_loop(
            ls_cond, ls_body, (jnp.asarray(1.0, dtype), s.f, s.g, jnp.asarray(0), jnp.asarray(False))
        )
        xn = jnp.where(ok, s.x + t * d, s.x)
        fn = jnp.where(ok, fn, s.f)
        gn = jnp.where(ok, gn, s.g)
        sv = xn - s.x
        yv = gn - s.g
        sy = jnp.dot(sv, yv)
        yy = jnp.dot(yv, yv)
        H = jnp.where((s.k == 0) & (sy > 0), eye * sy / jnp.maximum(yy, 1e-300), s.H)
        H = jnp.where(bad, eye * jnp.where(sy > 0, sy / jnp.maximum(yy, 1e-300), 1.0 / jnp.maximum(1.0, jnp.linalg.norm(s.g))), H)
        rho = 1.0 / jnp.where(sy > 0, sy, 1.0)
        V = eye - rho * jnp.outer(sv, yv)
        Hn = V @ H @ V.T + rho * jnp.outer(sv, sv)
        H = jnp.where(sy > 1e-12 * jnp.sqrt(yy * jnp.dot(sv, sv)), Hn, H)
        k = s.k + 1
        status = jnp.where(jnp.max(jnp.abs(gn)) <= gtol, 0, -1)
        stalled = ~ok | (s.f - fn <= 1e-14 * jnp.abs(s.f))
        status = jnp.where((status < 0) & stalled, 1, status)
        small = s.f - fn <= ftol * jnp.abs(s.f)
        status = jnp.where((status < 0) & small & ((t == 1.0) | s.small), 3, status)
        # predicted remaining decrease (BFGS Newton decrement) below tolerance: stop without
        # spending another evaluation
        predicted = 0.5 * jnp.dot(gn, H @ gn)
        status = jnp.where((status < 0) & ok & (k > 1) & (predicted <= ftol * jnp.abs(fn)), 3, status)
        status = jnp.where((status < 0) & (k >= max_iter), 2, status)
        return _State(xn, fn, gn, H, k, s.nfev + nls, small, status)

    s = lax.while_loop(cond, body, init)
    return BFGSResult(s.x, s.f, s.g, s.k, s.nfev, s.status)
