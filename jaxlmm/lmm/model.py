"""The fitted model's structure: design, Gram blocks and the objective's constants (lme4's
``lFormula`` + ``mkLmerDevfun``), kept on the result for inference, prediction and refits.

Everything that depends on the response ``y`` enters the Gram matrix only through the last
column of its ``XY`` stage: ``X' W y``, ``y' W y`` and ``Z_i' W y``. :meth:`LmerModel.response_blocks`
recomputes those for new responses (one pass over the rows per response, never per theta), so
refits, bootstrap replicates and profiles reuse one compiled program.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..covariance.templates import TemplateSpec, template_spec
from ..terms.design import Design
from ..gram.blocks import Gram, gram_blocks
from ..gram.shards import gram_blocks_sharded
from ..kernels.structure import key_name
from ..records import PicklableRecord
from ..rside.residual import build_rside, to_device
from .objective import ModelArrays, analyzed, model_arrays


BUCKET = True  # pad the objective's arrays to shape buckets (jaxlmm.kernels.buckets); False: exact sizes


@dataclasses.dataclass(frozen=True, eq=False)
class LmerModel(PicklableRecord):
    """Design plus blocked Gram matrix ``[Z X y]' W [Z X y]`` of one model."""

    design: Design
    specs: tuple[TemplateSpec, ...]
    gram: Gram
    _cache: dict = dataclasses.field(default_factory=dict, repr=False)
    rside: Any = None  # jaxlmm.residual.RSideArrays (numpy) when R has a structure
    # a model accumulated out of core (jaxlmm.outofcore): the row count and sum log w of the
    # whole table; ``design`` is then one chunk's, for names, encodings and levels only
    totals: tuple[int, float] | None = None


    @classmethod
    def from_design(cls, design: Design, correlation=None, variance=None, shard: bool = False,
                    moment_start: bool = True) -> "LmerModel":
        """``shard``: sum the Gram blocks over row shards on this process's devices
        (:mod:`jaxlmm.gram_shards`) instead of on the host. ``moment_start``: as
        :func:`jaxlmm.rside.residual.build_rside`."""
        specs = tuple(template_spec(t.width, t.uncorrelated) for t in design.terms)
        if shard:
            gram = gram_blocks_sharded(design)
        else:
            gram = gram_blocks(design)
        rside = None
        if correlation is not None or variance is not None:
            rside = build_rside(design, gram, correlation, variance, moment_start=moment_start)
        return cls(design=design, specs=specs, gram=gram, rside=rside)

    def rside_arrays(self):
        """The residual structure's device arrays (call under ``float64()``); cached."""
        if "rside" not in self._cache:
            self._cache["rside"] = to_device(self.rside)
        return self._cache["rside"]

    @property
    def n(self) -> int:
        return self.design.n if self.totals is None else self.totals[0]

    @property
    def p(self) -> int:
        return self.design.p

    @property
    def n_theta(self) -> int:
        return sum(s.size for s in self.specs)

    @property
    def log_det_w(self) -> float:
        if self.totals is not None:
            return self.totals[1]
        return float(np.sum(np.log(self.design.weights)))

    @property
    def has_rows(self) -> bool:
        """Whether the design holds every row (not a model accumulated out of core)."""
        return self.totals is None

    def theta_scale(self) -> np.ndarray:
        """Per theta entry ``d = 1 / s_r``, ``s_r`` the root mean square of its template row's
        column of ``Z_i`` (weighted by ``W``, from the Gram's diagonal blocks; 1 for a zero
        column): the optimiser works on ``theta / d``, which does not change when a covariate is
        rescaled (:func:`jaxlmm.fit.fit_theta`)."""
        out = []
        for i, spec in enumerate(self.specs):
            ms = np.einsum("lrr->r", np.asarray(self.gram.diag[i])) / max(self.n, 1)
            rms = np.sqrt(np.maximum(ms, 0.0))
            rms = np.where(np.isfinite(rms) & (rms > 0), rms, 1.0)
            out.extend(1.0 / rms[r] for r in spec.rows)
        return np.asarray(out, dtype=np.float64)

    def analysis(self, bucket: bool = True):
        """The blocked structure of the Gram pattern, padded to shape buckets unless ``bucket``
        is False or the model has a residual structure (whose Gram blocks change with its
        parameters, in the unpadded layout): ``(structure, layout or None)``; cached."""
        bucket = bool(bucket) and BUCKET and self.rside is None
        key = ("analysis", bucket)
        if key not in self._cache:
            self._cache[key] = analyzed(self.gram, bucket)
        return self._cache[key]

    @property
    def pad_layout(self):
        """The padding layout of :meth:`arrays` (None: unpadded)."""
        return self.analysis()[1]

    def arrays(self, reml: bool, host_lapack: bool | None = None, bucket: bool = True) -> ModelArrays:
        """Device arrays of the objective (call under ``float64()``), padded to shape buckets
        (:meth:`analysis`); cached per flags. ``bucket=False`` for callers that replace Gram
        blocks by unpadded ones (batched responses)."""
        analysis = self.analysis(bucket)
        key = (bool(reml), host_lapack, analysis[1] is not None)
        if key not in self._cache:
            self._cache[key] = model_arrays(self.gram, self.specs, n=self.n, p=self.p, reml=bool(reml),
                                            log_det_w=self.log_det_w, host_lapack=host_lapack,
                                            analysis=analysis)
        return self._cache[key]

    # --- the response-dependent blocks ---------------------------------------------------

    @functools.cached_property
    def _zw(self) -> list[sp.csr_matrix]:
        """Per term ``Z_i' W`` as a sparse ``(levels_i * p_i, n)`` matrix."""
        d = self.design
        out = []
        rows = np.arange(d.n)
        for t in d.terms:
            pw = t.width
            r = (t.codes.astype(np.int64)[:, None] * pw + np.arange(pw)[None, :]).ravel()
            c = np.repeat(rows, pw)
            v = (t.columns * d.weights[:, None]).ravel()
            out.append(sp.csr_matrix((v, (r, c)), shape=(t.n_levels * pw, d.n)))
        return out

    def response_blocks(self, Y: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """For responses ``Y (n, B)`` (offset already subtracted): the XY stage's diagonal block
        ``(B, p+1, p+1)`` and, per term, the ``(B, levels_i, p+1, p_i)`` blocks of ``XY' W Z_i``."""
        d = self.design
        Y = np.asarray(Y, dtype=np.float64)
        if Y.ndim == 1:
            Y = Y[:, None]
        B = Y.shape[1]
        p = d.p
        wX = d.X * d.weights[:, None]
        WY = Y * d.weights[:, None]
        XtX = d.X.T @ wX
        XtY = wX.T @ Y  # (p, B)
        yty = np.einsum("nb,nb->b", Y, WY)
        D = np.empty((B, p + 1, p + 1))
        D[:, :p, :p] = XtX
        D[:, :p, p] = XtY.T
        D[:, p, :p] = XtY.T
        D[:, p, p] = yty
        k = len(d.terms)
        base = [self.gram.off[key_name(k, j)] for j in range(k)]  # (levels, p+1, p_j)
        offs = []
        for j, t in enumerate(d.terms):
            zy = (self._zw[j] @ Y).T.reshape(B, t.n_levels, t.width)  # (B, levels, p_j)
            o = np.broadcast_to(base[j][None], (B,) + base[j].shape).copy()
            o[:, :, p, :] = zy
            offs.append(o)
        return D, offs


def model_with_response(model: LmerModel, y: np.ndarray) -> LmerModel:
    """The same design and Gram blocks with the response ``y (n,)`` in place of the fitted one
    (the Z/X parts are shared; only ``XY' W [Z X y]`` is recomputed)."""
    d = model.design
    y = np.asarray(y, dtype=np.float64)
    D, offs = model.response_blocks((y - d.offset)[:, None])
    k = len(d.terms)
    diag = list(model.gram.diag[:k]) + [D[0][None]]  # (1, p+1, p+1), as built from the rows
    off = dict(model.gram.off)
    for j in range(k):
        off[key_name(k, j)] = offs[j][0]
    gram = dataclasses.replace(model.gram, diag=diag, off=off)
    return LmerModel(design=dataclasses.replace(d, y=y), specs=model.specs, gram=gram)


def with_response(M: ModelArrays, D, offs) -> ModelArrays:
    """``M`` with the XY-stage blocks of another response (one replicate; jax arrays)."""
    k = M.n_terms
    diag = list(M.diag[:k]) + [D]
    off = dict(M.off)
    for j in range(k):
        off[key_name(k, j)] = offs[j]
    return dataclasses.replace(M, diag=diag, off=off)
