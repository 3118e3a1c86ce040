"""Newton's method with the exact Hessian in a trust region, inside JAX (one ``lax.while_loop``):
jit- and vmap-compatible, a drop-in alternative to :func:`jaxlmm.optimize.minimize_bfgs`.

Each iteration minimises the quadratic model ``m(p) = g'p + p'Hp / 2`` over ``|p| <= delta``
exactly, from the eigendecomposition ``H = Q diag(ev) Q'`` of the (small, dense) Hessian
(More & Sorensen 1983; Nocedal & Wright, *Numerical Optimization*, sections 4.3-4.4):

- ``H`` positive definite and the Newton step ``-H^{-1} g`` inside the region: take it;
- otherwise ``p(lam) = -(H + lam I)^{-1} g`` with ``lam > max(0, -ev_min)`` the root of the
  secular equation ``1/|p(lam)| = 1/delta``, found by safeguarded Newton iterations on that
  equation in the eigenbasis (bracketed, bisection fallback; O(n) per iteration);
- the *hard case* (``g`` orthogonal to the eigenvector ``q_1`` of the smallest eigenvalue,
  ``|p(-ev_min)| < delta``): ``p(-ev_min) + tau q_1`` with ``|p| = delta``.

So an indefinite Hessian (a saddle, the identity start of a maximal model, a ridge where a
template column changes sign) gives a step along negative curvature, never an ascent, and a
singular Hessian (a flat direction of a boundary fit) needs no special handling. There are no
bounds: the profiled objective is smooth in theta and even in the sign of each template column,
so a negative diagonal entry is as good as its mirror image (``jaxlmm.covariance.rectify``
flips it back afterwards).

Trust-region bookkeeping (Nocedal & Wright, algorithm 4.1): ``rho = (f - f(x + p)) / (-m(p))``;
accept when ``rho > eta``; shrink ``delta`` to ``|p| / 4`` when ``rho < 1/4`` (or the value is
not finite), double it (up to ``max_radius``) when ``rho > 3/4`` and the step reached the
boundary.

Cost per iteration: one value evaluation at the trial point; the gradient and Hessian (forward
over reverse mode, ``jax.jacfwd`` of ``jax.grad``, about ``n`` gradient evaluations' work) only
at accepted points, inside a ``lax.cond`` (under ``vmap`` both branches run). The objective
must therefore support forward-mode differentiation: for ``jaxlmm.objective.objective`` use
``ModelArrays`` with ``host_lapack=False``. A custom ``hessian(x, *args) -> (f, g, H)`` can
be passed instead.

Stops with ``status`` 0 when ``max|g| <= gtol`` and ``H`` has no negative eigenvalue beyond
rounding (a saddle point is not a stop); 3 when the model predicts a decrease of at
most ``ftol * max(1, |f|)`` for the next step (converged to rounding level: for a positive
definite Hessian that is half the squared Newton decrement); 1 when the radius has shrunk below
rounding level without an acceptable step, or a gradient or Hessian is not finite; 2 at
``max_iter`` iterations (accepted or rejected). ``nfev`` counts value evaluations (the first
included), ``nhev`` gradient-and-Hessian evaluations, ``n_iter`` iterations.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax


class TrustRegionResult(NamedTuple):
    x: jnp.ndarray
    fun: jnp.ndarray
    grad: jnp.ndarray
    n_iter: jnp.ndarray
    nfev: jnp.ndarray  # value evaluations
    status: jnp.ndarray
    nhev: jnp.ndarray  # gradient + Hessian evaluations
    hess: jnp.ndarray  # the Hessian at x
    radius: jnp.ndarray  # the final trust radius


class _State(NamedTuple):
    x: jnp.ndarray
    f: jnp.ndarray
    g: jnp.ndarray
    H: jnp.ndarray
    ev: jnp.ndarray  # eigenvalues of H, ascending
    Q: jnp.ndarray  # eigenvectors (columns)
    p: jnp.ndarray  # proposed step
    pred: jnp.ndarray  # predicted decrease -m(p) > 0
    delta: jnp.ndarray
    k: jnp.ndarray
    nfev: jnp.ndarray
    nhev: jnp.ndarray
    first: jnp.ndarray
    status: jnp.ndarray


def value_grad_hessian(fun: Callable) -> Callable:
    """``(x, *args) -> (f, g, H)`` by forward-over-reverse differentiation of ``fun``."""

    def vgh(x, *args):
        def g_aux(y):
            f, g = jax.value_and_grad(fun)(y, *args)
            return g, (f, g)

        H, (f, g) = jax.jacfwd(g_aux, has_aux=True)(x)
        return f, g, 0.5 * (H + H.T)

    return vgh


def solve_subproblem(ev, Q, g, delta, max_iter: int = 60, rtol: float = 1e-8):
    """Exact minimiser of ``g'p + p'Hp/2`` over ``|p| <= delta`` with ``H = Q diag(ev) Q'``.

    Returns ``(p, predicted decrease -m(p), lam)`` with ``(H + lam I) p = -g`` (up to the hard
    case's ``tau q_1``).
    """
    dtype = g.dtype
    tiny = jnp.finfo(dtype).tiny
    gt = Q.T @ g
    lam1 = ev[0]
    scale = jnp.maximum(jnp.max(jnp.abs(ev)), tiny)
    # smallest admissible shift: H + lam I positive definite with a margin above rounding
    shift = jnp.where(lam1 > 1e-12 * scale, 0.0, -lam1 + 1e-12 * scale)

    def norm_at(lam):
        return jnp.linalg.norm(gt / (ev + lam))

    n_shift = norm_at(shift)
    gnorm = jnp.linalg.norm(gt)

    # --- boundary solution: safeguarded Newton on 1/|p(lam)| - 1/delta in [shift, hi]
    hi0 = gnorm / delta + jnp.maximum(0.0, -lam1) + shift + tiny

    def cond(c):
        *_, j, done = c
        return (~done) & (j < max_iter)

    def body(c):
        lam, a, b, j, _ = c
        d = ev + lam
        r = gt / d
        n = jnp.linalg.norm(r)
        n3 = jnp.sum(r * r / d)
        too_long = n > delta
        a = jnp.where(too_long, lam, a)
        b = jnp.where(too_long, b, lam)
        done = jnp.abs(n - delta) <= rtol * delta
        lam_n = lam + (n - delta) * n * n / (delta * jnp.maximum(n3, tiny))
        inside = (lam_n > a) & (lam_n < b) & jnp.isfinite(lam_n)
        lam_new = jnp.where(inside, lam_n, 0.5 * (a + b))
        return (jnp.where(done, lam, lam_new), a, b, j + 1, done)

    lam_b, *_ = lax.while_loop(cond, body, (shift, shift, hi0, jnp.asarray(0), jnp.asarray(False)))

    interior = n_shift <= delta
    lam = jnp.where(interior, shift, lam_b)
    pt = -gt / (ev + lam)
    # hard case (or a shifted interior step of an indefinite/singular H): move along q_1 to the
    # boundary, in the direction that lowers the model
    hard = interior & (shift > 0)
    tau = jnp.sqrt(jnp.maximum(delta * delta - jnp.sum(pt * pt), 0.0))
    tau = jnp.where(pt[0] < 0, -tau, tau)
    pt = pt.at[0].add(jnp.where(hard, tau, 0.0))
    pred = -(jnp.dot(gt, pt) + 0.5 * jnp.sum(ev * pt * pt))
    return Q @ pt, pred, lam


def minimize_trust_region(
    fun: Callable,
    x0: jnp.ndarray,
    *args,
    gtol: float = 1e-6,
    ftol: float = 1e-12,
    max_iter: int = 500,
    radius0: float | None = None,
    max_radius: float = 1e3,
    eta: float = 1e-4,
    hessian: Callable | None = None,
) -> TrustRegionResult:
    """Minimise ``fun(x, *args)`` from ``x0`` (see the module docstring).

    ``radius0``: the first trust radius (default ``max(1, |x0|)``); ``hessian``: optional
    ``(x, *args) -> (f, g, H)`` replacing forward-over-reverse differentiation of ``fun``.
    """
    vgh = value_grad_hessian(fun) if hessian is None else hessian
    dtype = x0.dtype
    n = x0.shape[0]
    zero = jnp.asarray(0.0, dtype)
    delta0 = jnp.maximum(1.0, jnp.linalg.norm(x0)) if radius0 is None else jnp.asarray(radius0, dtype)
    init = _State(
        x=x0, f=zero, g=jnp.zeros_like(x0), H=jnp.zeros((n, n), dtype), ev=jnp.ones((n,), dtype),
        Q=jnp.eye(n, dtype=dtype), p=jnp.zeros_like(x0), pred=zero, delta=jnp.asarray(delta0, dtype),
        k=jnp.asarray(0), nfev=jnp.asarray(0), nhev=jnp.asarray(0), first=jnp.asarray(True),
        status=jnp.asarray(-1),
    )

    def cond(s: _State):
        return s.status < 0

    def body(s: _State):
        xt = s.x + s.p
        ft = fun(xt, *args)
        nfev = s.nfev + 1
        actual = s.f - ft
        rho = actual / jnp.where(s.pred > 0, s.pred, 1.0)
        accept = s.first | (jnp.isfinite(ft) & (rho > eta))

        # radius update
        pn = jnp.linalg.norm(s.p)
        bad = ~jnp.isfinite(ft) | (rho < 0.25)
        grow = (rho > 0.75) & (pn >= 0.99 * s.delta)
        delta = jnp.where(s.first, s.delta,
                          jnp.where(bad, 0.25 * pn, jnp.where(grow, jnp.minimum(2.0 * s.delta, max_radius), s.delta)))

        def new_point(_):
            f, g, H = vgh(xt, *args)
            ev, Q = jnp.linalg.eigh(H)
            return f, g, H, ev, Q

        def old_point(_):
            return s.f, s.g, s.H, s.ev, s.Q

        f, g, H, ev, Q = lax.cond(accept, new_point, old_point, None)
        nhev = s.nhev + accept.astype(s.nhev.dtype)
        x = jnp.where(accept, xt, s.x)
        finite = jnp.all(jnp.isfinite(g)) & jnp.all(jnp.isfinite(ev)) & jnp.isfinite(f)

        p, pred, _ = solve_subproblem(ev, Q, g, delta)
        k = s.k + (~s.first).astype(s.k.dtype)
        # first- and second-order stationarity (a saddle with g = 0 is left along q_1)
        second = ev[0] >= -1e-8 * jnp.maximum(1.0, jnp.max(jnp.abs(ev)))
        st = jnp.where((jnp.max(jnp.abs(g)) <= gtol) & second, 0, -1)
        st = jnp.where((st < 0) & ~finite, 1, st)
        st = jnp.where((st < 0) & (pred <= ftol * jnp.maximum(1.0, jnp.abs(f))), 3, st)
        st = jnp.where((st < 0) & (delta <= 1e-15 * jnp.maximum(1.0, jnp.linalg.norm(x))), 1, st)
        st = jnp.where((st < 0) & (k >= max_iter), 2, st)
        return _State(x, f, g, H, ev, Q, p, pred, delta, k, nfev, nhev, jnp.asarray(False), st)

    s = lax.while_loop(cond, body, init)
    return TrustRegionResult(s.x, s.f, s.g, s.k, s.nfev, s.status, s.nhev, s.H, s.delta)
