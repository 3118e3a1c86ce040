"""Correlation structures: parameter maps, closed forms against the generic Cholesky path, and
the validation of time columns."""

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import jaxlmm as jl
from jaxlmm.correlation import CorrelationStructure
from jaxlmm.precision import float64

from test_residual import make_data


def packed(structure, df, c=3, seed=0):
    """Pack ``df`` the way jaxlmm.residual does (by group, then time) for one structure."""
    from jaxlmm.design import build_design
    from jaxlmm.gram import gram_blocks
    from jaxlmm.residual import build_rside, structure_columns

    design = build_design("y ~ x", df, extra_columns=structure_columns(structure, None), require_random=False)
    R = build_rside(design, gram_blocks(design), structure, None, sufficient=False)
    B = np.random.default_rng(seed).normal(size=R.A.shape[:2] + (c,))
    mask = np.zeros(R.A.shape[0] * R.A.shape[1], bool)
    mask[R.slot] = True
    return R, B * mask.reshape(R.A.shape[:2])[..., None]


@pytest.mark.parametrize("structure", [jl.AR1("g", "t"), jl.Exponential("g", "tc"), jl.CompoundSymmetry("g"),
                                       jl.Unstructured("g", "t"), jl.Toeplitz("g", "t")], ids=repr)
def test_closed_forms_match_cholesky(structure):
    """Each structure's gram/whiten equals the generic batched Cholesky of its matrices."""
    df = make_data(3)
    R, B = packed(structure, df)
    meta = R.meta.cor_meta
    with float64():
        u = jnp.asarray(np.linspace(-0.7, 0.9, meta.n_params))
        nat = structure.natural(u, meta)
        Gm, ld = structure.gram(nat, jnp.asarray(B), meta, R.cor)
        Gg, ldg = CorrelationStructure.gram(structure, nat, jnp.asarray(B), meta, R.cor)
        C = np.asarray(structure.matrices(nat, meta, R.cor))
    np.testing.assert_allclose(np.asarray(Gm), np.asarray(Gg), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(np.asarray(ld), np.asarray(ldg), rtol=1e-10, atol=1e-10)
    assert np.all(np.linalg.eigvalsh(C) > 0)
    # padded slots carry identity rows
    np.testing.assert_allclose(np.diagonal(C, axis1=1, axis2=2), 1.0)


@pytest.mark.parametrize("cls,n", [(jl.Unstructured, 5), (jl.Toeplitz, 6)])
def test_unconstrained_maps_give_valid_correlations(cls, n):
    """Any unconstrained vector gives a positive definite correlation matrix; zero gives identity."""
    from jaxlmm.correlation import CorMeta

    s = cls("g", "t")
    k = n * (n - 1) // 2 if cls is jl.Unstructured else n - 1
    meta = CorMeta(k, tuple(map(str, range(k))), n if cls is jl.Unstructured else n - 1)
    rng = np.random.default_rng(1)
    with float64():
        for scale in (0.0, 1.0, 3.0):
            nat = s.natural(jnp.asarray(rng.normal(scale=scale, size=k) if scale else np.zeros(k)), meta)
            if cls is jl.Unstructured:
                M = np.asarray(s._full(nat, meta))
            else:
                lag = np.abs(np.subtract.outer(np.arange(n), np.arange(n)))
                M = np.r_[1.0, np.asarray(nat)][lag]
            assert np.all(np.linalg.eigvalsh(M) > 0)
            if scale == 0.0:
                np.testing.assert_allclose(M, np.eye(n), atol=1e-15)


def test_toeplitz_partial_autocorrelations():
    """Durbin–Levinson: the last coefficient of the order-k prediction equals tanh(u_k)."""
    from jaxlmm.correlation import CorMeta

    u = np.array([0.4, -0.6, 0.3, 0.2])
    with float64():
        rho = np.asarray(jl.Toeplitz("g", "t").natural(jnp.asarray(u), CorMeta(4, ("a",) * 4, 4)))
    r = np.r_[1.0, rho]
    for k in range(1, 5):
        Rm = r[np.abs(np.subtract.outer(np.arange(k), np.arange(k)))]
        phi = np.linalg.solve(Rm, r[1 : k + 1])
        assert phi[-1] == pytest.approx(np.tanh(u[k - 1]), abs=1e-12)


def test_ar1_negative_phi_and_gaps():
    """phi < 0 with a gap of 2: the correlation is phi^2 > 0, not phi."""
    df = pd.DataFrame({"g": ["a"] * 3 + ["b"] * 2, "t": [1, 3, 4, 1, 2], "x": np.arange(5.0), "y": np.arange(5.0)})
    s = jl.AR1("g", "t")
    R, _ = packed(s, df)
    with float64():
        C = np.asarray(s.matrices(jnp.asarray([-0.5]), R.meta.cor_meta, R.cor))
    np.testing.assert_allclose(C[0, :3, :3], [[1, 0.25, -0.125], [0.25, 1, -0.5], [-0.125, -0.5, 1]])


def fit_bad(structure, df=None, variance=None):
    df = make_data(0) if df is None else df
    return jl.gls("y ~ x", df, correlation=structure, variance=variance)


def test_duplicate_times_in_a_group():
    df = make_data(0)
    df.loc[df.index[df["g"] == "s0"][:2], "t"] = 3
    for s in (jl.AR1("g", "t"), jl.Unstructured("g", "t"), jl.Toeplitz("g", "t")):
        with pytest.raises(jl.DataError, match=r"duplicate values inside a group \(group 's0'"):
            fit_bad(s, df)


def test_non_integer_occasions_for_ar1():
    df = make_data(0)
    with pytest.raises(jl.DataError, match="'tc' must hold integer occasions.*Exponential"):
        fit_bad(jl.AR1("g", "tc"), df)
    with pytest.raises(jl.DataError, match="integer occasions"):
        fit_bad(jl.Toeplitz("g", "tc"), df)


def test_missing_group_or_time_column():
    with pytest.raises(jl.DataError, match="unknown column 'subject'.*correlation AR1"):
        fit_bad(jl.AR1("subject", "t"))
    with pytest.raises(jl.DataError, match="unknown column 'time'"):
        fit_bad(jl.Exponential("g", "time"))


def test_bad_structure_arguments():
    with pytest.raises(jl.ArgumentError, match="correlation must be one of"):
        fit_bad("ar1")
    with pytest.raises(jl.ArgumentError, match="non-empty strings"):
        jl.AR1("g", 3)
    with pytest.raises(jl.ArgumentError, match="only the group"):
        jl.CompoundSymmetry("g", "t")
    df = make_data(0)
    df["tt"] = "x"
    with pytest.raises(jl.DataError, match="time column 'tt' must be numeric"):
        fit_bad(jl.AR1("g", "tt"), df)


def test_compound_symmetry_needs_a_group_with_two_rows():
    df = make_data(0).drop_duplicates("g")
    with pytest.raises(jl.DataError, match="single row"):
        fit_bad(jl.CompoundSymmetry("g"), df)


def test_correlation_groups_must_nest_in_random_factors():
    df = make_data(0)
    with pytest.raises(jl.ArgumentError, match="must be nested in the random-effects grouping factor 'g'"):
        jl.lmer("y ~ x + (1 | g)", df, correlation=jl.AR1("cohort", "t"))


@pytest.mark.parametrize("structure", [jl.AR1("g", "t"), jl.Exponential("g", "t"), jl.CompoundSymmetry("g")], ids=repr)
@pytest.mark.parametrize("bars", ["", " + (1 + x | g)", " + (1 | cohort) + (1 | g)"])
def test_sufficient_statistics_match_rows(structure, bars, monkeypatch):
    """The once-reduced statistics give the same Gram blocks as whitening the rows."""
    import jaxlmm.residual

    monkeypatch.setattr(jaxlmm.residual, "COMPONENT_BUDGET", 1e9)
    from jaxlmm.design import build_design
    from jaxlmm.gram import gram_blocks
    from jaxlmm.residual import build_rside, gram_blocks_at, structure_columns, to_device

    df = make_data(4, n_groups=30)
    design = build_design("y ~ x" + bars, df, weights="w", extra_columns=structure_columns(structure, None),
                          require_random=False)
    gram = gram_blocks(design)
    rows = build_rside(design, gram, structure, None, sufficient=False)
    stats = build_rside(design, gram, structure, None)
    assert stats.meta.stats and not rows.meta.stats
    with float64():
        nat = jnp.asarray([0.6 if not isinstance(structure, jl.Exponential) else 1.7])
        a = gram_blocks_at(nat, to_device(rows))
        b = gram_blocks_at(nat, to_device(stats))
    for x, y in zip(jax_leaves(a), jax_leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-11, atol=1e-11)


def jax_leaves(tree):
    import jax

    return jax.tree_util.tree_leaves(tree)


def test_unstructured_occasions_may_be_labels():
    """String occasions are numbered in sorted order: the same fit as their numeric codes."""
    from jaxlmm import datasets

    df = datasets.load("orthodont")
    df["tl"] = df["occasion"].map(lambda v: f"visit{v}")
    a = jl.gls("distance ~ age", df, correlation=jl.Unstructured("Subject", "occasion"))
    b = jl.gls("distance ~ age", df, correlation=jl.Unstructured("Subject", "tl"))
    assert a.converged and b.converged
    assert a.objective == pytest.approx(b.objective, rel=1e-10)
    assert list(b.correlation_params.index)[:2] == ["cor(1,2)", "cor(1,3)"]
