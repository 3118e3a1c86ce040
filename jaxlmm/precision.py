"""The context of every jaxlmm computation: float64, cached programs, one BLAS thread.

- Fits run in float64 inside a local ``jax.enable_x64`` context; the user's global JAX
  configuration is never changed; arrays returned to the user are numpy float64 (or pandas
  objects built from them).
- Programs compiled within are kept in jaxlmm's persistent cache (:mod:`jaxlmm.compilation`,
  thread-local settings).
- The BLAS/LAPACK libraries loaded in the process (OpenBLAS under numpy and scipy, which also
  serves XLA's CPU LAPACK calls such as the dense tail's Cholesky) run single-threaded within
  (threadpoolctl; restored on exit). XLA's own thread pool already uses every core; a second
  pool of BLAS threads that spin while waiting for work made fits on a busy machine up to 8x
  slower (measured: an InstEval evaluation 2.5 s instead of 0.3 s beside two busy processes on
  2 cores), against 2.3x for a single-threaded peer.
"""

from __future__ import annotations

import contextlib
import threading

import jax
import jax.numpy as jnp
import numpy as np
import threadpoolctl

from .compilation import cache_context

_blas = {"users": 0, "limit": None}
_blas_lock = threading.Lock()


def _controller():
    if "controller" not in _blas:  # created at the first fit, when scipy's BLAS is loaded
        _blas["controller"] = threadpoolctl.ThreadpoolController()
    return _blas["controller"]


@contextlib.contextmanager
def single_blas_thread():
    """BLAS/LAPACK libraries limited to one thread within; nested and concurrent uses share one
    limit, lifted when the last of them exits."""
    with _blas_lock:
        if _blas["users"] == 0:
            _blas["limit"] = _controller().limit(limits=1, user_api="blas")
        _blas["users"] += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas["users"] -= 1
            if _blas["users"] == 0:
                _blas["limit"].restore_original_limits()
                _blas["limit"] = None


@contextlib.contextmanager
def float64():
    """Run the enclosed JAX computations with 64-bit types enabled (restored on exit), their
    compiled programs kept in jaxlmm's persistent cache, BLAS on one thread."""
    with cache_context(), single_blas_thread():
        if jax.config.jax_enable_x64:
            yield
            return
        with jax.enable_x64(True):
            yield


def zero_cotangent(tree):
    """Zero cotangents for a pytree of arrays (``float0`` for integer and boolean leaves)."""
    def zero(a):
        if jnp.issubdtype(a.dtype, jnp.inexact):
            return jnp.zeros_like(a)
        return np.zeros(np.shape(a), dtype=jax.dtypes.float0)
    return jax.tree_util.tree_map(zero, tree)
