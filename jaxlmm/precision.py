"""Precision policy: fits run in float64 inside a local ``jax.enable_x64`` context.

The user's global JAX configuration is never changed; arrays returned to the user are numpy
float64 (or pandas objects built from them). The same context keeps the programs compiled
within it in jaxlmm's persistent cache (:mod:`jaxlmm.compilation`, thread-local settings).
"""

from __future__ import annotations

import contextlib

import jax

from .compilation import cache_context


@contextlib.contextmanager
def float64():
    """Run the enclosed JAX computations with 64-bit types enabled (restored on exit), their
    compiled programs kept in jaxlmm's persistent cache."""
    with cache_context():
        if jax.config.jax_enable_x64:
            yield
            return
        with jax.enable_x64(True):
            yield
