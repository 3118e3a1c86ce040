"""Fixed pair products (the first stage's fill into the dense tail as ``sum_k w_k P_k``) against
the factorization that multiplies the factor blocks pair by pair, and against a dense Cholesky."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from jaxlmm.kernels import analyze, blocked_cholesky
from jaxlmm.kernels.buckets import pad_inputs, pad_structure
from jaxlmm.kernels.cholesky import blocked_log_diagonal
from jaxlmm.kernels.pairs import fixed_pair_groups, pair_products

from test_kernels import random_blocked

CASES = [
    ((9, 4, 1), (1, 1, 3), 50, None),            # crossed scalar + last stage
    ((11, 4, 6, 1), (1, 1, 1, 2), 60, {1: 0}),   # nested then crossed
    ((30, 12, 7, 1), (1, 1, 1, 2), 200, None),   # two crossed tail stages
    ((25, 9, 5, 1), (1, 2, 1, 2), 150, None),    # a vector tail stage beside a scalar one
]


def _system(theta, s, diag, vals):
    """Scaled diagonal blocks and the scales: stage i < K-1 scaled by theta[i] (its width's
    identity times theta[i]), the last stage unscaled."""
    K = len(s.nlevels)
    scale, dg = [], []
    for i in range(K):
        if i == K - 1:
            scale.append(None)
            dg.append(jnp.asarray(diag[i]))
            continue
        w = s.widths[i]
        S = theta[i] * jnp.eye(w)
        scale.append(S)
        dg.append(jnp.einsum("ba,lbc,cd->lad", S, jnp.asarray(diag[i]), S) + jnp.eye(w))
    return dg, {k: jnp.asarray(v) for k, v in vals.items()}, scale


def _dense(theta, M, nlevels, widths, offs):
    """The matrix :func:`_system` describes, dense: ``D M D`` plus the identity on the scaled
    (random-effects) stages, ``D`` the diagonal of the stage scales (1 on the last stage)."""
    K = len(nlevels)
    d = np.ones(M.shape[0])
    for i in range(K - 1):
        d[offs[i]:offs[i + 1]] = theta[i]
    eye = np.r_[np.ones(offs[K - 1]), np.zeros(M.shape[0] - offs[K - 1])]
    return M * d[:, None] * d[None, :] + np.diag(eye)


@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "padded"])
@pytest.mark.parametrize("nlevels,widths,n,nest", CASES)
def test_fixed_pairs_equal_pairwise_products(nlevels, widths, n, nest, padded):
    rng = np.random.default_rng(sum(nlevels) * 3 + n)
    M, diag, offd, vals, offs = random_blocked(rng, nlevels, widths, n, nest)
    s = analyze(nlevels, widths, offd, panel=False)
    if padded:
        s, layout = pad_structure(s, {k: v.shape[0] for k, v in vals.items()})
        diag, vals = pad_inputs(layout, diag, vals)
    pairs = pair_products(s, vals)
    assert pairs and set(pairs) == set(fixed_pair_groups(s))
    for name, (P, k) in pairs.items():
        assert P.shape == k.shape == s.pa[name].shape
    with jax.enable_x64(True):
        theta = jnp.asarray(rng.uniform(0.3, 1.7, size=len(nlevels) - 1))
        pj = {k: (jnp.asarray(P), jnp.asarray(lv)) for k, (P, lv) in pairs.items()}
        def logdet(th, use):
            dg, of, sc = _system(th, s, diag, vals)
            bd, lead, trail = blocked_log_diagonal(s, dg, of, 1, False, sc, pj if use else None)
            return sum(jnp.sum(b) for b in bd) + lead + 3.0 * trail[0]

        v0, g0 = jax.jit(jax.value_and_grad(lambda t: logdet(t, False)))(theta)
        v1, g1 = jax.jit(jax.value_and_grad(lambda t: logdet(t, True)))(theta)
        np.testing.assert_allclose(float(v1), float(v0), rtol=1e-13)
        np.testing.assert_allclose(np.asarray(g1), np.asarray(g0), rtol=1e-11, atol=1e-12)
        # the factor (tail included) agrees block for block
        dg, of, sc = _system(theta, s, diag, vals)
        f0 = jax.jit(blocked_cholesky)(s, dg, of, sc)
        f1 = jax.jit(blocked_cholesky)(s, dg, of, sc, pj)
        np.testing.assert_allclose(np.asarray(f1.tail), np.asarray(f0.tail), rtol=1e-12, atol=1e-13)
        for a, b in zip(f0.diag, f1.diag):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-13)
        if not padded:
            # and the dense factor of the scaled matrix, the slow obvious way
            L = np.linalg.cholesky(_dense(np.asarray(theta), M, nlevels, widths, offs))
            tail = offs[s.n_bd]
            np.testing.assert_allclose(np.diag(np.asarray(f1.tail)), np.diag(L)[tail:], rtol=1e-10)
            want = np.sum(np.log(np.diag(L))) + 2.0 * np.log(np.diag(L)[-1])
            np.testing.assert_allclose(float(v1), want, rtol=1e-11)
            # the gradient by central differences
            eps = 1e-6
            for i in range(len(theta)):
                e = np.zeros(len(theta))
                e[i] = eps
                lp = np.linalg.cholesky(_dense(np.asarray(theta) + e, M, nlevels, widths, offs))
                lm = np.linalg.cholesky(_dense(np.asarray(theta) - e, M, nlevels, widths, offs))
                fd = (np.sum(np.log(np.diag(lp))) + 2 * np.log(lp[-1, -1])
                      - np.sum(np.log(np.diag(lm))) - 2 * np.log(lm[-1, -1])) / (2 * eps)
                np.testing.assert_allclose(float(g1[i]), fd, rtol=1e-6, atol=1e-7)


def test_groups_with_excluded_or_wide_stages_are_not_fixed():
    rng = np.random.default_rng(5)
    # the last stage is scalar here: excluding it (a response a caller replaces) drops the group
    M, diag, offd, vals, offs = random_blocked(rng, (10, 5, 1), (1, 1, 1), 40)
    s = analyze((10, 5, 1), (1, 1, 1), offd, panel=False)
    assert fixed_pair_groups(s) and not fixed_pair_groups(s, exclude=(2,))
    assert pair_products(s, vals, exclude=(2,)) == {}
    # a vector first stage has no fixed products (its factor blocks mix the stage's columns)
    M, diag, offd, vals, offs = random_blocked(rng, (10, 5, 1), (2, 1, 2), 40)
    s = analyze((10, 5, 1), (2, 1, 2), offd, panel=False)
    assert s.n_bd == 1 and fixed_pair_groups(s) == ()
