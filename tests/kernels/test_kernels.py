"""The blocked kernels against dense linear algebra on random Gram-like matrices."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from jaxlmm.kernels import (
    analyze,
    blocked_cholesky,
    diagonal_blocks_of_inverse,
    small_cholesky,
    solve_lower,
    solve_lower_transpose,
)
from jaxlmm.kernels.structure import key_name


def random_blocked(rng, nlevels, widths, n, nest=None):
    """Gram matrix of n random rows; stage codes random, or nested: code_i = f(code_parent)."""
    K = len(nlevels)
    codes = []
    for i in range(K):
        if nest and nest.get(i) is not None:
            parent = nest[i]
            mapping = rng.integers(0, nlevels[i], size=nlevels[parent])
            mapping[: nlevels[i]] = np.arange(nlevels[i])
            codes.append(mapping[codes[parent]])
        else:
            c = rng.integers(0, nlevels[i], size=n)
            c[: nlevels[i]] = np.arange(nlevels[i])
            codes.append(c)
    cols = [rng.normal(size=(n, w)) for w in widths]
    offs = np.concatenate([[0], np.cumsum([l * w for l, w in zip(nlevels, widths)])])
    Z = np.zeros((n, offs[-1]))
    for i in range(K):
        for a in range(widths[i]):
            Z[np.arange(n), offs[i] + codes[i] * widths[i] + a] = cols[i][:, a]
    M = Z.T @ Z + np.eye(offs[-1])
    diag = [
        np.stack([M[offs[i] + r * widths[i]: offs[i] + (r + 1) * widths[i],
                    offs[i] + r * widths[i]: offs[i] + (r + 1) * widths[i]] for r in range(nlevels[i])])
        for i in range(K)
    ]
    offd, vals = {}, {}
    for i in range(K):
        for j in range(i):
            keys = np.unique(codes[j] * nlevels[i] + codes[i])
            r, c = keys % nlevels[i], keys // nlevels[i]
            offd[(i, j)] = (r, c)
            vals[key_name(i, j)] = np.stack([
                M[offs[i] + rr * widths[i]: offs[i] + (rr + 1) * widths[i],
                  offs[j] + cc * widths[j]: offs[j] + (cc + 1) * widths[j]] for rr, cc in zip(r, c)])
    return M, diag, offd, vals, offs


CASES = [
    ((7,), (2,), 40, None),
    ((9, 4, 1), (1, 1, 3), 50, None),          # crossed + last stage
    ((12, 5, 1), (2, 1, 2), 60, {1: 0}),       # nested: stage 1 a function of stage 0
    ((10, 4, 3, 1), (1, 2, 1, 2), 70, {1: 0, 2: 1}),  # three-level nesting
    ((8, 6, 3, 1), (3, 1, 2, 4), 80, None),    # crossed, wide blocks
    ((11, 4, 6, 1), (1, 1, 1, 2), 60, {1: 0}),  # nested then crossed
]


@pytest.mark.parametrize("panel", [False, True], ids=["pairs", "panel"])
@pytest.mark.parametrize("nlevels,widths,n,nest", CASES)
def test_blocked_cholesky_matches_dense(nlevels, widths, n, nest, panel):
    """Both ways of updating the dense tail: scattered pair products and the dense panel."""
    rng = np.random.default_rng(sum(nlevels) + n)
    M, diag, offd, vals, offs = random_blocked(rng, nlevels, widths, n, nest)
    s = analyze(nlevels, widths, offd, panel=panel)
    if panel and s.n_bd:
        assert s.panel_stages and not s.dense_groups
    if nest and nest.get(1) == 0:
        assert s.n_bd >= 2  # nested stage kept block diagonal
    with jax.enable_x64(True):
        f = jax.jit(blocked_cholesky)(s, [jnp.asarray(d) for d in diag],
                                      {k: jnp.asarray(v) for k, v in vals.items()})
        Ld = np.linalg.cholesky(M)
        # log-determinant per stage matches the dense factor's diagonal
        for j in range(s.n_bd):
            got = np.log(np.diagonal(np.asarray(f.diag[j]), axis1=1, axis2=2)).ravel()
            np.testing.assert_allclose(got, np.log(np.diag(Ld)[offs[j]:offs[j + 1]]), rtol=1e-10)
        np.testing.assert_allclose(np.log(np.diag(np.asarray(f.tail))),
                                   np.log(np.diag(Ld)[offs[s.n_bd]:]), rtol=1e-10, atol=1e-12)
        # back-solve L' x = b
        b = rng.normal(size=M.shape[0])
        b_bd = [jnp.asarray(b[offs[j]:offs[j + 1]].reshape(nlevels[j], widths[j])) for j in range(s.n_bd)]
        x_bd, x_t = solve_lower_transpose(s, f, b_bd, jnp.asarray(b[offs[s.n_bd]:]))
        x = np.concatenate([np.asarray(v).ravel() for v in x_bd] + [np.asarray(x_t)])
        np.testing.assert_allclose(x, np.linalg.solve(Ld.T, b), rtol=1e-9, atol=1e-10)
        # forward substitution L y = b
        y_bd, y_t = solve_lower(s, f, b_bd, jnp.asarray(b[offs[s.n_bd]:]))
        y = np.concatenate([np.asarray(v).ravel() for v in y_bd] + [np.asarray(y_t)])
        np.testing.assert_allclose(y, np.linalg.solve(Ld, b), rtol=1e-9, atol=1e-10)
        # selected inverse of the leading K-1 stages
        Kk = len(nlevels) - 1
        if Kk >= 1:
            sel = diagonal_blocks_of_inverse(
                s, [np.asarray(d) for d in f.diag], {k: np.asarray(v) for k, v in f.off.items()},
                np.asarray(f.tail), n_keep=Kk)
            Minv = np.linalg.inv(M[: offs[Kk], : offs[Kk]])
            for i in range(Kk):
                for r in range(nlevels[i]):
                    a = offs[i] + r * widths[i]
                    np.testing.assert_allclose(sel[i][r], Minv[a:a + widths[i], a:a + widths[i]],
                                               rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("p", [1, 2, 3, 5, 8])
def test_small_cholesky(p):
    rng = np.random.default_rng(p)
    a = rng.normal(size=(6, p, p))
    a = a @ np.swapaxes(a, 1, 2) + p * np.eye(p)
    with jax.enable_x64(True):
        L = np.asarray(small_cholesky(jnp.asarray(a)))
    np.testing.assert_allclose(L, np.linalg.cholesky(a), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("p", [3, 8])
def test_small_right_solve_gradient_with_broadcast_batch(p):
    """``X L^{-T}`` and its reverse-mode derivative, unrolled (p <= 6) and through LAPACK's
    batched triangular solve (p > 6, where the batch dimensions must be explicit)."""
    from jaxlmm.kernels.small import small_right_solve_lt

    rng = np.random.default_rng(p)
    a = rng.normal(size=(4, p, p))
    L = np.linalg.cholesky(a @ np.swapaxes(a, 1, 2) + p * np.eye(p))
    X = rng.normal(size=(4, 3, p))
    with jax.enable_x64(True):
        Y = np.asarray(small_right_solve_lt(jnp.asarray(L), jnp.asarray(X)))
        g = jax.grad(lambda l: jnp.sum(small_right_solve_lt(l, jnp.asarray(X)) ** 2))(jnp.asarray(L))
        h = 1e-6
        E = np.zeros_like(L)
        E[1, p - 1, 0] = h
        f = lambda l: float(jnp.sum(small_right_solve_lt(jnp.asarray(l), jnp.asarray(X)) ** 2))
        fd = (f(L + E) - f(L - E)) / (2 * h)
    np.testing.assert_allclose(Y, np.linalg.solve(L[:, None], X[..., None])[..., 0], rtol=1e-10)
    assert float(g[1, p - 1, 0]) == pytest.approx(fd, rel=1e-6)


def test_automatic_tail_update_choice(monkeypatch):
    """Without ``panel=``, a stage whose pair products would exceed the memory cap uses the panel;
    cheap pairs stay pairs."""
    import jaxlmm.kernels.structure as structure

    rng = np.random.default_rng(3)
    nlevels, widths = (9, 4, 1), (1, 1, 3)
    _, _, offd, _, _ = random_blocked(rng, nlevels, widths, 50)
    monkeypatch.setattr(structure, "PANEL_FLOPS_PER_ENTRY", 0.0)
    assert analyze(nlevels, widths, offd).panel_stages == ()
    monkeypatch.setattr(structure, "PAIRS_MAX_ENTRIES", 10)
    s = analyze(nlevels, widths, offd)
    assert s.panel_stages == (0,) and not s.dense_groups


@pytest.mark.parametrize("panel", [False, True], ids=["pairs", "panel"])
@pytest.mark.parametrize("nlevels,widths,n,nest", CASES)
def test_scaled_off_diagonal_blocks(nlevels, widths, n, nest, panel):
    """``scale``: the off-diagonal blocks are ``S_i' B_ij S_j`` (scaled in the dense tail at
    once): the factor of ``D'(M - I)D + I`` (``D`` block diagonal of the scales), the same as
    scaling every block first, in value and gradient."""
    from jaxlmm.kernels.cholesky import blocked_log_diagonal

    rng = np.random.default_rng(sum(nlevels) + 7 * n)
    M, diag, offd, vals, offs = random_blocked(rng, nlevels, widths, n, nest)
    s = analyze(nlevels, widths, offd, panel=panel)
    scales = [0.4 * rng.normal(size=(w, w)) + np.eye(w) for w in widths[:-1]] + [None]

    def blocks(S):
        off = {}
        for name, v in vals.items():
            i, j = map(int, name.split(","))
            if S[i] is not None:
                v = jnp.einsum("ba,kbc->kac", S[i], v)
            if S[j] is not None:
                v = jnp.einsum("kac,cd->kad", v, S[j])
            off[name] = v
        return off

    def diagonal(S):
        return [jnp.asarray(d) if Si is None else
                jnp.einsum("ba,lbc,cd->lad", Si, d - np.eye(d.shape[-1]), Si) + jnp.eye(d.shape[-1])
                for d, Si in zip(diag, S)]

    def total(parts):
        bd, lead, trail = parts
        return sum(jnp.sum(b) for b in bd) + lead + jnp.sum(trail)

    with jax.enable_x64(True):
        raw = {k: jnp.asarray(v) for k, v in vals.items()}
        S = [None if x is None else jnp.asarray(x) for x in scales]
        # compiled: op by op, the reverse pass over the blocked factor took 20-40 s a case
        a, ga = jax.jit(jax.value_and_grad(lambda S: total(blocked_log_diagonal(s, diagonal(S), blocks(S), 1))))(S)
        b, gb = jax.jit(jax.value_and_grad(lambda S: total(blocked_log_diagonal(s, diagonal(S), raw, 1, scale=S))))(S)
        f1 = jax.jit(lambda S: blocked_cholesky(s, diagonal(S), blocks(S)))(S)
        f2 = jax.jit(lambda S: blocked_cholesky(s, diagonal(S), raw, S))(S)
    assert float(a) == pytest.approx(float(b), rel=1e-12)
    for x, y in zip(ga[:-1], gb[:-1]):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(np.asarray(f2.tail), np.asarray(f1.tail), rtol=1e-11, atol=1e-12)
    for k in f1.off:
        np.testing.assert_allclose(np.asarray(f2.off[k]), np.asarray(f1.off[k]), rtol=1e-11, atol=1e-12)
    D = np.zeros_like(M)
    for i, Si in enumerate(scales):
        for r in range(nlevels[i]):
            a0 = offs[i] + r * widths[i]
            D[a0:a0 + widths[i], a0:a0 + widths[i]] = np.eye(widths[i]) if Si is None else Si
    Ld = np.linalg.cholesky(D.T @ (M - np.eye(len(M))) @ D + np.eye(len(M)))
    np.testing.assert_allclose(np.log(np.diag(np.asarray(f2.tail))), np.log(np.diag(Ld)[offs[s.n_bd]:]),
                               rtol=1e-10, atol=1e-12)
    for j in range(s.n_bd):
        got = np.log(np.diagonal(np.asarray(f2.diag[j]), axis1=1, axis2=2)).ravel()
        np.testing.assert_allclose(got, np.log(np.diag(Ld)[offs[j]:offs[j + 1]]), rtol=1e-10)
