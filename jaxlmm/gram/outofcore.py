"""Fits from tables larger than memory: the Gram blocks accumulated chunk by chunk.

Everything the fit needs from the rows is the blocked Gram matrix ``[Z X y]' W [Z X y]``
(design note section 3), a sum over rows. A Parquet dataset (a file, a directory, a glob, or a
``pyarrow.dataset.Dataset``) is read twice in record batches of ``batch_rows`` rows, only the
columns the formula uses:

1. levels: the complete rows' distinct values of every categorical column and grouping factor
   (so level codes, the lme4 order of terms and the fixed-effect encoding are global);
2. sums: each batch becomes a design with global codes and its blocks are added in; the
   off-diagonal level pairs of crossed factors are kept as (key, block) lists, reduced as they
   grow.

Peak memory is one batch plus the Gram blocks, whatever the number of rows. The fit then runs as
in memory. Per-row outputs (fitted values, residuals) are not kept.
"""

from __future__ import annotations

import dataclasses
import gc
import glob
import os
import time
from typing import Any

import numpy as np
import pandas as pd

from ..arguments import positive_int
from ..covariance.templates import template_spec
from ..progress import logger, progress
from ..terms.design import build_design, needed_columns
from ..terms.levels import check_levels, grouping, level_label, level_labels, term_order
from ..errors import ArgumentError, DataError
from ..terms.formula import parse_formula
from .blocks import Gram, gram_blocks
from ..kernels.structure import key_name

DEFAULT_BATCH_ROWS = 1_000_000


def is_dataset(data: Any) -> bool:
    """A path (file, directory or glob of Parquet files) or a pyarrow dataset."""
    if isinstance(data, (str, os.PathLike)):
        return True
    try:
        import pyarrow.dataset as pads
    except ImportError:  # pragma: no cover
        return False
    return isinstance(data, pads.Dataset)


def open_dataset(source: Any):
    try:
        import pyarrow.dataset as pads
    except ImportError:  # pragma: no cover
        raise ArgumentError("fitting from Parquet files needs pyarrow: pip install pyarrow") from None
    if isinstance(source, pads.Dataset):
        return source
    path = os.fspath(source)
    files = sorted(glob.glob(path)) if any(c in path for c in "*?[") else None
    if files == [] or (files is None and not os.path.exists(path)):
        raise DataError(f"no Parquet data at {path!r}")
    try:
        return pads.dataset(files if files is not None else path, format="parquet")
    except Exception as e:  # pyarrow's errors: not Parquet, unreadable
        raise DataError(f"cannot read Parquet data at {path!r}: {e}") from None


def fragment_schemas(ds) -> list[tuple[str, Any]]:
    """``(file, physical schema)`` of every fragment of ``ds``, from the files' footers (no rows
    read). A file that is not Parquet is a DataError naming it."""
    import pyarrow as pa

    out = []
    for k, fragment in enumerate(ds.get_fragments()):
        label = str(getattr(fragment, "path", None) or f"fragment {k}")
        try:
            out.append((label, fragment.physical_schema))
        except (pa.ArrowException, OSError, ValueError) as e:  # not Parquet, truncated, unreadable
            raise DataError(f"cannot read Parquet file {label!r}: {e}") from None
    return out


def _type_kind(t) -> str:
    """How a column of Arrow type ``t`` reaches pandas (and so how the fit treats it): types of
    one kind may be mixed across files (int32 and double are both numbers), kinds may not."""
    import pyarrow.types as pat

    if pat.is_null(t):
        return "null"
    if pat.is_boolean(t):
        return "boolean"
    if pat.is_integer(t) or pat.is_floating(t):
        return "number"
    if pat.is_string(t) or pat.is_large_string(t) or str(t) == "string_view":
        return "string"
    if pat.is_dictionary(t):
        return f"categorical of {_type_kind(t.value_type)}"
    return str(t)


def _files(labels: list[str], most: int = 3) -> str:
    shown = ", ".join(repr(x) for x in labels[:most])
    return shown + (f" and {len(labels) - most} more" if len(labels) > most else "")


def check_fragments(schemas: list[tuple[str, Any]], columns: list[str]) -> None:
    """A DataError, before any row is read, when the files of a dataset disagree on a column the
    model uses: a file lacks it (e.g. it is renamed there), or files store it as different kinds of
    type (a number in one file, text in another), which would silently turn rows into missing
    values or fail mid-read. The message names the column, the files and the types found."""
    if len(schemas) < 2:
        return
    for c in columns:
        lacking = [label for label, sc in schemas if sc.get_field_index(c) < 0]
        if lacking:
            having = [label for label, sc in schemas if sc.get_field_index(c) >= 0]
            first = dict(schemas)[lacking[0]]
            others = set().union(*(dict(schemas)[h].names for h in having))
            extra = sorted(set(first.names) - others)
            hint = f" (it has columns {sorted(first.names)}; {extra} are not in the other files)" if extra else \
                f" (it has columns {sorted(first.names)})"
            raise DataError(f"column {c!r} is missing from Parquet file{'s' if len(lacking) > 1 else ''} "
                            f"{_files(lacking)}{hint}, while {_files(having)} ha{'ve' if len(having) > 1 else 's'} "
                            f"it: every file must have the columns the model uses, with the same names")
        by_kind: dict[str, dict[str, list[str]]] = {}
        for label, sc in schemas:
            t = sc.field(c).type
            by_kind.setdefault(_type_kind(t), {}).setdefault(str(t), []).append(label)
        if len(by_kind) > 1:
            found = "; ".join(f"{t} in {_files(labels)}" for kinds in by_kind.values() for t, labels in kinds.items())
            raise DataError(f"column {c!r} has different types in the Parquet files: {found}; every file must store "
                            "it with one type (rewrite the files that differ)")


def _batches(ds, columns: list[str], batch_rows: int, desc: str = "reading"):
    # file by file, without read-ahead: the dataset scanner prefetches whole files far ahead
    # of a slower consumer, so peak memory would grow with the size of the dataset
    with progress(ds.count_rows(), desc, unit="row") as bar:
        for fragment in ds.get_fragments():
            for rb in fragment.to_batches(columns=columns, batch_size=batch_rows, batch_readahead=0,
                                          fragment_readahead=0, use_threads=False):
                if rb.num_rows:
                    bar.update(rb.num_rows)
                    yield rb.to_pandas()
            # pandas objects of the last batch can sit in reference cycles, holding Arrow buffers
            # until the cyclic collector runs: collect now, so peak memory stays about one batch
            gc.collect()


def _is_categorical(s: pd.Series) -> bool:
    return not pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s) or \
        isinstance(s.dtype, pd.CategoricalDtype)


class _PairSums:
    """Running sums of off-diagonal blocks keyed by level pair: ``(keys, (k, p_i, p_j))``."""

    def __init__(self):
        self.keys, self.vals, self.size = [], [], 0

    def add(self, keys: np.ndarray, vals: np.ndarray) -> None:
        self.keys.append(keys)
        self.vals.append(vals)
        self.size += len(keys)
        if len(self.keys) > 8 and self.size > 4 * max(len(k) for k in self.keys):
            self.reduce()

    def reduce(self) -> tuple[np.ndarray, np.ndarray]:
        keys = np.concatenate(self.keys)
        vals = np.concatenate(self.vals)
        uniq, inv = np.unique(keys, return_inverse=True)
        out = np.zeros((len(uniq),) + vals.shape[1:])
        np.add.at(out, inv, vals)
        self.keys, self.vals, self.size = [uniq], [out], len(uniq)
        return uniq, out


@dataclasses.dataclass(frozen=True)
class AccumulatedGram:
    """What two passes over a dataset leave for the fit: the Gram blocks ``gram`` summed over
    all batches, the templates ``specs``, one batch's design ``design0`` (names and encodings)
    with its terms ``terms`` in the model's order and their global level ``labels``, the row
    count ``n`` used, ``n_dropped``, ``log_w = sum log w`` and what to add to ``optinfo``."""

    gram: Gram
    specs: tuple
    design0: Any
    terms: list
    labels: list
    n: int
    n_dropped: int
    log_w: float
    info: dict


def accumulate_dataset(formula: str, source: Any, *, weights: str | None = None, offset: str | None = None,
                       batch_rows: int = DEFAULT_BATCH_ROWS) -> AccumulatedGram:
    """The Gram blocks of ``formula`` over a Parquet dataset, read in batches (see module
    docstring); :func:`jaxlmm.lmm.lmer.lmer_dataset` fits from them."""
    t0 = time.perf_counter()
    for name, v in (("weights", weights), ("offset", offset)):
        if v is not None and not isinstance(v, str):
            raise ArgumentError(f"{name} must be a column name when the data are a Parquet dataset")
    batch_rows = positive_int(batch_rows, "batch_rows")
    pf = parse_formula(formula)
    ds = open_dataset(source)
    schemas = fragment_schemas(ds)
    names = set(ds.schema.names)
    # a column some files have is known: check_fragments then names the files that lack it
    names_any = names.union(*(sc.names for _, sc in schemas))
    needed = needed_columns(pf, names_any)
    for v, where in needed.items():
        if v not in names_any:
            raise DataError(f"unknown column {v!r} ({where}) in formula {pf.formula!r}; the dataset has "
                            f"columns {sorted(names)}")
    cols = list(needed) + [c for c in (weights, offset) if c is not None and c not in needed]
    for c in (weights, offset):
        if c is not None and c not in names_any:
            raise DataError(f"unknown column {c!r} (weights/offset); the dataset has columns {sorted(names)}")
    check_fragments(schemas, cols)
    factor_cols = {f for t in pf.random for f in t.factors}

    # --- pass 1: global levels of categorical columns and grouping factors
    uniques: dict[str, list] = {}
    # categories in first-seen order over all batches: files (or row groups) may store different
    # dictionaries, and a level only some of them know must not become a missing value
    cat_order: dict[str, dict] = {}
    last_cats: dict[str, pd.Index] = {}
    combos: dict[tuple[str, ...], list[pd.DataFrame]] = {t.factors: [] for t in pf.random if len(t.factors) > 1}
    n_rows = 0
    for df in _batches(ds, cols, int(batch_rows), "out of core, pass 1/2 (levels)"):
        n_rows += len(df)
        df = df.loc[~df.isna().any(axis=1)]
        for c in cols:
            s = df[c]
            if c in factor_cols or _is_categorical(s):
                if isinstance(s.dtype, pd.CategoricalDtype):
                    cats = s.cat.categories
                    if c not in last_cats or not cats.equals(last_cats[c]):
                        order = cat_order.setdefault(c, {})
                        for v in cats:
                            order.setdefault(v, None)
                        last_cats[c] = cats
                uniques.setdefault(c, []).append(pd.unique(s.astype(object) if isinstance(s.dtype, pd.CategoricalDtype) else s))
        for fs in combos:
            combos[fs].append(df[list(fs)].drop_duplicates())
    if n_rows == 0:
        raise DataError("the dataset has no rows")
    levels: dict[str, list] = {}
    for c, parts in uniques.items():
        vals = pd.Series(np.concatenate(parts)).drop_duplicates()
        if c in cat_order:
            present = set(vals)
            levels[c] = [v for v in cat_order[c] if v in present]
        else:
            _, lab = level_labels(vals.rename(c))
            raw = {level_label(v): v for v in vals}
            levels[c] = [raw[x] for x in lab]
    if not levels and not pf.random:  # pragma: no cover - parse_formula requires a bar
        raise DataError("no rows")

    def as_global(df: pd.DataFrame) -> pd.DataFrame:
        """Categorical columns with the global categories: one encoding for every batch."""
        df = df.copy()
        for c, lev in levels.items():
            if c not in df.columns:
                continue
            df[c] = pd.Categorical(df[c].astype(object) if isinstance(df[c].dtype, pd.CategoricalDtype) else df[c],
                                   categories=lev)
        return df

    # global level labels of every term, in grouping's order
    term_labels = []
    for t in pf.random:
        if len(t.factors) == 1:
            term_labels.append([level_label(v) for v in levels[t.factors[0]]])
        else:
            allc = as_global(pd.concat(combos[t.factors], ignore_index=True).drop_duplicates())
            _, lab = grouping(allc, t.factors)
            term_labels.append(lab)
    index = [{lab: k for k, lab in enumerate(labs)} for labs in term_labels]
    level_tuples = [tuple(labs) for labs in term_labels]
    nl = [len(labs) for labs in term_labels]
    order = term_order(nl)

    # --- pass 2: the Gram blocks
    K = len(pf.random) + 1
    diag: list = [None] * K
    off_xy: list = [None] * (K - 1)
    pairs = {(i, j): _PairSums() for i in range(K - 1) for j in range(i)}
    n = 0
    n_dropped = 0
    log_w = 0.0
    design0 = None
    for df in _batches(ds, cols, int(batch_rows), "out of core, pass 2/2 (Gram sums)"):
        d = build_design(pf, as_global(df), weights=weights, offset=offset, chunk=True) \
            if (~df.isna().any(axis=1)).any() else None
        if d is None:
            n_dropped += len(df)
            continue
        if design0 is None:
            design0 = d
        n += d.n
        n_dropped += d.n_dropped
        log_w += float(np.sum(np.log(d.weights)))
        # the chunk's terms in the model's order with global level codes: its Gram blocks then
        # add up across chunks (off-diagonal level pairs by key, as they occur)
        terms = tuple(dataclasses.replace(d.terms[k], levels=level_tuples[k],
                                          codes=np.array([index[k][lab] for lab in d.terms[k].levels],
                                                         dtype=np.int64)[d.terms[k].codes])
                      for k in order)
        g = gram_blocks(dataclasses.replace(d, terms=terms))
        diag = [b if a is None else a + b for a, b in zip(diag, g.diag)]
        for (i, j), (r, c) in g.pattern.items():
            blk = g.off[key_name(i, j)]
            if i == K - 1:
                off_xy[j] = blk if off_xy[j] is None else off_xy[j] + blk
            else:
                pairs[(i, j)].add(c.astype(np.int64) * g.nlevels[i] + r, blk)
    if design0 is None:
        raise DataError(f"no rows left after dropping rows with missing values in {sorted(cols)}")

    terms0 = [design0.terms[k] for k in order]
    for k in order:
        check_levels(pf.random[k], nl[k], design0.terms[k].width, n)
    p = design0.p
    XtX = diag[K - 1][0][:p, :p]
    if p:
        ev = np.linalg.eigvalsh(XtX / np.maximum(np.outer(np.sqrt(np.diag(XtX)), np.sqrt(np.diag(XtX))), 1e-300))
        if ev.min() < 1e-10 * max(ev.max(), 1.0):
            raise DataError("the fixed-effect model matrix is rank deficient over the dataset (aliased columns); "
                            "out-of-core fits cannot drop columns: remove them from the formula")
    nlev = [nl[k] for k in order]
    off, pattern = {}, {}
    for (i, j), acc in pairs.items():
        if not acc.keys:
            continue
        uniq, vals = acc.reduce()
        pattern[(i, j)] = (uniq % nlev[i], uniq // nlev[i])
        off[key_name(i, j)] = vals
    for j in range(K - 1):
        pattern[(K - 1, j)] = (np.zeros(nlev[j], dtype=np.int64), np.arange(nlev[j]))
        off[key_name(K - 1, j)] = off_xy[j]
    gram = Gram(nlevels=tuple(nlev) + (1,), widths=tuple(t.width for t in terms0) + (p + 1,),
                diag=diag, off=off, pattern=pattern)
    labels = [term_labels[k] for k in order]
    specs = tuple(template_spec(t.width, t.uncorrelated) for t in terms0)
    logger.info("out of core: %d rows read in two passes (%d used, %d dropped), %.1f s; fitting from the "
                "Gram blocks", n_rows, n, n_dropped, time.perf_counter() - t0)
    return AccumulatedGram(gram=gram, specs=specs, design0=design0, terms=terms0, labels=labels, n=n,
                           n_dropped=n_dropped, log_w=log_w,
                           info={"out_of_core": True, "rows_read": n_rows, "batch_rows": int(batch_rows)})

