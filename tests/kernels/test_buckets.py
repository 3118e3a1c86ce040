"""Padded structures (shape buckets) against the unpadded factorization: the padding must
contribute nothing, so the factor cut back to the real layout agrees to rounding."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from jaxlmm.kernels import analyze, blocked_cholesky, solve_lower_transpose
from jaxlmm.kernels.buckets import bucket, level_bucket, pad_inputs, pad_structure, unpad_factor, unpad_solution
from jaxlmm.kernels.cholesky import blocked_log_diagonal

from test_kernels import CASES, random_blocked


def test_bucket_sizes_are_few_and_always_leave_a_slot():
    sizes = {bucket(n) for n in range(1, 4097)}
    assert len(sizes) <= 8 + 8 * 9  # 8 per octave above 8 (4097 = 2**12 + 1)
    for n in [0, 1, 7, 8, 15, 16, 17, 100, 1000, 12345]:
        b = bucket(n)
        assert b >= n + 1 and b <= max(n + 1, 1.125 * (n + 1) + 1)
    # sizes in one bucket share it
    assert bucket(1100) == bucket(1110) and level_bucket(18) == level_bucket(19) == 20
    assert level_bucket(1128) == level_bucket(1140) < 1.07 * 1128


def _padded(s, diag, vals):
    sp, layout = pad_structure(s, {k: v.shape[0] for k, v in vals.items()})
    d, o = pad_inputs(layout, diag, vals, identity=True)
    return sp, layout, d, o


@pytest.mark.parametrize("panel", [False, True], ids=["pairs", "panel"])
@pytest.mark.parametrize("nlevels,widths,n,nest", [CASES[i] for i in (1, 3, 4, 5)])
def test_padded_factor_equals_unpadded(nlevels, widths, n, nest, panel):
    rng = np.random.default_rng(sum(nlevels) + n + 7)
    M, diag, offd, vals, offs = random_blocked(rng, nlevels, widths, n, nest)
    s = analyze(nlevels, widths, offd, panel=panel)
    sp, layout, dp, op = _padded(s, diag, vals)
    assert sp.m > s.m or s.n_bd == len(nlevels) - 1 and sp.m == s.m
    assert all(a > b for a, b in zip(sp.nlevels[:-1], s.nlevels[:-1]))
    with jax.enable_x64(True):
        f0 = jax.jit(blocked_cholesky)(s, [jnp.asarray(d) for d in diag], {k: jnp.asarray(v) for k, v in vals.items()})
        f1 = jax.jit(blocked_cholesky)(sp, [jnp.asarray(d) for d in dp], {k: jnp.asarray(v) for k, v in op.items()})
        d1, o1, t1 = unpad_factor(layout, f1.diag, f1.off, f1.tail)
        for a, b in zip(f0.diag, d1):
            np.testing.assert_allclose(b, np.asarray(a), rtol=1e-13, atol=1e-14)
        for k in f0.off:
            np.testing.assert_allclose(o1[k], np.asarray(f0.off[k]), rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(t1, np.asarray(f0.tail), rtol=1e-12, atol=1e-13)
        # the padded rows of the tail are the identity, and nothing couples them to the real rows
        T = np.asarray(f1.tail)
        pad = np.setdiff1d(np.arange(sp.m), layout.tail_index)
        np.testing.assert_array_equal(T[np.ix_(pad, pad)], np.eye(len(pad)))
        assert not np.any(T[np.ix_(layout.tail_index, pad)]) and not np.any(T[np.ix_(pad, layout.tail_index)])
        # log-diagonals (the objective's input) sum to the same numbers
        bd0, lead0, tr0 = blocked_log_diagonal(s, [jnp.asarray(d) for d in diag],
                                               {k: jnp.asarray(v) for k, v in vals.items()}, 2)
        bd1, lead1, tr1 = blocked_log_diagonal(sp, [jnp.asarray(d) for d in dp],
                                               {k: jnp.asarray(v) for k, v in op.items()}, 2)
        tot0 = sum(float(jnp.sum(b)) for b in bd0) + float(lead0)
        tot1 = sum(float(jnp.sum(b)) for b in bd1) + float(lead1)
        np.testing.assert_allclose(tot1, tot0, rtol=1e-13)
        np.testing.assert_allclose(np.asarray(tr1), np.asarray(tr0), rtol=1e-13)
        # back-solve through the padded factor, cut back
        b = rng.normal(size=M.shape[0])
        b_bd = [b[offs[j]:offs[j + 1]].reshape(nlevels[j], widths[j]) for j in range(s.n_bd)]
        b_bd_p = [np.concatenate([x, np.zeros((n_ - x.shape[0], x.shape[1]))]) for x, n_ in zip(b_bd, sp.nlevels)]
        b_t = np.zeros(sp.m)
        b_t[layout.tail_index] = b[offs[s.n_bd]:]
        x_bd, x_t = solve_lower_transpose(sp, f1, [jnp.asarray(x) for x in b_bd_p], jnp.asarray(b_t))
        x_bd, x_t = unpad_solution(layout, x_bd, x_t)
        x = np.concatenate([np.asarray(v).ravel() for v in x_bd] + [x_t])
        np.testing.assert_allclose(x, np.linalg.solve(np.linalg.cholesky(M).T, b), rtol=1e-9, atol=1e-10)


def test_patterns_in_one_bucket_share_the_padded_shapes():
    """Two random patterns of one structure whose sizes fall in the same buckets give padded
    structures with identical static data and array shapes: one compiled program."""
    def padded(seed, n):
        rng = np.random.default_rng(seed)
        _, diag, offd, vals, _ = random_blocked(rng, (40, 12, 1), (1, 1, 2), n)
        s = analyze((40, 12, 1), (1, 1, 2), offd, panel=False)
        return _padded(s, diag, vals)[0]
    a, b = padded(1, 300), padded(2, 300)
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb
    assert [x.shape for x in la] == [x.shape for x in lb]
