"""Kenward–Roger adjusted covariance of the fixed effects and denominator degrees of freedom,
as R's pbkrtest 0.5.2 defines them (``vcovAdj``, ``Lb_ddf`` / ``.KR_adjust``).

Variance parameters ``gamma``: for each random-effects term the distinct entries of its
covariance ``sigma^2 T T'`` (lower triangle, column-major, as theta; only the variances for a
``||`` term), then the residual variance ``sigma^2``. ``Sigma = Var(y) = sum_g gamma_g G_g`` with
``G_g = Z_r Z_c' + Z_c Z_r'`` for the ``(r, c)`` entry of a term (``Z_r Z_r'`` on the diagonal;
``Z_r (n, levels)`` places column ``r`` of the term at each row's level) and ``G_resid = I``.

With ``S = Sigma^{-1}`` and ``Phi = Var(beta_hat) (p, p)``::

    P_g   = -X' S G_g S X                                   (p, p)
    Q_gh  =  X' S G_g S G_h S X                             (p, p)
    IE2_gh = tr(G_g S G_h S) - 2 tr(Phi Q_gh) + tr(Phi P_g Phi P_h)
    W     = 2 IE2^{-1}   (Moore–Penrose inverse when min |eig(IE2)| <= 1e-10)
    U     = sum_gh W_gh (Q_gh - P_g Phi P_h)
    PhiA  = Phi + 2 Phi U Phi

Nothing of size ``n x n`` is formed: with ``Lambda`` the relative covariance factor
(``Var(b) = sigma^2 Lambda Lambda'``), ``M = Lambda' Z'Z Lambda + I`` (q, q) and any blocks of
columns ``Y1, Y2`` of ``[Z X]``, ``Y1' S^k Y2 = sigma^{-2k} (Y1'Y2 - Y1'Z Lambda f_k Lambda'Z'Y2)``
with ``f_1 = M^{-1}``, ``f_{k+1} = (I + f_k) M^{-1}`` (Woodbury): a few dense ``q x q`` matrices
and ``O(q^3)`` work, ``q`` the number of random effects, whatever ``n`` (pbkrtest inverts the
dense ``n x n`` Sigma). Models with ``q + p > MAX_DIM`` are refused.
"""

from __future__ import annotations

import dataclasses
import math
import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp

from ..covariance.templates import templates_np
from ..errors import ArgumentError
from ..lmm.model import LmerModel

#: largest number of random effects plus fixed effects handled (dense (q + p)^2 matrices)
MAX_DIM = 6000


@dataclasses.dataclass(frozen=True)
class KRAdjustment:
    """pbkrtest's ``vcovAdj``: ``vcov`` is Phi, ``vcov_adj`` is PhiA (both ``(p, p)``), ``P`` the
    ``P_g = -X' S G_g S X`` matrices and ``W = 2 IE2^{-1} (k, k)`` the asymptotic covariance of
    the variance parameters ``gamma (k,)``, all in gamma order (each term's covariance entries in
    theta order, then sigma^2), named by ``gamma_names``."""

    vcov: np.ndarray
    vcov_adj: np.ndarray
    P: tuple
    W: np.ndarray
    gamma: np.ndarray
    gamma_names: tuple[str, ...] = ()


def _column_matrices(design) -> list[list[sp.csc_matrix]]:
    """Per term, per column ``r``: ``Z_r (n, levels)`` with ``Z_r[i, codes[i]] = columns[i, r]``."""
    n = design.n
    rows = np.arange(n)
    out = []
    for t in design.terms:
        cols = []
        for r in range(t.width):
            cols.append(sp.csc_matrix((np.asarray(t.columns[:, r], dtype=np.float64),
                                       (rows, np.asarray(t.codes, dtype=np.int64))),
                                      shape=(n, t.n_levels)))
        out.append(cols)
    return out


def kenward_roger(model: LmerModel, theta: np.ndarray, sigma: float, vcov: np.ndarray) -> KRAdjustment:
    """Kenward–Roger adjustment of ``vcov = Phi (p, p)`` at the REML estimates ``theta``, ``sigma``.

    ``model`` is a :class:`jaxlmm.model.LmerModel`. Returns Phi, ``PhiA = Phi + 2 Phi U Phi``,
    the ``P_g`` and ``W`` (module docstring). pbkrtest refits ML fits by REML first: pass REML
    estimates. Prior weights are refused (pbkrtest's ``Sigma`` ignores them while its Phi does not),
    and so are models with more than ``MAX_DIM`` random plus fixed effects.
    """
    design = model.design
    specs = model.specs
    w = np.asarray(design.weights, dtype=np.float64)
    if not np.all(w == 1.0):
        raise ArgumentError(
            "weights: Kenward-Roger is not available for fits with prior weights (pbkrtest's "
            "Sigma ignores them); use ddf='satterthwaite'")
    if not design.terms:
        raise ArgumentError("Kenward-Roger needs at least one random-effects term")
    theta = np.asarray(theta, dtype=np.float64).ravel()
    if theta.shape[0] != sum(s.size for s in specs):
        raise ArgumentError(f"theta: expected {sum(s.size for s in specs)} values, got {theta.shape[0]}")
    sigma = float(sigma)
    Phi = np.array(vcov, dtype=np.float64)
    X = np.asarray(design.X, dtype=np.float64)
    n, p = X.shape
    if Phi.shape != (p, p):
        raise ArgumentError(f"vcov: expected shape {(p, p)}, got {Phi.shape}")
    if not (math.isfinite(sigma) and sigma > 0):
        raise ArgumentError(f"sigma: must be positive and finite, got {sigma}")

    Zcols = _column_matrices(design)
    # random-effect columns in order: term, column r, level
    blocks = [z for cols in Zcols for z in cols]
    offsets = np.cumsum([0] + [z.shape[1] for z in blocks])
    q = int(offsets[-1])
    if q + p > MAX_DIM:
        raise ArgumentError(
            f"Kenward-Roger needs dense matrices of size q + p = {q + p} (random effects plus "
            f"fixed effects), more than the {MAX_DIM} allowed; use ddf='satterthwaite'")
    Z = sp.hstack(blocks, format="csc")

    # Lambda in the (term, column, level) order: block (r, c) of term i is T_i[r, c] I_levels
    Ts = templates_np(theta, specs)
    lam_blocks = [sp.kron(sp.csr_matrix(T), sp.identity(t.n_levels), format="csr")
                  for T, t in zip(Ts, design.terms)]
    Lam = sp.block_diag(lam_blocks, format="csr") if lam_blocks else sp.csr_matrix((0, 0))

    def sl(k: int) -> slice:
        return slice(int(offsets[k]), int(offsets[k + 1]))

    # gamma parameters: the (a, b) pairs of global column indices with G_g = sum Z_a Z_b'
    s2 = sigma**2
    params: list[list[tuple[int, int]]] = []
    gamma: list[float] = []
    names: list[str] = []
    base = 0
    for t, s, T in zip(design.terms, specs, Ts):
        Cov = s2 * (T @ T.T)
        for r, c in zip(s.rows, s.cols):
            a, b = base + r, base + c
            params.append([(a, a)] if r == c else [(a, b), (b, a)])
            gamma.append(float(Cov[r, c]))
            if r == c:
                names.append(f"{t.name}: var({t.column_names[r]})")
            else:
                names.append(f"{t.name}: cov({t.column_names[r]}, {t.column_names[c]})")
        base += t.width
    params.append([])  # residual: G = I
    gamma.append(s2)
    names.append("residual")
    k = len(params)
    res = k - 1
    # (b, a) pairs whose tr(Z_b' S^2 Z_a) enters tr(G_g S^2)
    trace_pairs = sorted({(b, a) for g in params for a, b in g})

    # Woodbury, with M = L L', Vz = Lambda' Z'Z, Vx = Lambda' Z'X:
    #   Gz = L^{-1} Vz, Hz = M^{-1} Vz, Gx = L^{-1} Vx, Hx = M^{-1} Vx, Jx = L^{-1} Hx, and
    #   Z'SZ = (Z'Z - Gz'Gz)/s2, Z'SX = (Z'X - Gz'Gx)/s2, Z'S^2X = (Z'X - Gz'(Gx + Jx))/s2^2,
    #   X'S^2X = (X'X - Gx'Gx - Hx'Hx)/s2^2, X'S^3X = (X'X - Gx'Gx - Hx'Hx - Jx'Jx)/s2^3,
    #   Z'S^2Z = (Z'Z - Gz'Gz - Hz'Hz)/s2^2 (only the traces of its (b, a) blocks are needed)
    ZtZ = (Z.T @ Z).toarray()
    ZtX = np.asarray(Z.T @ X)
    XtX = X.T @ X
    Vz = np.asarray(Lam.T @ ZtZ)
    Vx = np.asarray(Lam.T @ ZtX)
    M = np.asarray((Lam.T @ Vz.T).T)  # Lambda' Z'Z Lambda
    M = 0.5 * (M + M.T)
    M[np.diag_indices(q)] += 1.0
    Lc = sla.cholesky(M, lower=True, overwrite_a=True)
    del M
    Gz = sla.solve_triangular(Lc, Vz, lower=True, overwrite_b=True)
    del Vz
    Hz = sla.solve_triangular(Lc, Gz, lower=True, trans="T")
    trC2 = {(b, a): (np.trace(ZtZ[sl(b), sl(a)]) - np.sum(Gz[:, sl(b)] * Gz[:, sl(a)])
                     - np.sum(Hz[:, sl(b)] * Hz[:, sl(a)])) / s2**2 for b, a in trace_pairs}
    # tr(S^2) = s2^{-2} (n - tr((M^{-1} + M^{-2})(M - I))) = s2^{-2} (n - q + ||M^{-1}||_F^2),
    # with M^{-1} = I - M^{-1} (M - I) = I - Hz Lambda
    Minv = -np.asarray((Lam.T @ Hz.T).T)
    Minv[np.diag_indices(q)] += 1.0
    trS2 = (n - q + np.sum(Minv * Minv)) / s2**2
    del Hz, Minv
    Gx = sla.solve_triangular(Lc, Vx, lower=True)
    Hx = sla.solve_triangular(Lc, Gx, lower=True, trans="T")
    Jx = sla.solve_triangular(Lc, Hx, lower=True)
    D1 = (ZtX - Gz.T @ Gx) / s2
    D2 = (ZtX - Gz.T @ (Gx + Jx)) / s2**2
    E2 = (XtX - Gx.T @ Gx - Hx.T @ Hx) / s2**2
    E3 = (XtX - Gx.T @ Gx - Hx.T @ Hx - Jx.T @ Jx) / s2**3
    C1 = ZtZ
    C1 -= Gz.T @ Gz
    C1 /= s2
    del Gz, Lc

    P = []
    for g in range(k):
        if g == res:
            Pg = -E2
        else:
            Pg = -sum(D1[sl(a)].T @ D1[sl(b)] for a, b in params[g])
        P.append(0.5 * (Pg + Pg.T))

    def Q(g: int, h: int) -> np.ndarray:
        if g == res and h == res:
            return E3
        if g == res:
            return sum(D2[sl(c)].T @ D1[sl(d)] for c, d in params[h])
        if h == res:
            return sum(D1[sl(a)].T @ D2[sl(b)] for a, b in params[g])
        return sum(D1[sl(a)].T @ C1[sl(b), sl(c)] @ D1[sl(d)]
                   for a, b in params[g] for c, d in params[h])

    def Ktrace(g: int, h: int) -> float:
        if g == res and h == res:
            return trS2
        if g == res:
            g, h = h, g
        if h == res:  # tr(G_g S^2) = sum tr(Z_b' S^2 Z_a)
            return float(sum(trC2[b, a] for a, b in params[g]))
        # tr(Z_a Z_b' S Z_c Z_d' S) = sum((Z_b'SZ_c) * (Z_a'SZ_d))
        return float(sum(np.sum(C1[sl(b), sl(c)] * C1[sl(a), sl(d)])
                         for a, b in params[g] for c, d in params[h]))

    Qs = {}
    IE2 = np.empty((k, k))
    PhiP = [Phi @ Pg for Pg in P]
    for g in range(k):
        for h in range(g, k):
            Qs[g, h] = Q(g, h)
            IE2[g, h] = IE2[h, g] = (Ktrace(g, h) - 2.0 * np.sum(Phi * Qs[g, h])
                                     + np.sum(PhiP[g] * PhiP[h].T))
    condi = float(np.min(np.abs(np.linalg.eigvalsh(IE2))))
    if condi > 1e-10:
        W = 2.0 * np.linalg.inv(IE2)
    else:
        W = 2.0 * np.linalg.pinv(IE2, rcond=np.sqrt(np.finfo(float).eps))
    W = 0.5 * (W + W.T)

    U = np.zeros((p, p))
    for g in range(k):
        for h in range(g, k):
            term = W[g, h] * (Qs[g, h] - P[g] @ Phi @ P[h])
            U += term if g == h else term + term.T
    PhiA = Phi + 2.0 * Phi @ U @ Phi
    return KRAdjustment(vcov=Phi, vcov_adj=PhiA, P=tuple(P), W=W, gamma=np.array(gamma),
                        gamma_names=tuple(names))


def _div_zero(x: np.float64, y: np.float64, tol: float = 1e-14) -> np.float64:
    """pbkrtest's ``.divZero``: 1 when both are (near) zero, else ``x / y`` (IEEE, no exception)."""
    return np.float64(1.0) if abs(x) < tol and abs(y) < tol else np.float64(x) / np.float64(y)


def kr_ddf(adj: KRAdjustment, L: np.ndarray) -> tuple[float, float]:
    """(denominator df, F scaling factor) for the hypothesis ``L beta = 0`` (L: q x p, full row rank).

    ``Theta = L' (L Phi L')^{-1} L``; ``A1 = sum_gh W_gh tr(Theta Phi P_g Phi) tr(Theta Phi P_h Phi)``,
    ``A2 = sum_gh W_gh tr(Theta Phi P_g Phi Theta Phi P_h Phi)``; then pbkrtest's B, g, c1..c3, rho:
    ``ddf = 4 + (q + 2) / (q rho - 1)``, scaling ``ddf (1 - A2/q) / (ddf - 2)`` (1 when
    ``|ddf - 2| < 0.01``; NaN propagates as R's NA).
    """
    L = np.atleast_2d(np.asarray(L, dtype=np.float64))
    Phi = adj.vcov
    if L.ndim != 2 or L.shape[1] != Phi.shape[0]:
        raise ArgumentError(f"L: expected shape (q, {Phi.shape[0]}), got {L.shape}")
    q = int(np.linalg.matrix_rank(L))
    if q != L.shape[0] or q == 0:
        raise ArgumentError(f"L: must have full row rank, has rank {q} with {L.shape[0]} rows")
    Theta = L.T @ np.linalg.solve(L @ Phi @ L.T, L)
    ThetaPhi = Theta @ Phi
    u = [ThetaPhi @ Pg @ Phi for Pg in adj.P]
    tr = [float(np.trace(ui)) for ui in u]
    W = adj.W
    k = len(u)
    A1 = A2 = 0.0
    for i in range(k):
        for j in range(i, k):
            e = 1.0 if i == j else 2.0
            A1 += e * W[i, j] * tr[i] * tr[j]
            A2 += e * W[i, j] * float(np.sum(u[i] * u[j].T))
    with np.errstate(divide="ignore", invalid="ignore"):
        a1, a2, qq = np.float64(A1), np.float64(A2), np.float64(q)
        B = (a1 + 6.0 * a2) / (2.0 * qq)
        g = ((qq + 1.0) * a1 - (qq + 4.0) * a2) / ((qq + 2.0) * a2)
        den = 3.0 * qq + 2.0 * (1.0 - g)
        c1, c2, c3 = g / den, (qq - g) / den, (qq + 2.0 - g) / den
        V0 = 1.0 + c1 * B
        V1 = 1.0 - c2 * B
        V2 = 1.0 - c3 * B
        if abs(V0) < 1e-10:
            V0 = np.float64(0.0)
        rho = (1.0 / qq) * _div_zero(1.0 - a2 / qq, V1) ** 2 * V0 / V2
        ddf = 4.0 + (qq + 2.0) / (qq * rho - 1.0)
        if abs(ddf - 2.0) < 0.01:
            scaling = np.float64(1.0)
        else:
            scaling = ddf * (1.0 - a2 / qq) / (ddf - 2.0)
    return float(ddf), float(scaling)
