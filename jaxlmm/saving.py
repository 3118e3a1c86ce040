"""Saving fits to a file and loading them back: :meth:`LmerResult.save`, :func:`jaxlmm.load`.

A saved fit is a small header followed by a pickle of the result record:

- line 1: the magic string ``MAGIC`` (``jaxlmm fit``), which marks the file as jaxlmm's;
- line 2: JSON ``{"format": FORMAT_VERSION, "jaxlmm": "<version that wrote it>", "kind": "<class>"}``;
- then the pickle (protocol 4 or later).

``FORMAT_VERSION`` changes whenever a saved record can no longer be read back correctly; a file
of another format version is refused with a message naming both versions. Within a format
version a record that lacks a field added later gets that field's default.

Pickling is generic over the records' dataclass fields (:func:`record_state` and
:func:`restore_record`, used by the results' and models' ``__getstate__``/``__setstate__``):
values that are not fields (``functools.cached_property`` values and other lazily computed
entries of the instance ``__dict__``) are kept unless they hold JAX device arrays or callables,
which are recomputed on first use; a model's ``_cache`` of device arrays is emptied;
``types.MappingProxyType`` fields (``optinfo``, ``ngroups``) are stored as plain dicts and
frozen again on loading. A family object (:class:`jaxlmm.family.Family`, whose link functions are
closures) pickles as its name and link.

Loading runs :mod:`pickle`, which can execute arbitrary code: only load files you trust.
"""

from __future__ import annotations

import copyreg
import dataclasses
import io
import json
import os
import pickle
import types
from typing import Any

from .errors import ArgumentError, DataError

MAGIC = b"jaxlmm fit\n"
FORMAT_VERSION = 1
_HEADER_MAX = 4096  # longest JSON header line read before giving up


def _version() -> str:
    from . import __version__

    return __version__


# --- generic pickling of the records -----------------------------------------------------------


class _FrozenMapping(dict):
    """A ``types.MappingProxyType`` value while pickled (a dict, frozen again on loading)."""


def _holds_volatile(v: Any, depth: int = 0) -> bool:
    """Whether ``v`` holds a JAX device array or a callable (not worth pickling: recomputed on
    first use after loading). Looks inside tuples, lists, dicts and plain dataclasses; a fit
    record inside is pickled by its own rules."""
    import jax

    if isinstance(v, jax.Array):
        return True
    if depth > 6:
        return False
    if isinstance(v, (str, bytes, int, float, complex, bool, type(None))):
        return False
    if _is_record(v):
        return False
    if isinstance(v, (tuple, list, set, frozenset)):
        return any(_holds_volatile(x, depth + 1) for x in v)
    if isinstance(v, (dict, types.MappingProxyType)):
        return any(_holds_volatile(x, depth + 1) for x in v.values())
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return any(_holds_volatile(getattr(v, f.name, None), depth + 1) for f in dataclasses.fields(v))
    return callable(v) and not isinstance(v, type)


def _is_record(v: Any) -> bool:
    """Whether ``v`` pickles by rules of its own (a custom ``__getstate__``, as the fits and models)."""
    own = getattr(type(v), "__getstate__", None)
    return own is not None and own is not getattr(object, "__getstate__", None)


def record_state(obj: Any, volatile: tuple[str, ...] = ("_cache",)) -> dict:
    """The picklable state of a dataclass record ``obj``: every field (``MappingProxyType``
    values as plain dicts; the fields named in ``volatile``, caches of device arrays, emptied),
    plus the lazily computed entries of ``obj.__dict__`` that hold no device array or callable."""
    fields = {f.name for f in dataclasses.fields(obj)}
    state = {}
    for k, v in obj.__dict__.items():
        if k in volatile and k in fields:
            v = type(v)() if isinstance(v, dict) else None
        elif k not in fields and _holds_volatile(v):
            continue  # a cached value holding device arrays or functions: recomputed lazily
        if isinstance(v, types.MappingProxyType):
            v = _FrozenMapping(v)
        state[k] = v
    return state


def restore_record(obj: Any, state: dict) -> None:
    """Set ``obj``'s ``__dict__`` from :func:`record_state`'s ``state`` (frozen dataclasses
    included); fields missing from ``state`` (a record saved before they existed) get their
    defaults."""
    d = {k: (types.MappingProxyType(dict(v)) if isinstance(v, _FrozenMapping) else v) for k, v in state.items()}
    for f in dataclasses.fields(obj):
        if f.name in d:
            continue
        if f.default is not dataclasses.MISSING:
            d[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            d[f.name] = f.default_factory()
    obj.__dict__.update(d)


class PicklableRecord:
    """Mixin of the dataclass records that pickle and deep-copy by :func:`record_state`."""

    def __getstate__(self) -> dict:
        return record_state(self)

    def __setstate__(self, state: dict) -> None:
        restore_record(self, state)


# --- families: closures for links, pickled by name ----------------------------------------------


def _same_function(a, b) -> bool:
    return a is b or (getattr(a, "__code__", None) is not None and getattr(a, "__code__", None)
                      is getattr(b, "__code__", None))


def _reduce_family(fam):
    """Pickle a built-in family as ``family(name, link)``; any other family by its fields."""
    from .family import family

    try:
        ref = family(fam.name, fam.link.name)
    except Exception:  # noqa: BLE001 - not a built-in family: pickled field by field
        ref = None
    names = ("variance", "unit_deviance", "neg2_loglik")
    links = ("link", "inverse", "mu_eta")
    if (ref is not None and ref.scale_free == fam.scale_free and ref.links == fam.links
            and all(_same_function(getattr(fam, n), getattr(ref, n)) for n in names)
            and all(_same_function(getattr(fam.link, n), getattr(ref.link, n)) for n in links)):
        return family, (fam.name, fam.link.name)
    return object.__reduce_ex__(fam, 4)


def _register() -> None:
    from .family import Family

    copyreg.pickle(Family, _reduce_family)


_register()


# --- files ------------------------------------------------------------------------------------


def dumps(fit: Any) -> bytes:
    """The bytes :func:`save` writes for ``fit``: header and pickle."""
    from .glmer_result import GlmerResult
    from .results import LmerResult

    if not isinstance(fit, (LmerResult, GlmerResult)):
        raise ArgumentError(f"only jaxlmm fits (LmerResult, GlmerResult) can be saved, got {type(fit).__name__}")
    header = {"format": FORMAT_VERSION, "jaxlmm": _version(), "kind": type(fit).__name__}
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
    from .glmer_result import GlmerResult
    from .results import LmerResult

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
            f"({_version()}) reads save format {FORMAT_VERSION} only: load it with jaxlmm {writer} "
            "and refit, or save it again from there"
        )
    try:
        fit = pickle.load(stream)
    except Exception as e:  # noqa: BLE001 - a truncated or damaged pickle, or a class that moved
        raise DataError(f"{source} (written by jaxlmm {writer}) cannot be read: {type(e).__name__}: {e}") from None
    if not isinstance(fit, (LmerResult, GlmerResult)):
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
