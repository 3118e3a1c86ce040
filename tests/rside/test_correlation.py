"""Correlation structures: parameter maps, closed forms against the generic Cholesky path, and
the validation of time columns."""

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import jaxlmm as jl
from jaxlmm.rside.correlation import CorrelationStructure
from jaxlmm.precision import float64

from test_residual import make_data


def packed(structure, df, c=3, seed=0):
    """Pack ``df`` the way jaxlmm.residual does (by group, then time) for one structure."""
    from jaxlmm.terms.design import build_design
    from jaxlmm.gram.blocks import gram_blocks
    from jaxlmm.rside.residual import build_rside, structure_columns

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
    from jaxlmm.rside.correlation import CorMeta

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
    from jaxlmm.rside.correlation import CorMeta

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
    import jaxlmm.rside.residual

    monkeypatch.setattr(jaxlmm.rside.residual, "COMPONENT_BUDGET", 1e9)
    from jaxlmm.terms.design import build_design
    from jaxlmm.gram.blocks import gram_blocks
    from jaxlmm.rside.residual import build_rside, gram_blocks_at, structure_columns, to_device

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


# --- issue 14: sizes bounded by the data, identifiable parameters, starting values -------------


def _largest_array(closed) -> int:
    """Elements of the largest array a program (nested programs included) makes."""
    best = 0

    def walk(jaxpr):
        nonlocal best
        for e in jaxpr.eqns:
            for v in e.outvars:
                best = max(best, int(np.prod(getattr(v.aval, "shape", ()))))
            for p in e.params.values():
                for sub in (p if isinstance(p, (list, tuple)) else [p]):
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns"):
                        walk(inner)

    walk(closed.jaxpr)
    return best


def _rside_model(structure, df, formula="y ~ x", sufficient=True):
    from jaxlmm.terms.design import build_design
    from jaxlmm.lmm.model import LmerModel
    from jaxlmm.rside.residual import build_rside, structure_columns

    design = build_design(formula, df, extra_columns=structure_columns(structure, None), require_random=False)
    model = LmerModel.from_design(design)
    rside = build_rside(design, model.gram, structure, None, sufficient=sufficient)
    return design, LmerModel(design=design, specs=model.specs, gram=model.gram, rside=rside)


@pytest.mark.parametrize("sufficient", [True, False], ids=["components", "rows"])
def test_ar1_arrays_are_sized_by_the_rows_not_the_gaps(sufficient):
    """Occasions 0, 1e9, 2e9, ...: AR(1) builds no table of phi^k up to the largest gap (was
    3e9 entries, 72 GB with its scan); its criterion equals the dense one, phi^|t_s - t_t|
    from numpy, with phi near 1 so that phi^(1e9) is far from 0."""
    import jax

    from jaxlmm.rside.residual import rside_objective
    from test_objective_oracle import dense_objective

    df = make_data(2)
    df["tb"] = (df["t"] - 1) * 10**9
    s = jl.AR1("g", "tb")
    design, model = _rside_model(s, df, sufficient=sufficient)
    assert model.rside.meta.stats is sufficient
    phi = 1.0 - 1e-9
    with float64():
        M = model.arrays(True)
        R = model.rside_arrays()
        x = jnp.asarray([2.0 * np.arctanh(phi)])
        program = jax.make_jaxpr(jax.value_and_grad(rside_objective))(x, M, R)
        assert _largest_array(program) <= 50 * design.n * design.p
        ours = float(rside_objective(x, M, R))
    t = df.loc[design.row_index, "tb"].to_numpy(dtype=float)
    g = df.loc[design.row_index, "g"].to_numpy()
    C = np.where(g[:, None] == g[None, :], phi ** np.abs(t[:, None] - t[None, :]), 0.0)
    assert 0.1 < C[C < 1].max() < 0.9  # correlations neither 0 nor 1
    K = np.linalg.cholesky(C)
    Ki = np.linalg.inv(K)
    dense = dense_objective(Ki @ design.y, Ki @ design.X, np.ones(design.n), [], [], True)
    dense += 2.0 * np.sum(np.log(np.diag(K)))
    # phi itself carries ~1e-7 relative error in 1 - phi: phi^(1e9) is as exact as that allows
    assert ours == pytest.approx(dense, rel=1e-6)


def test_ar1_fit_with_huge_gaps_is_the_fit_on_occasion_numbers():
    """Orthodont with occasions 1e9, 2e9, ...: phi^(1e9) is the fit's phi on occasions 1, 2, ...
    (the same model), in a program whose arrays are sized by the 108 rows."""
    from conftest import load_data

    O = load_data("Orthodont")
    O["occ_e9"] = O["occasion"] * 10**9
    a = jl.gls("distance ~ age * Sex", O, correlation=jl.AR1("Subject", "occasion"))
    b = jl.gls("distance ~ age * Sex", O, correlation=jl.AR1("Subject", "occ_e9"))
    assert b.converged
    assert b.objective == pytest.approx(a.objective, rel=1e-9)
    assert b.correlation_params.iloc[0] ** 1e9 == pytest.approx(a.correlation_params.iloc[0], rel=1e-5)


def test_integer_powers_exact_and_differentiable():
    """phi^k by squaring over the bits of k: numpy's powers for 0, negative phi and k up to 2^40;
    both derivative modes equal k phi^(k-1) (1 for k = 1 at phi = 0, where a logarithm fails)."""
    import jax

    from jaxlmm.rside.correlation import integer_power

    k = np.array([0.0, 1.0, 2.0, 3.0, 10.0, 11.0, 1e9, 2.0**40 + 3])
    with float64():
        for phi in (0.0, -0.5, 0.7, -0.999, 1.0 - 1e-9):
            got = np.asarray(integer_power(jnp.asarray(phi), jnp.asarray(k), 41))
            np.testing.assert_allclose(got, np.float64(phi) ** k, rtol=1e-6 if phi > 0.99 else 1e-13, atol=0)
            for kk in (1.0, 2.0, 3.0, 10.0):
                f = lambda p: integer_power(p, jnp.asarray(kk), 4)  # noqa: E731
                want = kk * phi ** (kk - 1)
                assert float(jax.grad(f)(jnp.asarray(phi))) == pytest.approx(want, abs=1e-12)
                assert float(jax.jacfwd(f)(jnp.asarray(phi))) == pytest.approx(want, abs=1e-12)
                h = float(jax.jacfwd(jax.grad(f))(jnp.asarray(phi)))
                assert h == pytest.approx(kk * (kk - 1) * phi ** max(kk - 2, 0) if kk >= 2 else 0.0, abs=1e-10)


def test_ar1_times_beyond_exact_integers():
    df = make_data(0)
    df["tb"] = df["t"] * 1e17
    with pytest.raises(jl.DataError, match=r"'tb' has values as large as .*beyond 2\^53"):
        fit_bad(jl.AR1("g", "tb"), df)


def test_toeplitz_lags_never_observed_are_refused():
    """Occasions 10, 20, 30: lag 1..9 never occur (was 29 correlations, 20 of them without any
    information); times x 1e9 would have been 5e9 parameters. Refused before any work, naming
    the lag and the spacing."""
    df = make_data(0)
    df["t10"] = df["t"] * 10
    with pytest.raises(jl.DataError, match=r"lag 1 never occurs .*multiples of 10.*divide 't10' by 10"):
        fit_bad(jl.Toeplitz("g", "t10"), df)
    df["tb"] = df["t"] * 10**9
    with pytest.raises(jl.DataError, match=r"largest lag of 'tb' .* is 5000000000, but lag 1 never occurs"):
        fit_bad(jl.Toeplitz("g", "tb"), df)
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"g": np.repeat(np.arange(5), 3), "t": np.tile([1, 2, 6], 5)})  # lags 1, 4, 5
    df["x"], df["y"] = rng.normal(size=15), rng.normal(size=15)
    with pytest.raises(jl.DataError, match=r"is 5, but lag 2 never occurs \(2 of the 5 lags do not\), so the "
                                           r"data carry no information on its correlation\. Use AR1"):
        fit_bad(jl.Toeplitz("g", "t"), df)


def test_unstructured_pairs_never_observed_together_are_refused():
    """Occasions 1, 2 in some groups and 3, 4 in others: the correlation of (1, 3) has no
    information (was estimated anyway)."""
    rng = np.random.default_rng(0)
    rows = [(f"a{g}", t) for g in range(6) for t in (1, 2)] + [(f"b{g}", t) for g in range(6) for t in (3, 4)]
    df = pd.DataFrame(rows, columns=["g", "t"])
    df["x"] = rng.normal(size=len(df))
    df["y"] = rng.normal(size=len(df))
    with pytest.raises(jl.DataError, match=r"occasions 1 and 3 of 't' are never observed in the same group "
                                           r"of 'g' \(4 of the 6 pairs.*AR1\('g', 't'\)"):
        fit_bad(jl.Unstructured("g", "t"), df)


def test_unstructured_with_too_many_occasions_is_refused_when_built():
    """108 occasions (5,778 correlations: the program hung for over 10 minutes at 8 GB) are refused
    when the structure is prepared, with the alternatives."""
    n = 108
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"g": np.repeat(np.arange(3), n), "t": np.tile(np.arange(n), 3)})
    df["x"] = rng.normal(size=len(df))
    df["y"] = rng.normal(size=len(df))
    with pytest.raises(jl.DataError, match=r"'t' has 108 occasions, so an unstructured correlation would "
                                           r"have 5778 parameters.*AR1\('g', 't'\), Toeplitz"):
        _rside_model(jl.Unstructured("g", "t"), df)


@pytest.mark.parametrize("cls", [jl.Unstructured, jl.Toeplitz])
def test_correlation_maps_are_a_few_operations_whatever_the_size(cls):
    """The parameter maps are vectorised or a loop: the same program size for 5 and 30 occasions
    (the unrolled double loops grew as n^2: ~3,000 scatters at 30 occasions); the values equal the
    defining recursions written out in numpy."""
    import jax

    from jaxlmm.rside.correlation import CorMeta

    def program(n):
        k = n * (n - 1) // 2 if cls is jl.Unstructured else n - 1
        meta = CorMeta(k, ("c",) * k, n if cls is jl.Unstructured else n - 1)
        with float64():
            return jax.make_jaxpr(jax.value_and_grad(lambda u: jnp.sum(cls("g", "t").natural(u, meta) ** 2)))(
                jnp.zeros(k))

    def size(closed):
        from test_program_size import n_equations

        return n_equations(closed)

    assert size(program(30)) <= size(program(5)) + 5
    n = 6
    rng = np.random.default_rng(4)
    with float64():
        if cls is jl.Unstructured:
            z = np.tanh(rng.normal(size=n * (n - 1) // 2))
            from jaxlmm.rside.correlation_matrices import corr_from_cpc

            got = np.asarray(corr_from_cpc(jnp.asarray(z), n))
            L = np.zeros((n, n))
            L[0, 0], k = 1.0, 0
            for i in range(1, n):
                rest = 1.0
                for j in range(i):
                    L[i, j] = z[k] * np.sqrt(rest)
                    rest -= L[i, j] ** 2
                    k += 1
                L[i, i] = np.sqrt(rest)
            np.testing.assert_allclose(got, L @ L.T, rtol=1e-13, atol=1e-15)
        else:
            u = rng.normal(size=n - 1)
            got = np.asarray(cls("g", "t").natural(jnp.asarray(u), CorMeta(n - 1, ("c",) * (n - 1), n - 1)))
            pac = np.tanh(u)
            rho, phi = [pac[0]], [pac[0]]
            for k in range(2, n):
                pk = pac[k - 1]
                num = sum(phi[j] * rho[k - 2 - j] for j in range(k - 1))
                den = 1.0 - sum(phi[j] * rho[j] for j in range(k - 1))
                rho.append(pk * den + num)
                phi = [phi[j] - pk * phi[k - 2 - j] for j in range(k - 1)] + [pk]
            np.testing.assert_allclose(got, rho, rtol=1e-13, atol=1e-15)
