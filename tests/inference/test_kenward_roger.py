"""Kenward–Roger (pbkrtest 0.5.2): adjusted vcov and denominator df against R, a dense
n-space oracle, and classical balanced-design results."""

import warnings

import numpy as np
import pytest
from conftest import load_data, load_reference

import jaxlmm
from jaxlmm.covariance.templates import templates_np
from jaxlmm.terms.design import build_design
from jaxlmm.errors import ArgumentError
from jaxlmm.inference.kenward_roger import KRAdjustment, kenward_roger, kr_ddf
from jaxlmm.lmm.model import LmerModel

KR_IDS = ["cake_factorial_reml", "orthodont_slope_reml", "sleepstudy_intercept_reml",
          "sleepstudy_slope_reml"]

_FITS: dict = {}


def fit(formula, data_name, **kw):
    key = (formula, data_name, tuple(sorted(kw.items())))
    if key not in _FITS:
        df = load_data(data_name)
        if data_name == "sleepstudy":
            df = df.assign(Days2=df["Days"] ** 2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", jaxlmm.FitWarning)
            _FITS[key] = jaxlmm.lmer(formula, df, reml=True, **kw)
    return _FITS[key]


def adjust(f) -> KRAdjustment:
    names = list(f._model.design.x_names)
    return kenward_roger(f._model, f.theta, f.sigma, f.vcov.loc[names, names].to_numpy())


def adjust_at_reference(fid) -> KRAdjustment:
    """At lme4's own estimates (theta, sigma, vcov) from the reference file, without a fit."""
    ref = load_reference(fid)
    model = model_only(ref["formula"], ref["data"])
    p = model.design.p
    vcov = np.array(ref["vcov"], dtype=float).reshape(p, p)
    return kenward_roger(model, np.atleast_1d(ref["theta"]), ref["sigma"], vcov)


def unit_dfs(adj):
    p = adj.vcov.shape[0]
    return np.array([kr_ddf(adj, np.eye(p)[j : j + 1])[0] for j in range(p)])


@pytest.mark.parametrize("fid", KR_IDS)
def test_reference_df_and_adjusted_vcov(fid):
    ref = load_reference(fid)
    f = fit(ref["formula"], ref["data"])
    assert list(f._model.design.x_names) == ref["beta_names"]
    adj = adjust(f)
    kr = ref["kenward_roger"]
    np.testing.assert_allclose(unit_dfs(adj), kr["df"], rtol=1e-3)
    want = np.array(kr["vcov"], dtype=float)
    scale = np.sqrt(np.outer(np.diag(want), np.diag(want)))  # near-zero covariances: absolute
    assert np.all(np.abs(adj.vcov_adj - want) <= 1e-3 * np.abs(want) + 1e-6 * scale)
    np.testing.assert_allclose(adj.vcov_adj, adj.vcov_adj.T, rtol=1e-12, atol=1e-12 * scale.max())


# Multi-row hypotheses. Numbers from pbkrtest 0.5.2 (R 4.2, lme4 1.1-31), Rscript run in tests/data:
#   ss <- read.csv("sleepstudy.csv"); ss$Days2 <- ss$Days^2
#   fm <- lmer(Reaction ~ Days + Days2 + (Days | Subject), ss, REML = TRUE)
#   kr <- KRmodcomp(fm, rbind(c(0, 1, 0), c(0, 0, 1)))        # same as KRmodcomp(fm, ~ 1 + (Days | Subject))
#   getKR(kr, "ddf"); getKR(kr, "F.scaling")                  # 39.8170424428295 0.983588885238526
#   sapply(1:3, function(j) {L <- matrix(0, 1, 3); L[1, j] <- 1; Lb_ddf(L, vcov(fm), vcovAdj(fm))})
#                                                             # 24.8431245714314 114.431234286148 143
#   od <- read.csv("Orthodont.csv"); od$Sex <- factor(od$Sex, levels = c("Male", "Female"))
#   fo <- lmer(distance ~ age + Sex + (age | Subject), od, REML = TRUE)
#   ko <- KRmodcomp(fo, rbind(c(1, 0, 0), c(0, 0, 1)))
#   getKR(ko, "ddf"); getKR(ko, "F.scaling")                  # 31.0695978364131 0.984346911122593
def test_multirow_sleepstudy_quadratic():
    adj = adjust(fit("Reaction ~ Days + Days2 + (Days | Subject)", "sleepstudy"))
    ddf, scale = kr_ddf(adj, np.array([[0.0, 1, 0], [0, 0, 1]]))
    assert ddf == pytest.approx(39.8170424428295, rel=1e-3)
    assert scale == pytest.approx(0.983588885238526, rel=1e-4)
    # the test depends on L only through its row space (KRmodcomp's own L is a rotation of this one)
    R = np.array([[0.6, -0.8], [0.8, 0.6]]) @ np.array([[0.0, 1, 0], [0, 0, 1]])
    ddf2, scale2 = kr_ddf(adj, R)
    assert ddf2 == pytest.approx(ddf, rel=1e-9) and scale2 == pytest.approx(scale, rel=1e-9)
    np.testing.assert_allclose(unit_dfs(adj), [24.8431245714314, 114.431234286148, 143], rtol=1e-3)


def test_multirow_orthodont():
    ref = load_reference("orthodont_slope_reml")
    adj = adjust(fit(ref["formula"], ref["data"]))
    ddf, scale = kr_ddf(adj, np.array([[1.0, 0, 0], [0, 0, 1]]))
    assert ddf == pytest.approx(31.0695978364131, rel=1e-3)
    assert scale == pytest.approx(0.984346911122593, rel=1e-4)


def test_balanced_one_way_is_classical():
    """Balanced one-way random effects (Dyestuff, 6 batches x 5): the intercept's KR df is the
    between-batch df 6 - 1 = 5, F scaling 1, and PhiA = Phi (no small-sample inflation). Also for
    a balanced random-intercept regression (sleepstudy, 18 subjects x 10 days) the within-subject
    slope gets the split-plot df n - subjects - 1 = 161, and again PhiA = Phi."""
    adj = adjust_at_reference("dyestuff_reml")
    ddf, scale = kr_ddf(adj, np.ones((1, 1)))
    assert ddf == pytest.approx(5.0, rel=1e-6)
    assert scale == pytest.approx(1.0, rel=1e-6)
    np.testing.assert_allclose(adj.vcov_adj, adj.vcov, rtol=1e-8)
    adj = adjust(fit("Reaction ~ Days + (1 | Subject)", "sleepstudy"))
    assert kr_ddf(adj, np.array([[0.0, 1.0]]))[0] == pytest.approx(161.0, rel=1e-6)
    np.testing.assert_allclose(adj.vcov_adj, adj.vcov, rtol=1e-8)


def test_singular_fit():
    """Dyestuff2 is singular (theta = 0). pbkrtest (vcovAdj(fm); attr(, "W")):
    W = [[3.68520758696707, -3.17690309221299], [-3.17690309221299, 15.8845154610650]], df 5."""
    adj = adjust_at_reference("dyestuff2_reml_singular")
    assert adj.gamma[0] == 0.0
    np.testing.assert_allclose(adj.W, [[3.68520758696707, -3.17690309221299],
                                       [-3.17690309221299, 15.8845154610650]], rtol=1e-3)
    assert kr_ddf(adj, np.ones((1, 1)))[0] == pytest.approx(5.0, rel=1e-6)
    np.testing.assert_allclose(adj.vcov_adj, adj.vcov, rtol=1e-8)


def model_only(formula, data_name, **kw):
    """The model structure without a fit (KR is defined at any variance parameters)."""
    df = load_data(data_name)
    if data_name == "sleepstudy":
        df = df.assign(Days2=df["Days"] ** 2)
    return LmerModel.from_design(build_design(formula, df, **kw))


def dense_oracle(model, theta, sigma):
    """pbkrtest's vcovAdj literally, in n-space: Sigma = sum gamma_g G_g, dense n x n."""
    d, specs = model.design, model.specs
    X = d.X
    n = X.shape[0]
    G, gamma = [], []
    for t, s, T in zip(d.terms, specs, templates_np(theta, specs)):
        Zr = []
        for r in range(t.width):
            Zd = np.zeros((n, t.n_levels))
            Zd[np.arange(n), t.codes] = t.columns[:, r]
            Zr.append(Zd)
        cov = sigma**2 * T @ T.T
        for r, c in zip(s.rows, s.cols):
            M = Zr[r] @ Zr[c].T
            G.append(M if r == c else M + M.T)
            gamma.append(cov[r, c])
    G.append(np.eye(n))
    gamma.append(sigma**2)
    Sigma = sum(g * Gg for g, Gg in zip(gamma, G))
    Si = np.linalg.inv(Sigma)
    Phi = np.linalg.inv(X.T @ Si @ X)
    k = len(G)
    H = [Gg @ Si for Gg in G]
    SiX = Si @ X
    P = [-SiX.T @ Gg @ SiX for Gg in G]
    Q = [[SiX.T @ G[i] @ Si @ G[j] @ SiX for j in range(k)] for i in range(k)]
    IE2 = np.array([[np.sum(H[i].T * H[j]) - 2 * np.sum(Phi * Q[i][j])
                     + np.trace(Phi @ P[i] @ Phi @ P[j]) for j in range(k)] for i in range(k)])
    W = 2 * np.linalg.inv(IE2)
    U = sum(W[i, j] * (Q[i][j] - P[i] @ Phi @ P[j]) for i in range(k) for j in range(k))
    return Phi, Phi + 2 * Phi @ U @ Phi, W, P


@pytest.mark.parametrize("formula,data,theta,sigma,unadjusted", [
    # uncorrelated: variances only (balanced: PhiA = Phi)
    ("Reaction ~ Days + (Days || Subject)", "sleepstudy", [0.9, 0.25], 25.0, True),
    # crossed, balanced
    ("diameter ~ 1 + (1 | plate) + (1 | sample)", "Penicillin", [1.5, 3.2], 0.55, True),
    # correlated (negative covariance), unbalanced in Sex
    ("distance ~ age + Sex + (age | Subject)", "Orthodont", [1.2, -0.3, 0.2], 1.3, False),
    # 3 x 3 template: covariance-by-covariance terms of Q and tr(G S G S)
    ("Reaction ~ Days + (Days + Days2 | Subject)", "sleepstudy",
     [0.8, 0.1, -0.02, 0.2, 0.01, 0.03], 20.0, False),
])
def test_matches_dense_oracle(formula, data, theta, sigma, unadjusted):
    """At variance parameters away from the optimum (the algebra holds anywhere)."""
    model = model_only(formula, data)
    theta = np.array(theta)
    Phi, PhiA, W, P = dense_oracle(model, theta, sigma)
    adj = kenward_roger(model, theta, sigma, Phi)
    assert np.allclose(PhiA, Phi, rtol=1e-6) == unadjusted  # a real adjustment unless balanced
    np.testing.assert_allclose(adj.vcov_adj, PhiA, rtol=1e-7, atol=1e-9 * np.abs(PhiA).max())
    np.testing.assert_allclose(adj.W, W, rtol=1e-7, atol=1e-9 * np.abs(W).max())
    for got, want in zip(adj.P, P):
        np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9 * np.abs(want).max())
    assert len(adj.gamma) == len(adj.gamma_names) == W.shape[0]


# kr_ddf's arithmetic on a hand-made adjustment, against pbkrtest's own .KR_adjust (R 4.2):
#   Phi <- diag(c(1, 2)); PhiA <- Phi
#   attr(PhiA, "P") <- list(diag(c(0.3, 0.1)), matrix(c(0.2, 0.05, 0.05, 0.1), 2))
#   attr(PhiA, "W") <- cc * matrix(c(0.5, 0.1, 0.1, 0.3), 2)
#   s <- pbkrtest:::.KR_adjust(PhiA, Phi, L, c(0, 0), 0); c(s$ddf, s$F.scaling)
# with (cc, L) as below; all-zero P gives ddf NaN and F.scaling NA.
@pytest.mark.parametrize("cc,L,ddf,scaling", [
    (1.0, [[1, 0], [0, 1]], 36.552172665503960, 0.998642005244577),
    (1.0, [[1, 1]], 32.7868852459017, 1.0),  # q = 1: the scaling is 1
    (17.80673962486938, [[1, 0], [0, 1]], 2.049999999999832, 0.115725821300277),
    (17.807296597998167, [[1, 0], [0, 1]], 2.00499999999257, 1.0),  # |ddf - 2| < 0.01: 1
])
def test_ddf_arithmetic(cc, L, ddf, scaling):
    Phi = np.diag([1.0, 2.0])
    P = (np.diag([0.3, 0.1]), np.array([[0.2, 0.05], [0.05, 0.1]]))
    W = cc * np.array([[0.5, 0.1], [0.1, 0.3]])
    adj = KRAdjustment(vcov=Phi, vcov_adj=Phi, P=P, W=W, gamma=np.ones(2))
    got = kr_ddf(adj, np.array(L, dtype=float))
    assert got == pytest.approx((ddf, scaling), rel=1e-8)


def test_ddf_undefined_is_nan():
    Phi = np.diag([1.0, 2.0])
    adj = KRAdjustment(vcov=Phi, vcov_adj=Phi, P=(np.zeros((2, 2)),) * 2, W=np.eye(2), gamma=np.ones(2))
    assert all(np.isnan(kr_ddf(adj, np.eye(2))))


def test_refusals():
    f = fit("Reaction ~ Days + (1 | Subject)", "sleepstudy")
    adj = adjust(f)
    with pytest.raises(ArgumentError, match="rank"):
        kr_ddf(adj, np.array([[0.0, 1.0], [0.0, 2.0]]))
    with pytest.raises(ArgumentError, match="shape"):
        kr_ddf(adj, np.array([[0.0, 1.0, 0.0]]))
    weighted = model_only("Reaction ~ Days + (1 | Subject)", "sleepstudy_weighted", weights="w")
    assert not np.all(weighted.design.weights == 1.0)
    with pytest.raises(ArgumentError, match="weights"):
        kenward_roger(weighted, np.array([1.0]), 30.0, adj.vcov)
