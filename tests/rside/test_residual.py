"""The R-side objective against the dense-V likelihood computed the slow, obvious way.

``V0 = Z Lambda Lambda' Z' + D C D`` (n x n) with ``C`` built pair by pair from each structure's
definition (rows of one group; 0 across groups) and ``D = diag(s_i / sqrt(w_i))`` from the
variance function; then the profiled criterion as in ``test_objective_oracle``. Generated
problems have unbalanced groups, missed occasions (gaps), shuffled rows, weights, random
intercepts and slopes on the correlation group or on an outer factor it is nested in, and no
random effects at all (gls).
"""

import numpy as np
import pandas as pd
import pytest
import jax.numpy as jnp

import jaxlmm as jl
from jaxlmm.covariance.templates import templates_np
from jaxlmm.terms.design import build_design
from jaxlmm.lmm.model import LmerModel
from jaxlmm.lmm.objective import objective
from jaxlmm.precision import float64
from jaxlmm.rside.residual import arrays_at, structure_columns

from test_objective_oracle import dense_objective


def make_data(seed, n_groups=7, max_t=6):
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(n_groups):
        m = int(rng.integers(1, max_t + 1)) if g else max_t  # one group sees every occasion
        times = np.sort(rng.choice(max_t, size=m, replace=False))  # gaps where occasions are missed
        for t in times:
            rows.append((f"s{g}", f"c{g % 3}", int(t) + 1))
    df = pd.DataFrame(rows, columns=["g", "cohort", "t"])
    n = len(df)
    df["tc"] = df["t"] * 0.7 + rng.uniform(0, 0.3, size=n)  # continuous time, increasing
    df["x"] = rng.normal(size=n)
    df["v"] = rng.uniform(0.5, 3.0, size=n)
    df["stratum"] = rng.choice(["a", "b", "c"], size=n)
    df["w"] = rng.uniform(0.3, 3.0, size=n)
    df["y"] = rng.normal(size=n) + df["x"]
    return df.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # rows need not be sorted


def dense_corr(structure, nat, df):
    n = len(df)
    C = np.eye(n)
    g = df[structure.group].to_numpy()
    for i in range(n):
        for j in range(n):
            if i == j or g[i] != g[j]:
                continue
            if isinstance(structure, jl.CompoundSymmetry):
                C[i, j] = nat[0]
                continue
            ti, tj = df[structure.time].iloc[i], df[structure.time].iloc[j]
            if isinstance(structure, jl.AR1):
                C[i, j] = nat[0] ** abs(ti - tj)
            elif isinstance(structure, jl.Exponential):
                C[i, j] = np.exp(-abs(ti - tj) / nat[0])
            elif isinstance(structure, jl.Toeplitz):
                C[i, j] = nat[int(abs(ti - tj)) - 1]
            elif isinstance(structure, jl.Unstructured):
                occ = np.unique(df[structure.time])
                a, b = sorted((int(np.searchsorted(occ, ti)), int(np.searchsorted(occ, tj))))
                k = len(occ)
                pairs = [(r, c) for r in range(k) for c in range(r + 1, k)]
                C[i, j] = nat[pairs.index((a, b))]
    return C


def dense_sd(variance, nat, df):
    if variance is None:
        return np.ones(len(df))
    if isinstance(variance, jl.VarIdent):
        levels = sorted(df[variance.by].unique())
        ratio = dict(zip(levels, np.r_[1.0, nat]))
        return df[variance.by].map(ratio).to_numpy()
    v = df[variance.column].to_numpy()
    if isinstance(variance, jl.VarPower):
        return np.abs(v) ** nat[0]
    return np.exp(nat[0] * v)


STRUCTURES = {
    "ar1": lambda: jl.AR1("g", "t"),
    "exp": lambda: jl.Exponential("g", "tc"),
    "cs": lambda: jl.CompoundSymmetry("g"),
    "un": lambda: jl.Unstructured("g", "t"),
    "toep": lambda: jl.Toeplitz("g", "t"),
    "none": lambda: None,
}
VARIANCES = {"none": lambda: None, "ident": lambda: jl.VarIdent("stratum"),
             "power": lambda: jl.VarPower("v"), "exp": lambda: jl.VarExp("v")}
RANDOM = ["", " + (1 | g)", " + (1 + x | g)", " + (1 | cohort)", " + (1 | cohort) + (1 | g)"]


def random_natural(structure, variance, meta, rng):
    parts = []
    if structure is not None:
        u = rng.normal(scale=0.8, size=meta.n_cor)
        parts.append(np.asarray(structure.natural(jnp.asarray(u), meta.cor_meta)).ravel())
    if variance is not None:
        parts.append(rng.uniform(0.5, 1.8, size=meta.n_var) if isinstance(variance, jl.VarIdent)
                     else rng.uniform(-0.4, 0.4, size=1))
    return np.concatenate(parts)


def dense_z(design):
    Zs = []
    for t in design.terms:
        Z = np.zeros((design.n, t.n_levels * t.width))
        for k in range(t.width):
            Z[np.arange(design.n), t.codes * t.width + k] = t.columns[:, k]
        Zs.append(Z)
    return Zs


@pytest.mark.parametrize("path", ["rows", "components"])
@pytest.mark.parametrize("cor", list(STRUCTURES))
@pytest.mark.parametrize("seed", range(4))
def test_objective_matches_dense_v(cor, seed, path, monkeypatch):
    import jaxlmm.rside.residual

    # the per-row whitening, or (where the structure has one, without a variance function) the
    # decomposition into fixed components, whatever its size
    monkeypatch.setattr(jaxlmm.rside.residual, "COMPONENT_BUDGET", 1e12 if path == "components" else -1.0)
    rng = np.random.default_rng(100 + seed)
    df = make_data(seed)
    structure = STRUCTURES[cor]()
    variance = VARIANCES[list(VARIANCES)[(seed + len(cor)) % 4]]()
    if path == "components" and cor in ("ar1", "exp", "cs"):
        variance = None  # the decomposition needs fixed rows
    if structure is None and variance is None:
        variance = jl.VarPower("v")
    bars = RANDOM[(seed + len(cor)) % len(RANDOM)]
    weighted = seed % 2 == 1
    reml = seed % 3 != 2
    extra = structure_columns(structure, variance)
    design = build_design("y ~ x" + bars, df, weights="w" if weighted else None, extra_columns=extra,
                          require_random=False)
    model = LmerModel.from_design(design, structure, variance)
    if path == "components" and structure is not None and variance is None and cor in ("ar1", "exp", "cs"):
        assert model.rside.meta.stats
    else:
        assert not model.rside.meta.stats
    with float64():
        M = model.arrays(reml)
        R = model.rside_arrays()
        nat = random_natural(structure, variance, R.meta, rng)
        theta = rng.uniform(0.3, 1.5, size=model.n_theta)
        ours = float(objective(jnp.asarray(theta), arrays_at(jnp.asarray(nat), M, R)))
    rows = design.row_index
    sub = df.loc[rows].reset_index(drop=True)
    ncor = R.meta.n_cor
    C = dense_corr(structure, nat[:ncor], sub) if structure is not None else np.eye(design.n)
    d = dense_sd(variance, nat[ncor:], sub)
    # dense_objective takes V0 = W^{-1} + Z Lambda Lambda' Z': pass the R-side part as a
    # whitening of the problem instead: with D C D = K K', solve in K^{-1}-transformed rows
    K = np.linalg.cholesky(np.outer(d, d) * C / np.sqrt(np.outer(design.weights, design.weights)))
    Ki = np.linalg.inv(K)
    Ts = templates_np(theta, model.specs)
    Zs = [Ki @ Z for Z in dense_z(design)]
    dense = dense_objective(Ki @ design.y, Ki @ design.X, np.ones(design.n), Zs, Ts, reml)
    dense += 2.0 * np.sum(np.log(np.diag(K)))  # log|K K'| of the transformation
    assert ours == pytest.approx(dense, rel=1e-8)


def test_dense_oracle_helper_is_not_trivial():
    """The oracle sees the structure: another parameter value gives another criterion."""
    df = make_data(0)
    s = jl.AR1("g", "t")
    C1 = dense_corr(s, [0.5], df)
    C2 = dense_corr(s, [0.2], df)
    assert np.abs(C1 - C2).max() > 0.1
    assert np.allclose(C1, C1.T)
