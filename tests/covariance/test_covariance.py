"""theta <-> templates in lme4's order; sign rectification keeps T T'."""

import numpy as np

from jaxlmm.covariance.templates import rectify, template_spec, templates_np, theta_start


def test_lme4_order_is_column_major_lower_triangle():
    s = template_spec(3, uncorrelated=False)
    assert list(zip(s.rows, s.cols)) == [(0, 0), (1, 0), (2, 0), (1, 1), (2, 1), (2, 2)]
    u = template_spec(3, uncorrelated=True)
    assert list(zip(u.rows, u.cols)) == [(0, 0), (1, 1), (2, 2)]
    np.testing.assert_array_equal(theta_start((s, u)), [1, 0, 0, 1, 0, 1, 1, 1, 1])


def test_rectify_keeps_covariance_and_makes_diagonal_nonnegative():
    specs = (template_spec(3, False), template_spec(1, False))
    theta = np.array([-1.0, 0.3, -0.2, 0.5, 0.0, -2.0, -0.7])
    fixed, sign = rectify(theta, specs)
    for T0, T1 in zip(templates_np(theta, specs), templates_np(fixed, specs)):
        np.testing.assert_allclose(T0 @ T0.T, T1 @ T1.T)
        assert np.all(np.diag(T1) >= 0)
    np.testing.assert_array_equal(sign, [-1, -1, -1, 1, 1, -1, -1])
    np.testing.assert_array_equal(fixed * sign, theta)
