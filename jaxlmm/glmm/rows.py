"""Row padding of a GLMM's device arrays: row-count buckets and rows that contribute nothing.

A GLMM's programs take its rows (the PIRLS loop runs over them), so the row count is a static
size: it is rounded up to a bucket (:func:`row_bucket`) with weight-0 rows whose response and
linear predictor keep every quantity finite (:func:`padding_values`), and fits on subsets of
one data set share a few compiled programs.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

ROW_BUCKETS_PER_DOUBLING = 4
MIN_ROW_BUCKET = 32


def row_bucket(n: int) -> int:
    """The padded row count of a GLMM's programs: the smallest ``ceil(2^(k/4))`` (rounded up to
    a multiple of 8, at least 32) that holds ``n`` rows. Fits on subsets of one data set then
    share a few compiled programs instead of compiling (and keeping) one per row count; the
    padding costs at most 19% more rows."""
    n = max(int(n), 1)
    k = max(int(np.floor(ROW_BUCKETS_PER_DOUBLING * np.log2(n))) - 1, 0)
    while True:
        b = int(np.ceil(2.0 ** (k / ROW_BUCKETS_PER_DOUBLING)))
        b = max(MIN_ROW_BUCKET, -(-b // 8) * 8)
        if b >= n:
            return b
        k += 1


def padding_values(fam) -> tuple[float, float]:
    """``(y, offset)`` of a padding row: a response inside the family's support and the linear
    predictor at which ``mu = y``. With prior weight 0 (and zero model columns) such a row adds
    exactly nothing to the score, the weights, the deviance or ``-2 log p`` (which is masked
    where ``w = 0``, see :func:`jaxlmm.glmm.pirls.neg2_loglik`), and all its values are finite."""
    y = 0.5 if fam.name == "binomial" else 1.0
    return y, float(fam.link.link(jnp.asarray(y)))


def pad(v: np.ndarray, n_pad: int, value: float = 0.0) -> np.ndarray:
    """``v`` (rows first) with rows of ``value`` appended up to ``n_pad``."""
    v = np.asarray(v)
    extra = n_pad - v.shape[0]
    if extra <= 0:
        return v
    return np.concatenate([v, np.full((extra,) + v.shape[1:], value, dtype=v.dtype)])
