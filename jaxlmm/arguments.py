"""Validators of the arguments every entry point shares: counts and iteration limits, random
seeds, and the size of arrays a call would allocate.

Each raises :class:`jaxlmm.errors.ArgumentError` naming the argument, before any computation,
and returns the value in the form the caller uses (a Python ``int``, a numpy ``Generator``).
"""

from __future__ import annotations

import numbers
import os

import numpy as np

from .errors import ArgumentError


def positive_int(value, name: str) -> int:
    """``value`` as a Python ``int`` if it is an integer >= 1 (Python or numpy integer; not a
    bool, a float such as ``2.0``, or a string such as ``"10"``), else an ArgumentError naming
    ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ArgumentError(f"{name} must be a positive integer, got {value!r} ({type(value).__name__})")
    if value <= 0:
        raise ArgumentError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def optional_positive_int(value, name: str) -> int | None:
    """None, or :func:`positive_int` of ``value``."""
    return None if value is None else positive_int(value, name)


def check_seed(seed, name: str = "seed"):
    """``seed`` unchanged if numpy can seed a generator from it without surprise: None (fresh
    entropy), a non-negative integer (not a bool), a ``numpy.random.Generator``,
    ``SeedSequence`` or ``BitGenerator``; else an ArgumentError naming ``name``."""
    if seed is None or isinstance(seed, (np.random.Generator, np.random.SeedSequence, np.random.BitGenerator)):
        return seed
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise ArgumentError(f"{name} must be None, a non-negative integer or a numpy Generator/SeedSequence, "
                            f"got {seed!r} ({type(seed).__name__})")
    if seed < 0:
        raise ArgumentError(f"{name} must be a non-negative integer, got {seed!r}")
    return int(seed)


def random_generator(seed, name: str = "seed") -> np.random.Generator:
    """A numpy ``Generator`` from a seed accepted by :func:`check_seed` (a Generator is used
    as it is, so draws continue its stream)."""
    return np.random.default_rng(check_seed(seed, name))


def _cgroup_limit() -> int | None:
    """The container's memory limit in bytes (cgroup v2 or v1), or None when there is none."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit():
            return int(text)
    return None


# assumed when the operating system does not say (no sysconf, e.g. Windows without psutil)
FALLBACK_MEMORY = 1 << 40


def physical_memory() -> int:
    """Bytes of memory this process can use at most: the machine's physical memory, or the
    container's limit when lower; :data:`FALLBACK_MEMORY` when neither can be read."""
    total = None
    try:
        total = int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        try:
            import psutil

            total = int(psutil.virtual_memory().total)
        except (ImportError, AttributeError, OSError):  # not installed or not supported: the fallback
            total = None
    if not total or total <= 0:
        total = FALLBACK_MEMORY
    limit = _cgroup_limit()
    return min(total, limit) if limit and limit > 0 else total


def format_bytes(n: float) -> str:
    """``n`` bytes as a short human-readable size (``'1.4 TB'``), decimal units."""
    for unit in ("bytes", "kB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000.0
    raise AssertionError  # pragma: no cover


def check_memory(nbytes: float, name: str, what: str) -> None:
    """An ArgumentError naming ``name`` when ``nbytes`` (what the call would allocate, ``what``
    describes it) exceed :func:`physical_memory`."""
    have = physical_memory()
    if nbytes > have:
        raise ArgumentError(f"{name} is too large: {what} would need about {format_bytes(nbytes)} of memory, "
                            f"and this machine has {format_bytes(have)}; use a smaller {name}")


def check_level(level, what: str = "level") -> float:
    """A probability strictly inside (0, 1), or an ArgumentError naming ``what``."""
    try:
        lv = float(level)
    except (TypeError, ValueError):
        raise ArgumentError(f"{what} must be a number in (0, 1), got {level!r}") from None
    if not 0.0 < lv < 1.0:
        raise ArgumentError(f"{what} must be in (0, 1), got {level!r}")
    return lv
