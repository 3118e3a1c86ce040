"""Immutable records at the edges of the pipeline: the arrays a result holds are read-only copies,
so a caller cannot change a fit's numbers in place (``fit.theta[0] = 1`` raises)."""

from __future__ import annotations

import numpy as np


def read_only(a, dtype=np.float64) -> np.ndarray:
    """A read-only copy of ``a`` (as ``dtype``; ``None`` keeps ``a``'s)."""
    out = np.array(a, dtype=dtype, copy=True)
    out.setflags(write=False)
    return out
