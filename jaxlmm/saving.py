"""Saving fits to a file and loading them back: :meth:`LmerResult.save`, :func:`jaxlmm.load`.

A saved fit is a small header followed by a pickle of the result record:

- line 1: the magic string ``MAGIC`` (``jaxlmm fit``), which marks the file as jaxlmm's;
- line 2: JSON ``{"format": FORMAT_VERSION, "jaxlmm": "<version that wrote it>", "kind": "<class>"}``;
- then the pickle (protocol 4 or later).

``FORMAT_VERSION`` changes whenever a saved record can no longer be read back correctly; a file
of another format version is refused with a message naming both versions. Within a format
version a record that lacks a field added later gets that field's default.

Pickling is generic over the records' dataclass fields (:mod:`jaxlmm.records`); a family object
(:class:`jaxlmm.glmm.family.Family`, whose link functions are closures) pickles as its name and
link (:mod:`jaxlmm.glmm.family`). Every fit derives from :class:`SavedFit`.

Loading runs :mod:`pickle`, which can execute arbitrary code: only load files you trust.
"""

from __future__ import annotations

import io
import json
import os
import pickle
from typing import Any

from .errors import ArgumentError, DataError
from .records import PicklableRecord
from .version import __version__

MAGIC = b"jaxlmm fit\n"
FORMAT_VERSION = 1
_HEADER_MAX = 4096  # longest JSON header line read before giving up


class SavedFit(PicklableRecord):
    """Base of the fits (:class:`jaxlmm.LmerResult`, :class:`jaxlmm.GlmerResult`): what
    :func:`save` writes and :func:`load` gives back."""

    def save(self, path) -> None:
        """Write the fit to ``path``: a header (jaxlmm's magic string, the jaxlmm version and the
        save format version) followed by a pickle of the fit. :func:`jaxlmm.load` reads it back
        with the same estimates, summary, predictions and inference. The data a fit keeps are
        saved with it (the rows used, the Gram blocks), not the table it was fitted to."""
        save(self, path)


# --- files ------------------------------------------------------------------------------------


def dumps(fit: Any) -> bytes:
    """The bytes :func:`save` writes for ``fit``: header and pickle."""
    if not isinstance(fit, SavedFit):
        raise ArgumentError(f"only jaxlmm fits (LmerResult, GlmerResult) can be saved, got {type(fit).__name__}")
    header = {"format": FORMAT_VERSION, "jaxlmm": __version__, "kind": type(fit).__name__}
    try:
        body = pickle.dumps(fit, protocol=max(4, min(5, pickle.HIGHEST_PROTOCOL)))
    except (pickle.PicklingError, AttributeError, TypeError) as e:
        raise ArgumentError(f"this fit cannot be saved: a part of it cannot be pickled ({e})") from None
    return MAGIC + json.dumps(header).encode("ascii") + b"\n" + body


def save(fit: Any, path: str | os.PathLike) -> None:
    """Write ``fit`` to ``path`` (header and pickle; see the module docstring). The file is
    written next to ``path`` first and then renamed, so a failed save leaves no partial file."""
    try:
        target = os.fspath(path)
    except TypeError:
        raise ArgumentError(f"path must be a file name, got {type(path).__name__}") from None
    data = dumps(fit)
    tmp = f"{target}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise ArgumentError(f"cannot write {target!r}: {e.strerror or e}") from None


def loads(data: bytes, source: str = "the data") -> Any:
    """The fit in bytes written by :func:`dumps` (checks the header first; runs pickle)."""
    if not data.startswith(MAGIC):
        raise DataError(f"{source} is not a saved jaxlmm fit (no {MAGIC.strip().decode()!r} header)")
    stream = io.BytesIO(data)
    stream.seek(len(MAGIC))
    line = stream.readline(_HEADER_MAX)
    try:
        header = json.loads(line.decode("ascii"))
        fmt, writer = header["format"], str(header["jaxlmm"])
    except (UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise DataError(f"{source} has a damaged jaxlmm header") from None
    if fmt != FORMAT_VERSION:
        raise DataError(
            f"{source} was written by jaxlmm {writer} in save format {fmt}; this jaxlmm "
            f"({__version__}) reads save format {FORMAT_VERSION} only: load it with jaxlmm {writer} "
            "and refit, or save it again from there"
        )
    try:
        fit = pickle.load(stream)
    except Exception as e:  # noqa: BLE001 - a truncated or damaged pickle, or a class that moved
        raise DataError(f"{source} (written by jaxlmm {writer}) cannot be read: {type(e).__name__}: {e}") from None
    if not isinstance(fit, SavedFit):
        raise DataError(f"{source} does not hold a jaxlmm fit (found {type(fit).__name__})")
    return fit


def load(path: str | os.PathLike) -> Any:
    """The fit saved at ``path`` by ``fit.save(path)`` (an :class:`~jaxlmm.LmerResult` or
    :class:`~jaxlmm.GlmerResult`), with the same estimates, summary, predictions and inference
    as when it was saved; device arrays are rebuilt on first use.

    Refuses (:class:`~jaxlmm.DataError`) a file that is not a saved jaxlmm fit, or one of another
    save format version (the message says which jaxlmm wrote it and which format this one reads).

    Warning: loading runs :mod:`pickle`, which can execute arbitrary code from the file. Only load
    files you trust (that you or someone you trust saved)."""
    try:
        source = os.fspath(path)
    except TypeError:
        raise ArgumentError(f"path must be a file name, got {type(path).__name__}") from None
    try:
        with open(source, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise DataError(f"no saved fit at {source!r}: the file does not exist") from None
    except OSError as e:
        raise DataError(f"cannot read {source!r}: {e.strerror or e}") from None
    return loads(data, source=repr(source))
