"""Immutable records at the edges of the pipeline, and how they pickle.

- The arrays a result holds are read-only copies (:func:`read_only`), its mappings read-only
  views (:func:`make_mapping`), so a caller cannot change a fit's numbers in place
  (``fit.theta[0] = 1`` raises).
- What a fit computes on first use and keeps (Satterthwaite parts, a Kenward–Roger
  adjustment) lives in its :class:`Cache` field, never in ``__dict__`` writes from other modules.
- Pickling is generic over the records' dataclass fields (:func:`record_state` and
  :func:`restore_record`, used by the results' and models' ``__getstate__``/``__setstate__``):
  values that are not fields (``functools.cached_property`` values and other lazily computed
  entries of the instance ``__dict__``) are kept unless they hold JAX device arrays or
  callables, which are recomputed on first use; a ``_cache`` dict of device arrays (a model's)
  is emptied, a :class:`Cache` keeps its host entries;
  ``types.MappingProxyType`` fields (``optinfo``, ``ngroups``) are stored as plain dicts and
  frozen again on loading.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any

import numpy as np


def read_only(a, dtype=np.float64) -> np.ndarray:
    """A read-only copy of ``a`` (as ``dtype``; ``None`` keeps ``a``'s)."""
    out = np.array(a, dtype=dtype, copy=True)
    out.setflags(write=False)
    return out


def make_mapping(d: dict[str, Any]) -> types.MappingProxyType:
    """A read-only view of a copy of ``d``."""
    return types.MappingProxyType(dict(d))


class Cache(dict):
    """Results a record computes on first use and keeps, by name (``"satterthwaite"``,
    ``"kenward_roger"``): derived from the record's fields, never changing an estimate. Pickled
    with the record, less any entry holding device arrays or callables (rebuilt on first use)."""

    def get_or_compute(self, key: str, compute):
        """``self[key]``, computed by ``compute()`` the first time."""
        if key not in self:
            self[key] = compute()
        return self[key]


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
        if isinstance(v, Cache):
            v = Cache({name: x for name, x in v.items() if not _holds_volatile(x)})
        elif k in volatile and k in fields:
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


