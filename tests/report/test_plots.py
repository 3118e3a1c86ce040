"""Every plot renders headless (Agg) to a PNG, with the content it should show."""

import io

import numpy as np
import pandas as pd
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

import jaxlmm  # noqa: E402
from jaxlmm import datasets, plots  # noqa: E402
from jaxlmm.errors import ArgumentError  # noqa: E402
from conftest import load_data  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def sleep():
    return datasets.load("sleepstudy")


@pytest.fixture(scope="module")
def fit(sleep):
    return jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", sleep)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=40)
    matplotlib.pyplot.close(fig)
    data = buf.getvalue()
    assert data.startswith(PNG) and len(data) > 2000
    return data


def test_caterpillar(fit):
    fig = plots.caterpillar(fit, level=0.9)
    axes = [a for a in fig.axes if a.get_visible()]
    assert [a.get_title() for a in axes] == ["Subject: (Intercept)", "Subject: Days"]
    re = fit.ranef
    for ax, term in zip(axes, ["(Intercept)", "Days"]):
        xs = np.sort(ax.lines[0].get_xdata())  # the points, sorted by construction
        np.testing.assert_allclose(xs, np.sort(re.loc[re["term"] == term, "condval"]), rtol=1e-12)
    _png(fig)
    with pytest.raises(ArgumentError, match="level"):
        plots.caterpillar(fit, level=95)


def test_residuals_vs_fitted(fit):
    fig = plots.residuals_vs_fitted(fit)
    pts = fig.axes[0].collections[0].get_offsets()
    np.testing.assert_allclose(pts[:, 0], fit.fitted, rtol=1e-12)
    np.testing.assert_allclose(pts[:, 1], fit.residuals, rtol=1e-12)
    _png(fig)


def test_qq_residuals_and_ranef(fit):
    fig = plots.qq(fit)
    pts = fig.axes[0].collections[0].get_offsets()
    assert pts.shape == (180, 2)
    np.testing.assert_allclose(np.sort(pts[:, 1]), np.sort(fit.residuals / fit.sigma), rtol=1e-12)
    from scipy import stats

    assert pts[0, 0] == pytest.approx(stats.norm.ppf(0.5 / 180), rel=1e-12)  # Hazen plotting positions
    _png(fig)
    fig = plots.qq(fit, "ranef", "Subject: Days")
    assert fig.axes[0].collections[0].get_offsets().shape == (18, 2)
    _png(fig)
    with pytest.raises(ArgumentError, match="unknown term"):
        plots.qq(fit, "ranef", "Subject: Nights")
    with pytest.raises(ArgumentError, match="which"):
        plots.qq(fit, "fitted")


def test_profile_traces():
    f = jaxlmm.lmer("Yield ~ 1 + (1 | Batch)", datasets.load("dyestuff"))
    prof = f.profile()
    fig = plots.profile_traces(f, prof)
    axes = [a for a in fig.axes if a.get_visible()]
    assert [a.get_title() for a in axes] == list(dict.fromkeys(prof["parameter"]))
    _png(fig)
    with pytest.raises(ArgumentError, match="zeta"):
        plots.profile_traces(f, prof.drop(columns="zeta"))


def test_fitted_lines(fit, sleep):
    fig = plots.fitted_lines(fit, sleep, "Days", max_groups=4)
    axes = [a for a in fig.axes if a.get_visible()]
    assert len(axes) == 4 and axes[0].get_title() == "Subject = 308"
    line = axes[0].lines[0]
    np.testing.assert_allclose(line.get_ydata(), fit.fitted[sleep["Subject"] == "308"], rtol=1e-12)
    _png(fig)
    with pytest.raises(ArgumentError, match="unknown column"):
        plots.fitted_lines(fit, sleep, "Nights")


def test_no_random_effects():
    g = jaxlmm.gls("distance ~ age", datasets.load("orthodont"))
    with pytest.raises(ArgumentError, match="no random effects"):
        plots.caterpillar(g)
    _png(plots.residuals_vs_fitted(g))


def lme4_cbpp():
    """cbpp as lme4 has it: herd and period are factors (levels 1..15 and 1..4)."""
    d = load_data("cbpp")
    d["herd"] = pd.Categorical(d["herd"])
    d["period"] = d["period"].astype(str)
    return d


def test_qq_plots_the_pearson_residuals_with_weights_once():
    """The QQ plot's points are fit.resid("pearson"): prior weights (binomial trials, lmer weights)
    and a variance function enter once (a glmer fit's plot spanned -16 to 9, not -2.4 to 2.9)."""
    import warnings

    orth = load_data("Orthodont")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jaxlmm.FitWarning)
        fits = {
            "glmer": jaxlmm.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", lme4_cbpp(),
                                  "binomial"),
            "weighted": jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", load_data("sleepstudy_weighted"),
                                    weights="w", offset="off"),
            "varident": jaxlmm.lmer("distance ~ age + Sex + (1 | Subject)", orth, variance=jaxlmm.VarIdent("Sex")),
        }
    for name, f in fits.items():
        fig = plots.qq(f)
        y = fig.axes[0].collections[0].get_offsets()[:, 1]
        want = np.sort(f.resid("pearson").to_numpy())
        np.testing.assert_allclose(y, want, rtol=1e-12, err_msg=name)
        matplotlib.pyplot.close(fig)
    g = fits["glmer"]
    assert g.resid("pearson").min() == pytest.approx(-2.38, abs=0.01)  # lme4: -2.38 to 2.88
    assert g.resid("pearson").max() == pytest.approx(2.88, abs=0.01)
    fig = plots.residuals_vs_fitted(g)  # glmer: deviance residuals, said so on the axis
    assert fig.axes[0].get_ylabel() == "deviance residuals"
    np.testing.assert_allclose(fig.axes[0].collections[0].get_offsets()[:, 1], g.resid("deviance"), rtol=1e-12)
    _png(fig)
