"""Compiled programs kept across processes: jaxlmm's persistent XLA compilation cache.

A fit compiles a handful of XLA programs per model structure (the optimiser's loop, the solve
at the optimum, inference). JAX can keep compiled programs on disk, but by default keeps only
those that took more than a second to compile and only when a cache directory is configured.
jaxlmm turns a cache on for its own computations:

- where: ``JAXLMM_CACHE_DIR`` when set; otherwise ``<user cache dir>/jaxlmm/xla`` (platformdirs:
  ``~/.cache/jaxlmm/xla`` on Linux, honouring ``XDG_CACHE_HOME``; ``~/Library/Caches/jaxlmm/xla``
  on macOS; ``%LOCALAPPDATA%\\jaxlmm\\Cache\\xla`` on Windows). A cache the user configured for
  JAX (``JAX_COMPILATION_CACHE_DIR`` or ``jax.config.update("jax_compilation_cache_dir", ...)``)
  is used instead of jaxlmm's own.
- what: every program jaxlmm compiles, however quickly it compiled (the threshold is lowered
  to zero inside jaxlmm's computations only; programs with host callbacks are never written
  by JAX).
- off: ``JAXLMM_CACHE=0`` in the environment, or :func:`set_cache` ``(False)``.
- clearing: :func:`clear_cache`, or delete the directory (:func:`cache_dir` names it).

The settings are applied thread-locally, within :func:`cache_context` (entered by
:func:`jaxlmm.precision.float64` around every jaxlmm computation): the user's global JAX
configuration is never changed. One caveat is JAX's: its cache object is created once per
process, at the first compilation that sees a cache directory; after jaxlmm has created it, the
user's own programs that take over a second to compile are kept there too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import jax
import platformdirs

from .errors import ArgumentError

try:  # thread-local configuration states (context managers); absent in some JAX versions
    from jax._src import compilation_cache as _jax_cache
    from jax._src import config as _jax_config

    _DIR_STATE = _jax_config.compilation_cache_dir
    _MIN_TIME_STATE = _jax_config.persistent_cache_min_compile_time_secs
except (ImportError, AttributeError):  # pragma: no cover - other JAX versions
    _jax_cache = _DIR_STATE = _MIN_TIME_STATE = None

ENV_SWITCH = "JAXLMM_CACHE"
ENV_DIR = "JAXLMM_CACHE_DIR"
_OFF = {"0", "false", "no", "off"}

_state = {"enabled": None, "initialised_ours": False}


def _env_enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in _OFF


def cache_enabled() -> bool:
    """Whether jaxlmm keeps its compiled programs on disk (:func:`set_cache`, ``JAXLMM_CACHE``)."""
    on = _state["enabled"]
    return (_env_enabled() if on is None else on) and _DIR_STATE is not None


def _user_jax_dir() -> str | None:
    """The cache directory the user configured for JAX, if any (global setting)."""
    return jax.config.jax_compilation_cache_dir


def cache_dir() -> Path:
    """The directory jaxlmm's compiled programs are kept in (whether or not the cache is on):
    the user's JAX cache when configured, else ``JAXLMM_CACHE_DIR``, else the platform's user
    cache directory (``.../jaxlmm/xla``)."""
    user = _user_jax_dir()
    if user:
        return Path(user)
    env = os.environ.get(ENV_DIR, "").strip()
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir("jaxlmm", appauthor=False)) / "xla"


def set_cache(enabled: bool) -> None:
    """Turn jaxlmm's persistent compilation cache on or off for this process (overrides the
    ``JAXLMM_CACHE`` environment variable). Turning it off after a fit has used it drops JAX's
    handle on jaxlmm's directory, so later compilations neither read nor write it."""
    if not isinstance(enabled, bool):
        raise ArgumentError(f"set_cache takes True or False, got {enabled!r}")
    _state["enabled"] = enabled
    if not enabled and _state["initialised_ours"] and _jax_cache is not None:
        _jax_cache.reset_cache()
        _state["initialised_ours"] = False


def clear_cache() -> int:
    """Delete jaxlmm's cached programs (its own directory only; a cache the user configured for
    JAX is left alone). Returns the number of files removed."""
    if _user_jax_dir():
        raise ArgumentError(f"the compilation cache is JAX's own ({_user_jax_dir()}), configured outside "
                            "jaxlmm; clear it there")
    path = cache_dir()
    if not path.is_dir():
        return 0
    n = sum(1 for p in path.rglob("*") if p.is_file())
    shutil.rmtree(path, ignore_errors=True)
    if _state["initialised_ours"] and _jax_cache is not None:
        _jax_cache.reset_cache()
        _state["initialised_ours"] = False
    return n


@contextlib.contextmanager
def cache_context():
    """Within: JAX keeps every program it compiles in :func:`cache_dir` (thread-local settings;
    nothing when the cache is off)."""
    if not cache_enabled():
        yield
        return
    with contextlib.ExitStack() as stack:
        if not _user_jax_dir():
            path = cache_dir()
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError:  # an unwritable location: compile as if the cache were off
                yield
                return
            stack.enter_context(_DIR_STATE(str(path)))
            _state["initialised_ours"] = True
        stack.enter_context(_MIN_TIME_STATE(0.0))
        yield
