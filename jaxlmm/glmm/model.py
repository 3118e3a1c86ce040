"""The GLMM model: :class:`GlmmModel`, the design, family, templates and (cached) device arrays
of one generalized linear mixed model, with the optimiser's internal scale ``d`` of
``x = (theta, beta[, log phi])`` and the padding of rows to a bucket (one compiled program per
bucket, :func:`jaxlmm.glmm.rows.row_bucket`)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from . import pirls, rows
from ..errors import ArgumentError
from .family import Family
from ..precision import float64
from ..records import PicklableRecord
from ..terms.design import Design


MAX_AGQ = 25


@dataclasses.dataclass(frozen=True, eq=False)
class GlmmModel(PicklableRecord):
    """Design, family and (cached) device arrays of one GLMM."""

    design: Design
    family: Family
    specs: tuple
    nagq: int
    _cache: dict = dataclasses.field(default_factory=dict, repr=False)


    @property
    def n(self) -> int:
        return self.design.n

    @property
    def p(self) -> int:
        return self.design.p

    @property
    def n_theta(self) -> int:
        return sum(s.size for s in self.specs)

    @property
    def has_rows(self) -> bool:
        return True

    def x_scale(self) -> np.ndarray:
        """Per entry of ``x = (theta, beta[, log phi])`` the factor ``d`` of the optimiser's
        internal parameters ``x / d``: for theta one over the root mean square of its template
        row's column of ``Z_i``, for beta one over the root mean square of its column of ``X``
        (1 for a zero column, and for ``log phi``), so that rescaling a covariate leaves the
        optimiser's path unchanged."""
        d = self.design

        def inv_rms(cols: np.ndarray) -> np.ndarray:
            rms = np.sqrt(np.mean(cols * cols, axis=0)) if cols.shape[0] else np.ones(cols.shape[1])
            return 1.0 / np.where(np.isfinite(rms) & (rms > 0), rms, 1.0)

        out = []
        for t, spec in zip(d.terms, self.specs):
            s = inv_rms(t.columns)
            out.extend(s[r] for r in spec.rows)
        out.extend(inv_rms(d.X))
        if not self.family.scale_free:
            out.append(1.0)
        return np.asarray(out, dtype=np.float64)

    @property
    def n_padded(self) -> int:
        """The row count of the device arrays (:func:`jaxlmm.glmm.rows.row_bucket`)."""
        return rows.row_bucket(self.n)

    def pad_response(self, Y: np.ndarray) -> np.ndarray:
        """Responses ``(n,)`` or ``(B, n)`` padded to :attr:`n_padded` rows (last axis)."""
        y_pad, _ = rows.padding_values(self.family)
        Y = np.asarray(Y, dtype=np.float64)
        extra = self.n_padded - Y.shape[-1]
        return np.concatenate([Y, np.full(Y.shape[:-1] + (extra,), y_pad)], axis=-1) if extra > 0 else Y

    def pad_eta(self, eta: np.ndarray) -> np.ndarray:
        """A linear predictor ``(n,)`` padded with the padding rows' value."""
        _, off_pad = rows.padding_values(self.family)
        return rows.pad(np.asarray(eta, dtype=np.float64), self.n_padded, off_pad)

    def mean(self, eta: np.ndarray) -> np.ndarray:
        """``mu = g^{-1}(eta)`` for the rows' ``eta (n,)``, evaluated on the padded rows (one small
        program per row bucket, not per row count)."""
        with float64():
            return np.asarray(self.family.link.inverse(jnp.asarray(self.pad_eta(eta))))[: len(eta)]

    def arrays(self, y: np.ndarray | None = None) -> pirls.GlmmArrays:
        """Device arrays (call under ``float64()``), rows padded to :attr:`n_padded` (weight 0:
        they add nothing); cached for the fitted response."""
        if y is None and "G" in self._cache:
            return self._cache["G"]
        d = self.design
        G = pirls.glmm_arrays([t.codes for t in d.terms], [t.columns for t in d.terms], d.X,
                              d.y if y is None else y, d.weights, d.offset, self.specs, self.family,
                              n_pad=self.n_padded)
        if y is None:
            self._cache["G"] = G
        return G


def check_nagq(nagq, design: Design) -> int:
    if isinstance(nagq, bool) or not isinstance(nagq, (int, np.integer)) or not 0 < int(nagq) <= MAX_AGQ:
        raise ArgumentError(f"nagq must be an integer from 1 to {MAX_AGQ}, got {nagq!r}")
    nagq = int(nagq)
    if nagq > 1 and (len(design.terms) != 1 or design.terms[0].width != 1):
        raise ArgumentError(
            f"nagq={nagq} (adaptive Gauss-Hermite) needs a single scalar random-effects term such as "
            "(1 | g); use nagq=1 (Laplace) for this model"
        )
    return nagq


@jax.jit
def _factor_at(theta, eta, phi, G):
    """The blocked factor of ``Lambda' Z' W Z Lambda + I`` at the linear predictor ``eta``."""
    _, W = pirls.score_weights(eta, G, phi)
    diag, off = pirls.weighted_blocks(W, jnp.zeros_like(W), G, theta)
    d, o = pirls.scale_blocks(theta, G.specs, diag, off)
    return pirls.blocked_cholesky(G.structure, d, o)


def factor_at(model: "GlmmModel", theta: np.ndarray, eta: np.ndarray, phi: float):
    """Host copies of :func:`_factor_at` and of the structure (for conditional variances)."""
    with float64():
        G = model.arrays()
        f = _factor_at(jnp.asarray(theta), jnp.asarray(model.pad_eta(eta)), jnp.asarray(phi), G)
        factor = ([np.asarray(d) for d in f.diag], {n: np.asarray(v) for n, v in f.off.items()},
                  np.asarray(f.tail))
        return factor, jax.tree_util.tree_map(np.asarray, G.structure)
