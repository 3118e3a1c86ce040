"""Progress bars for work that takes more than a second, and the package's logger.

Bars come from tqdm when it is installed (``pip install 'jaxlmm[progress]'``) and appear only
after :data:`DELAY` seconds, so quick work prints nothing. They are on when standard error is a
terminal, off otherwise; :func:`set_progress` (or ``JAXLMM_PROGRESS=0``/``1``) overrides that.
Used by batched fits (``lmer_many``, ``bootstrap``), likelihood profiles and out-of-core passes.

Log records go to the ``"jaxlmm"`` logger, which has a ``NullHandler``: nothing is printed unless
the application configures logging (``logging.basicConfig(level=logging.INFO)``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Iterator

from .errors import ArgumentError

logger = logging.getLogger("jaxlmm")
logger.addHandler(logging.NullHandler())

DELAY = 1.0  # seconds before a bar appears
_setting: bool | None = None


def set_progress(enabled: bool | None) -> None:
    """Turn progress bars on (``True``), off (``False``) or back to automatic (``None``: on when
    standard error is a terminal)."""
    global _setting
    if enabled is not None and not isinstance(enabled, bool):
        raise ArgumentError(f"set_progress takes True, False or None, got {enabled!r}")
    _setting = enabled


def progress_enabled() -> bool:
    if _setting is not None:
        return _setting
    env = os.environ.get("JAXLMM_PROGRESS")
    if env is not None:
        return env.strip().lower() not in ("0", "false", "no", "off", "")
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str) -> None:
        pass


@contextlib.contextmanager
def progress(total: int | None, desc: str, unit: str = "it") -> Iterator:
    """A bar with ``update(n)``; a silent stand-in when bars are off or tqdm is missing."""
    bar = None
    if progress_enabled():
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, desc=desc, unit=unit, delay=DELAY, leave=False, file=sys.stderr,
                       dynamic_ncols=True)
        except ImportError:
            bar = None
    try:
        yield bar if bar is not None else _NoBar()
    finally:
        if bar is not None:
            bar.close()
