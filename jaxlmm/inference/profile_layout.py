"""The variance parameters of a likelihood profile on an unconstrained scale, and the compiled
minimisation of the ML deviance at one profile point (used by :mod:`jaxlmm.inference.profile`).

For terms with ``p_i`` random effects, the unconstrained vector is
``u = [sds (n_sd,), unit-row entries (n_v,), log sigma]`` with ``n_sd = sum_i p_i`` and, for
each correlated term, ``r + 1`` entries ``v_r`` for each row ``r = 1, ..., p_i - 1`` of a
lower-triangular factor ``R`` with unit rows (``n_rows = sum (p_i - 1)`` such rows): term ``i``
has ``T_i = diag(sd) R / sigma``, so ``sigma^2 T T' = diag(sd) R R' diag(sd)``. Which entry is
held at the profiled value ``x`` (an sd, a correlation ``cor(r, c)`` -- then row ``r`` is
``x R_c + sqrt(1 - x^2) w`` -- or ``sigma``) is a :class:`VarLayout` of traced arrays, not
structure, so one program serves every parameter. The objective is the ML deviance in
``(theta, sigma)`` plus ``sum_r (|v_r|^2 - 1)^2``, which pins the lengths of the ``v_r``.

A fixed effect ``beta_j`` held at ``b`` maps the ``XY`` stage of the Gram matrix linearly:
``[X y] -> [X y] E`` plus ``diag(e)`` (``E (p + 1, p + 1)``, ``e (p + 1,)``), column ``j`` becoming a
unit column orthogonal to everything and ``y`` becoming ``y - b x_j``.
:func:`profile_point` (``jax.jit``) runs BFGS over ``u`` on the mapped model and returns the
minimiser, the deviance and ``(theta, sigma)``.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..covariance.templates import templates_np
from ..kernels.structure import key_name
from ..lmm.objective import ModelArrays, deviance_varpar
from ..optim.bfgs import minimize_bfgs

GTOL = 1e-7  # gradient tolerance of the inner minimisations
MAX_ITER = 500


# --------------------------------------------------------------------------------------------
# variance parameters: the deviance over the other sd/cor/sigma entries


class VarLayout(NamedTuple):
    """Which variance parameter is held and how the rest are parametrised (traced arrays, so
    one compiled program serves all of them)."""

    sd_fixed: jnp.ndarray  # (n_sd,) 1.0 for the sd held at x
    sd_log: jnp.ndarray  # (n_sd,) 1.0 where sd = exp(u) (the two sds of a held correlation)
    sigma_fixed: jnp.ndarray  # () 1.0 when sigma is held
    cor_fixed: jnp.ndarray  # (n_rows,) per correlated template row r >= 1: 1.0 when cor(r, c) is held
    cor_partner: jnp.ndarray  # (n_rows,) int: that c


def unconstrained_sizes(specs) -> tuple[int, int, int]:
    """``(n_sd, n_v, n_rows)``: sd slots, unit-row entries and correlated rows ``r >= 1``."""
    n_sd = sum(s.p for s in specs)
    n_v = sum(sum(r + 1 for r in range(1, s.p)) for s in specs if _correlated(s))
    n_rows = sum(s.p - 1 for s in specs if _correlated(s))
    return n_sd, n_v, n_rows


def _correlated(spec) -> bool:
    return spec.size > spec.p


def _assemble(u, x, lay: VarLayout, specs):
    """``varpar = (theta, sigma)`` from the unconstrained vector ``u`` and the held value ``x``.

    ``u = [sds..., unit-row entries..., log sigma]``. Term ``i``: ``T_i = diag(sd) R / sigma``
    with ``R`` lower triangular with unit rows (row ``r`` is ``v_r / |v_r|``, or, for a held
    correlation with row ``c``, ``x R_c + sqrt(1 - x^2) w`` with ``w`` the unit part of ``v_r``
    orthogonal to ``R_c``), so ``sigma^2 T T' = diag(sd) R R' diag(sd)``.
    """
    n_sd, _, _ = unconstrained_sizes(specs)
    sd_all = u[:n_sd]
    sd_all = jnp.where(lay.sd_log > 0, jnp.exp(jnp.where(lay.sd_log > 0, sd_all, 0.0)), sd_all)
    sd_all = jnp.where(lay.sd_fixed > 0, x, sd_all)
    sigma = jnp.where(lay.sigma_fixed > 0, x, jnp.exp(u[-1]))
    thetas = []
    k_sd, k_v, k_row = 0, n_sd, 0
    for s in specs:
        sd = sd_all[k_sd : k_sd + s.p]
        k_sd += s.p
        if not _correlated(s):
            thetas.append(sd / sigma)
            continue
        rows = [jnp.zeros((s.p,), u.dtype).at[0].set(1.0)]
        for r in range(1, s.p):
            v = jnp.zeros((s.p,), u.dtype).at[: r + 1].set(u[k_v : k_v + r + 1])
            k_v += r + 1
            free = v / _safe_norm(v)
            held = lay.cor_fixed[k_row] > 0
            c = jnp.where(held, lay.cor_partner[k_row], 0)
            Rc = jnp.take(jnp.stack(rows), c, axis=0)
            xc = jnp.where(held, x, 0.0)
            w = v - jnp.dot(v, Rc) * Rc
            w = w / _safe_norm(w)
            fixed = xc * Rc + jnp.sqrt(jnp.maximum(1.0 - xc * xc, 0.0)) * w
            rows.append(jnp.where(held, fixed, free))
            k_row += 1
        T = sd[:, None] * jnp.stack(rows) / sigma
        thetas.append(T[np.array(s.rows), np.array(s.cols)])
    return jnp.concatenate(thetas + [sigma[None]])


def _safe_norm(v):
    """``|v|``, or 1 for ``v = 0``, with a finite gradient there too."""
    ss = jnp.dot(v, v)
    return jnp.sqrt(jnp.where(ss > 0, ss, 1.0))


def _var_deviance(u, x, lay, M: ModelArrays):
    return deviance_varpar(_assemble(u, x, lay, M.specs), M)


def _var_objective(u, x, lay, M: ModelArrays):
    """The deviance plus ``sum_r (|v_r|^2 - 1)^2``: the deviance does not depend on the lengths of
    the unit-row vectors ``v_r``; the penalty pins them (zero at the minimum) so that they
    cannot drift to where their gradient vanishes."""
    n_sd = unconstrained_sizes(M.specs)[0]
    pen, k = 0.0, n_sd
    for s in M.specs:
        if _correlated(s):
            for r in range(1, s.p):
                v = u[k : k + r + 1]
                pen = pen + (jnp.dot(v, v) - 1.0) ** 2
                k += r + 1
    return _var_deviance(u, x, lay, M) + pen


# --------------------------------------------------------------------------------------------
# fixed effects: the XY stage transformed to [X with column j replaced, y - b x_j]


def xy_map(p: int, j: int, b: float) -> tuple[np.ndarray, np.ndarray]:
    """``(E, e)`` such that ``E' [X y]' W [X y] E + diag(e)`` is the XY stage of the model with
    ``beta_j = b`` in the offset and column ``j`` replaced by a unit column orthogonal to
    everything (its coefficient is zero, ``r^2`` and ``log|L_Z|`` are those of the model without
    column ``j``): the reduced ML deviance on the full model's structure."""
    E = np.eye(p + 1)
    E[j, j] = 0.0
    E[j, p] = -b
    e = np.zeros(p + 1)
    e[j] = 1.0
    return E, e


def _transformed(M: ModelArrays, E, e) -> ModelArrays:
    """``M`` with its XY stage ``[X y]`` mapped to ``[X y] E`` (plus ``diag(e)``)."""
    k = M.n_terms
    D = jnp.einsum("ba,lbc,cd->lad", E, M.diag[k], E) + jnp.diag(e)[None]
    off = dict(M.off)
    for i in range(k):
        off[key_name(k, i)] = jnp.einsum("ba,lbc->lac", E, M.off[key_name(k, i)])
    return dataclasses.replace(M, diag=list(M.diag[:k]) + [D], off=off)


transformed_jit = jax.jit(_transformed)


@jax.jit
def profile_point(u0, x, lay: VarLayout, E, e, M: ModelArrays):
    """The minimum ML deviance with the held parameter at ``x`` (``lay``), on the model whose XY
    stage is mapped by ``(E, e)``; returns the minimiser ``u``, the deviance and ``(theta, sigma)``."""
    Mt = _transformed(M, E, e)
    r = minimize_bfgs(_var_objective, u0, x, lay, Mt, gtol=GTOL, max_iter=MAX_ITER)
    vp = _assemble(r.x, x, lay, M.specs)
    return r.x, deviance_varpar(vp, Mt), vp


# --------------------------------------------------------------------------------------------
# the unconstrained vector of a fit, and the layout holding one entry


def unconstrained_start(theta, sigma, specs) -> np.ndarray:
    """``u`` of :func:`_assemble` at ``(theta, sigma)``: sds, unit rows of each template, log sigma.
    A zero sd starts slightly positive (zero is a stationary point of the even deviance)."""
    sds, vs = [], []
    for s, T in zip(specs, templates_np(np.asarray(theta), specs)):
        nrm = np.linalg.norm(T, axis=1)
        sds.append(np.maximum(sigma * nrm, 1e-3 * sigma))
        if _correlated(s):
            for r in range(1, s.p):
                vs.append(T[r, : r + 1] / nrm[r] if nrm[r] > 0 else np.eye(r + 1)[r])
    return np.concatenate(sds + vs + [np.array([np.log(sigma)])])


def canonical_unconstrained(u: np.ndarray, specs) -> np.ndarray:
    """The same covariances with every sd >= 0 (a negative sd of row ``r`` becomes a negated
    row: ``v_r``, or for ``r = 0`` the first entry of every other row), and each unit-row vector
    kept off the span of the rows above it (a correlation of exactly -1 or 1), where a held
    correlation could not be parametrised."""
    u = u.copy()
    k_sd, k = 0, unconstrained_sizes(specs)[0]
    for s in specs:
        if not _correlated(s):
            u[k_sd : k_sd + s.p] = np.abs(u[k_sd : k_sd + s.p])
            k_sd += s.p
            continue
        starts = [k + sum(q + 1 for q in range(1, r)) for r in range(1, s.p)]
        for r in range(s.p):
            if u[k_sd + r] < 0:
                u[k_sd + r] = -u[k_sd + r]
                if r == 0:
                    for a in starts:
                        u[a] = -u[a]
                else:
                    a = starts[r - 1]
                    u[a : a + r + 1] = -u[a : a + r + 1]
        for r in range(1, s.p):
            last = starts[r - 1] + r
            if abs(u[last]) < 1e-4:
                u[last] = 1e-4 if u[last] >= 0 else -1e-4
        k_sd += s.p
        k += sum(r + 1 for r in range(1, s.p))
    return u


def var_layout(k: int, specs) -> tuple[VarLayout, np.ndarray]:
    """The layout holding sd/cor/sigma entry ``k`` (none for ``k = -1``); also a mask of the
    sd slots on the log scale."""
    n_sd, _, n_rows = unconstrained_sizes(specs)
    sd_fixed = np.zeros(n_sd)
    sd_log = np.zeros(n_sd)
    cor_fixed = np.zeros(n_rows)
    cor_partner = np.zeros(n_rows, dtype=np.int32)
    sigma_fixed = 0.0
    a, k_sd, k_row = 0, 0, 0
    for s in specs:
        for r, c in zip(s.rows, s.cols):
            if a == k:
                if r == c:
                    sd_fixed[k_sd + r] = 1.0
                else:  # cor(r, c), r > c
                    sd_log[k_sd + r] = sd_log[k_sd + c] = 1.0
                    cor_fixed[k_row + r - 1] = 1.0
                    cor_partner[k_row + r - 1] = c
            a += 1
        k_sd += s.p
        if _correlated(s):
            k_row += s.p - 1
    if k == a:
        sigma_fixed = 1.0
    lay = VarLayout(jnp.asarray(sd_fixed), jnp.asarray(sd_log), jnp.asarray(sigma_fixed),
                     jnp.asarray(cor_fixed), jnp.asarray(cor_partner))
    return lay, sd_log > 0
