"""Precision policy: fits run in float64 inside a local ``jax.enable_x64`` context.

The user's global JAX configuration is never changed; arrays returned to the user are numpy
float64 (or pandas objects built from them).
"""

from __future__ import annotations

import contextlib

import jax


@contextlib.contextmanager
def float64():
    """Run the enclosed JAX computations with 64-bit types enabled (restored on exit)."""
    if jax.config.jax_enable_x64:
        yield
        return
    with jax.enable_x64(True):
        yield
