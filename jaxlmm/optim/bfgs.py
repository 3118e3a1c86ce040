"""A BFGS minimizer that runs entirely inside JAX (one ``lax.while_loop``): jit- and
vmap-compatible.

Search direction ``d = -H g`` with the inverse-Hessian approximation ``H`` (a scaled identity
to start, rescaled after the first step, then BFGS updates when the curvature condition
``s'y > 0`` holds); backtracking line search by quadratic interpolation with the Armijo
condition. Gradients are exact (``jax.value_and_grad``). The line search and the iterations
share one loop whose body makes exactly one value-and-gradient evaluation, so the objective is
traced and compiled once.

With ``extra_points`` (a function of the final ``x`` giving ``n_extra`` points ``(n_extra, d)``)
the same loop goes on, after the search has stopped, to evaluate the value and gradient at those
points (for a Hessian by differences of the gradient): one instance of the objective in the
compiled program serves both. ``has_aux``: ``fun`` returns ``(value, aux)``; the ``aux`` of the
first extra point is returned. ``feed_aux`` (with ``has_aux``): ``fun(x, aux_prev, *args)`` also
receives the ``aux`` of the previous evaluation (zeros at the first), e.g. a warm start for an
inner iteration; it is not differentiated.

Stops with ``status`` 0 when ``max|g| <= gtol``; 1 when no decrease beyond rounding
(``1e-14`` relative) is possible any more; 3 when the decrease per iteration falls below
``ftol * |f|`` after a full quasi-Newton step (or twice in a row), or when the predicted
remaining decrease ``g' H g / 2`` does; 2 at ``max_iter``; 4 when the objective or its gradient
is not finite at the start. ``nfev`` counts evaluations.

The loop is resumable: :func:`bfgs_init` makes its state (:class:`BFGSCarry`), :func:`bfgs_run`
continues it for at most ``budget`` evaluations (a traced number: one compiled program), and
:func:`bfgs_result` reads the result. :func:`run_in_chunks` drives a compiled ``bfgs_run`` from
the host in chunks of about half a second, so that Ctrl-C (KeyboardInterrupt) takes effect
between chunks and leaves the process usable; one host check per chunk, none per evaluation.
:func:`minimize_bfgs` is all three in one (for ``vmap``).
"""

from __future__ import annotations

import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


class BFGSResult(NamedTuple):
    x: jnp.ndarray
    fun: jnp.ndarray
    grad: jnp.ndarray
    n_iter: jnp.ndarray
    nfev: jnp.ndarray
    status: jnp.ndarray
    extra_f: Any = None  # (n_extra,) values at the extra points
    extra_g: Any = None  # (n_extra, d) gradients there
    aux: Any = None  # the objective's aux output at the first extra point


class _State(NamedTuple):
    x: jnp.ndarray  # current iterate
    f: jnp.ndarray
    g: jnp.ndarray
    H: jnp.ndarray  # inverse-Hessian approximation
    d: jnp.ndarray  # search direction
    slope: jnp.ndarray  # g'd
    t: jnp.ndarray  # trial step length
    f_trial: jnp.ndarray  # value at the last rejected trial (for interpolation)
    j: jnp.ndarray  # trials in the current line search
    k: jnp.ndarray  # iterations
    nfev: jnp.ndarray
    small: jnp.ndarray  # last iteration's decrease was below ftol
    first: jnp.ndarray  # the next evaluation is the initial one, at x
    status: jnp.ndarray  # -1 running


def _descent(H, g):
    d = -H @ g
    slope = jnp.dot(g, d)
    bad = ~(slope < 0)
    d = jnp.where(bad, -g / jnp.maximum(1.0, jnp.linalg.norm(g)), d)
    return d, jnp.dot(g, d), bad


class BFGSCarry(NamedTuple):
    """The whole state of the loop: the search (``s``) and the extra points evaluated so far
    (``j``; values ``ef``, gradients ``eg``, ``aux_keep`` of the first, ``aux_last`` of the
    latest evaluation); ``need``: how many extra points the loop evaluates (``n_needed`` of the
    current ``x``, at most ``len(ef)``)."""

    s: _State
    j: jnp.ndarray
    ef: jnp.ndarray
    eg: jnp.ndarray
    aux_keep: Any
    aux_last: Any
    need: Any = None


def _aux_zeros(fun, x0, args, has_aux: bool, feed_aux: bool):
    if not has_aux:
        return None
    if feed_aux:
        shape = jax.eval_shape(lambda x: fun(x, None, *args)[1], x0)
    else:
        shape = jax.eval_shape(lambda x: fun(x, *args)[1], x0)
    return jax.tree_util.tree_map(lambda a: np.zeros(a.shape, a.dtype), shape)


def bfgs_init(fun: Callable, x0, *args, n_extra: int = 0, has_aux: bool = False,
              feed_aux: bool = False, aux0=None) -> BFGSCarry:
    """The loop's state before the first evaluation, at ``x0``. Made of numpy arrays (outside
    ``jit`` nothing is dispatched to a device: no small programs to compile), or of tracers
    inside a traced function. ``aux0``: zeros shaped as ``fun``'s aux output (default: found by
    tracing ``fun``, which costs as much as tracing the objective; pass them when known)."""
    dtype = np.dtype(x0.dtype)
    n = x0.shape[0]
    zeros = np.zeros((n,), dtype)
    zero = np.asarray(0.0, dtype)
    i0 = np.asarray(0, np.int64 if jax.config.jax_enable_x64 else np.int32)
    s = _State(
        x=x0, f=zero, g=zeros, H=np.eye(n, dtype=dtype), d=zeros, slope=zero, t=zero, f_trial=zero, j=i0, k=i0,
        nfev=i0, small=np.asarray(False), first=np.asarray(True), status=i0 - 1,
    )
    if aux0 is None:
        aux0 = _aux_zeros(fun, x0, args, has_aux, feed_aux)
    m = int(n_extra)
    return BFGSCarry(s, i0, np.zeros((m,), dtype), np.zeros((m, n), dtype), aux0, aux0, i0 + m)


def bfgs_done(carry: BFGSCarry):
    """Whether the search has stopped and every extra point is evaluated."""
    return (carry.s.status >= 0) & (carry.j >= carry.need)


def bfgs_result(carry: BFGSCarry) -> BFGSResult:
    s = carry.s
    if not carry.ef.shape[0]:
        return BFGSResult(s.x, s.f, s.g, s.k, s.nfev, s.status)
    return BFGSResult(s.x, s.f, s.g, s.k, s.nfev, s.status, carry.ef, carry.eg, carry.aux_keep)


def minimize_bfgs(fun: Callable, x0: jnp.ndarray, *args, extra_points: Callable | None = None,
                  n_extra: int = 0, has_aux: bool = False, feed_aux: bool = False, **options) -> BFGSResult:
    """Minimize ``fun(x, *args)`` from ``x0`` (see module docstring); ``options``: ``gtol``,
    ``ftol``, ``max_iter``, ``max_backtrack`` of :func:`bfgs_run`."""
    m = int(n_extra) if extra_points is not None else 0
    carry = bfgs_init(fun, x0, *args, n_extra=m, has_aux=has_aux, feed_aux=feed_aux)
    carry = bfgs_run(fun, carry, *args, extra_points=extra_points, has_aux=has_aux, feed_aux=feed_aux, **options)
    return bfgs_result(carry)


def bfgs_run(
    fun: Callable,
    carry: BFGSCarry,
    *args,
    budget=None,
    gtol: float = 1e-6,
    ftol: float = 1e-13,
    max_iter=1000,
    max_backtrack: int = 60,
    extra_points: Callable | None = None,
    n_needed: Callable | None = None,
    has_aux: bool = False,
    feed_aux: bool = False,
) -> BFGSCarry:
    """Continue the loop from ``carry`` until it is done or ``budget`` more evaluations have been
    made (``None``: no limit). ``max_iter`` and ``budget`` may be traced. ``n_needed(x)``: how
    many of the extra points (the first ones) are needed at the final ``x`` (default: all)."""
    vg_raw = jax.value_and_grad(fun, has_aux=has_aux)
    if has_aux:
        def vg(x, prev, *a):
            (f, aux), g = vg_raw(x, prev, *a) if feed_aux else vg_raw(x, *a)
            # strongly typed (as bfgs_init's zeros), so that a resumed loop has the same types
            aux = jax.tree_util.tree_map(lambda v: lax.convert_element_type(v, v.dtype), aux)
            return f, g, aux
    else:
        def vg(x, prev, *a):
            f, g = vg_raw(x, *a)
            return f, g, None
    x0 = carry.s.x
    dtype = x0.dtype
    n = x0.shape[0]
    eye = jnp.eye(n, dtype=dtype)
    m = carry.ef.shape[0]
    if m and extra_points is None:
        raise ValueError("bfgs_run: the carry has extra points but no extra_points function was given")

    def cond(c):
        cc, calls = c
        more = (cc.s.status < 0) | (cc.j < cc.need)
        return more if budget is None else more & (calls < budget)

    def body(c):
        cc, calls = c
        s, j, ef, eg, aux_keep, aux_last, _ = cc
        searching = s.status < 0
        xt = s.x + s.t * s.d
        if m:
            xt = jnp.where(searching, xt, extra_points(s.x)[jnp.minimum(j, m - 1)])
        ft, gt, aux = vg(xt, aux_last, *args)
        if m:
            store = ~searching
            ef = jnp.where(store, ef.at[j].set(ft), ef)
            eg = jnp.where(store, eg.at[j].set(gt), eg)
            if has_aux:
                keep = store & (j == 0)
                aux_keep = jax.tree_util.tree_map(lambda a, b: jnp.where(keep, a, b), aux, aux_keep)
            j = j + store.astype(j.dtype)
        s_new = _search_step(s, xt, ft, gt)
        if m:
            s_new = jax.tree_util.tree_map(lambda a, b: jnp.where(searching, a, b), s_new, s)
        need = cc.need if n_needed is None else jnp.asarray(n_needed(s_new.x), cc.need.dtype)
        return BFGSCarry(s_new, j, ef, eg, aux_keep, aux, need), calls + 1

    def _search_step(s: _State, xt, ft, gt):
        nfev = s.nfev + 1

        # --- initial evaluation: first step of length 0.1 max(1, |x0|) along -g
        H0 = eye * (0.1 * jnp.maximum(1.0, jnp.linalg.norm(xt)) / jnp.maximum(jnp.linalg.norm(gt), 1e-300))
        d0, slope0, _ = _descent(H0, gt)
        finite0 = jnp.isfinite(ft) & jnp.all(jnp.isfinite(gt))
        st0 = jnp.where(finite0, jnp.where(jnp.max(jnp.abs(gt)) <= gtol, 0, -1), 4)
        s_first = _State(xt, ft, gt, H0, d0, slope0, jnp.asarray(1.0, dtype), ft, jnp.asarray(0),
                         s.k, nfev, jnp.asarray(False), jnp.asarray(False), st0)
        # --- a trial point of the line search
        ok = jnp.isfinite(ft) & (ft <= s.f + 1e-4 * s.t * s.slope) & jnp.all(jnp.isfinite(gt))
        # accepted: BFGS update
        sv = xt - s.x
        yv = gt - s.g
        sy = jnp.dot(sv, yv)
        yy = jnp.dot(yv, yv)
        H = jnp.where((s.k == 0) & (sy > 0), eye * sy / jnp.maximum(yy, 1e-300), s.H)
        rho = 1.0 / jnp.where(sy > 0, sy, 1.0)
        V = eye - rho * jnp.outer(sv, yv)
        Hn = V @ H @ V.T + rho * jnp.outer(sv, sv)
        H = jnp.where(sy > 1e-12 * jnp.sqrt(yy * jnp.dot(sv, sv)), Hn, H)
        d, slope, bad = _descent(H, gt)
        H = jnp.where(bad, eye * jnp.where(sy > 0, sy / jnp.maximum(yy, 1e-300), 1.0), H)
        d, slope, _ = _descent(H, gt)
        k = s.k + 1
        st = jnp.where(jnp.max(jnp.abs(gt)) <= gtol, 0, -1)
        st = jnp.where((st < 0) & (s.f - ft <= 1e-14 * jnp.abs(s.f)), 1, st)
        small = s.f - ft <= ftol * jnp.abs(s.f)
        st = jnp.where((st < 0) & small & ((s.t == 1.0) | s.small), 3, st)
        predicted = 0.5 * jnp.dot(gt, H @ gt)
        st = jnp.where((st < 0) & (k > 1) & (predicted <= ftol * jnp.abs(ft)), 3, st)
        st = jnp.where((st < 0) & (k >= max_iter), 2, st)
        s_acc = _State(xt, ft, gt, H, d, slope, jnp.asarray(1.0, dtype), ft, jnp.asarray(0), k,
                       nfev, small, jnp.asarray(False), st)

        # rejected: backtrack by the minimiser of the quadratic through f(0), f'(0), f(t),
        # kept in [t/10, t/2] (a non-finite value shrinks by 10); give up at rounding level
        t_quad = -s.slope * s.t * s.t / (2.0 * (ft - s.f - s.slope * s.t))
        t_new = jnp.where(jnp.isfinite(ft) & (t_quad > 0), jnp.clip(t_quad, 0.1 * s.t, 0.5 * s.t), 0.1 * s.t)
        visible = 0.5 * t_new * (-s.slope) > 1e-15 * jnp.abs(s.f)
        st_rej = jnp.where(visible & (s.j + 1 < max_backtrack), -1, 1)
        s_rej = s._replace(t=t_new, f_trial=ft, j=s.j + 1, nfev=nfev, status=st_rej)

        pick = lambda a, b, c: jnp.where(s.first, a, jnp.where(ok, b, c))  # noqa: E731
        return jax.tree_util.tree_map(pick, s_first, s_acc, s_rej)

    carry, _ = lax.while_loop(cond, body, (carry, jnp.asarray(0)))
    return carry


def run_in_chunks(program: Callable, carry: BFGSCarry, *args, seconds: float = 0.5, first: int = 1):
    """Call ``carry = program(carry, budget, *args)`` (a compiled :func:`bfgs_run`) until
    :func:`bfgs_done`, each call limited to about ``seconds`` of evaluations (the first to
    ``first``, as one evaluation may take seconds on a large model; later budgets from the
    measured time per evaluation of the previous chunk). Python handles Ctrl-C between calls, so
    a KeyboardInterrupt arrives within about a chunk, or one evaluation when that is longer."""
    budget = int(first)

    def counts(c):  # one host synchronisation per chunk
        status, j, nfev, need = jax.device_get((c.s.status, c.j, c.s.nfev, c.need))
        return int(status), int(j), int(j) + int(nfev), int(need)

    _, _, before, _ = counts(carry)
    while True:
        t0 = time.perf_counter()
        carry = program(carry, np.asarray(budget), *args)
        status, j, now, need = counts(carry)
        if status >= 0 and j >= need:
            return carry
        per_eval = max((time.perf_counter() - t0) / max(now - before, 1), 1e-7)
        before = now
        budget = int(min(max(seconds / per_eval, 1), 1_000_000))
