"""The Laplace and adaptive Gauss-Hermite approximations of a GLMM's -2 log-likelihood, computed
the slow obvious way with dense matrices: the oracle for ``glmer`` tests.

For ``eta = offset + X beta + Z Lambda u``, ``u ~ N(0, I)``:

    Laplace:  -2 log L = sum_i -2 log p(y_i | mu_i(u*)) + |u*|^2 + log det(Lambda' Z' W Z Lambda + I)

at the conditional mode ``u*`` (Newton with step halving on the penalised deviance), ``W`` the
GLM weights ``w (dmu/deta)^2 / V(mu)`` at ``u*``. Adaptive Gauss-Hermite (one scalar term): per
group, ``log int prod_i p(y_i | u) phi(u) du`` with nodes centred at the group's mode and scaled by
its conditional SD. Everything in numpy/scipy float64; nothing from jaxlmm's fitting code.
"""

from __future__ import annotations

import numpy as np
from scipy import special


def binomial_nll(y, mu, w):
    k = np.round(w * y)
    return -2.0 * (special.gammaln(w + 1) - special.gammaln(k + 1) - special.gammaln(w - k + 1)
                   + special.xlogy(k, mu) + special.xlogy(w - k, 1 - mu))


def poisson_nll(y, mu, w):
    return -2.0 * w * (special.xlogy(y, mu) - mu - special.gammaln(y + 1))


FAMILIES = {
    # name: (inverse link, dmu/deta, variance, -2 log p)   -- canonical links only
    "binomial": (special.expit, lambda e: special.expit(e) * (1 - special.expit(e)), lambda m: m * (1 - m),
                 binomial_nll),
    "poisson": (np.exp, np.exp, lambda m: m, poisson_nll),
    # a non-canonical link: Fisher weights in the mode iteration and in the log-determinant (lme4)
    "binomial_probit": (special.ndtr, lambda e: np.exp(-0.5 * e * e) / np.sqrt(2 * np.pi), lambda m: m * (1 - m),
                        binomial_nll),
}


def dense_A(terms, theta):
    """``Z Lambda (n, q)`` from ``terms = [(codes (n,), columns (n, p_i)), ...]`` and theta in
    lme4's order (lower-triangular templates, column-major)."""
    blocks, k = [], 0
    for codes, cols in terms:
        p = cols.shape[1]
        T = np.zeros((p, p))
        rows, cs = np.tril_indices(p)
        order = np.lexsort((rows, cs))  # column-major lower triangle
        size = p * (p + 1) // 2
        T[rows[order], cs[order]] = theta[k : k + size]
        k += size
        L = int(codes.max()) + 1
        A = np.zeros((len(codes), L * p))
        for a in range(p):
            A[np.arange(len(codes)), codes * p + a] = cols @ T[:, a]
        blocks.append(A)
    return np.hstack(blocks)


def conditional_mode(A, X, beta, y, w, offset, family, tol=1e-12, max_iter=200):
    """``u*`` and the GLM weights at it; ``A = Z Lambda (n, q)``."""
    inv, mu_eta, var, nll = FAMILIES[family]
    u = np.zeros(A.shape[1])

    def pdev(u):
        return nll(y, inv(offset + X @ beta + A @ u), w).sum() + u @ u

    f = pdev(u)
    for _ in range(max_iter):
        eta = offset + X @ beta + A @ u
        mu, d = inv(eta), mu_eta(eta)
        W = w * d * d / var(mu)
        g = A.T @ (w * (y - mu) * d / var(mu)) - u
        H = A.T @ (W[:, None] * A) + np.eye(A.shape[1])
        step = np.linalg.solve(H, g)
        t = 1.0
        while t > 1e-10:
            fn = pdev(u + t * step)
            if fn <= f + 1e-14 * abs(f):
                break
            t /= 2
        u, f_old, f = u + t * step, f, fn
        if np.max(np.abs(t * step)) < tol or abs(f_old - f) < 1e-15 * abs(f):
            break
    eta = offset + X @ beta + A @ u
    mu, d = inv(eta), mu_eta(eta)
    return u, w * d * d / var(mu), mu


def laplace_deviance(A, X, beta, y, w, offset, family):
    u, W, mu = conditional_mode(A, X, beta, y, w, offset, family)
    H = A.T @ (W[:, None] * A) + np.eye(A.shape[1])
    return FAMILIES[family][3](y, mu, w).sum() + u @ u + np.linalg.slogdet(H)[1]


def agq_deviance(codes, theta, X, beta, y, w, offset, family, n_nodes):
    """One scalar random intercept ``theta * u[codes]``: ``-2 log L`` by adaptive Gauss-Hermite
    with ``n_nodes`` nodes per group (``n_nodes = 1`` is the Laplace approximation)."""
    inv, _, _, nll = FAMILIES[family]
    L = int(codes.max()) + 1
    A = np.zeros((len(y), L))
    A[np.arange(len(y)), codes] = theta
    u, W, _ = conditional_mode(A, X, beta, y, w, offset, family)
    h = np.bincount(codes, weights=W * theta * theta, minlength=L) + 1.0  # per-group curvature
    z, wz = np.polynomial.hermite.hermgauss(n_nodes)
    base = offset + X @ beta
    total = 0.0
    for g in range(L):
        rows = codes == g
        s = 1.0 / np.sqrt(h[g])
        terms = []
        for zk, wk in zip(z, wz):
            ug = u[g] + np.sqrt(2.0) * s * zk
            logf = -0.5 * nll(y[rows], inv(base[rows] + theta * ug), w[rows]).sum() - 0.5 * ug * ug
            terms.append(np.log(wk) + zk * zk + logf)
        total += special.logsumexp(terms) + np.log(np.sqrt(2.0) * s) - 0.5 * np.log(2 * np.pi)
    return -2.0 * total
