"""Many responses of one GLMM design fitted by one compiled, vmapped program.

The response enters :class:`jaxlmm.pirls.GlmmArrays` only through ``y``, so BFGS over
``(theta, beta[, log phi])``, with PIRLS inside every evaluation, is ``vmap``-ped over responses
in batches of a power of two (calls of different sizes share compiled programs). Used by
:func:`jaxlmm.glmer_many` and :meth:`GlmerResult.bootstrap`.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from ..arguments import optional_positive_int, positive_int
from ..lmm.batch import MAX_BATCH, MAX_BATCH_ACCELERATOR
from ..covariance.templates import diagonal_mask, rectify
from ..optim import finish
from ..optim.finish import SINGULAR_TOL
from ..precision import float64
from ..progress import progress
from ..optim.finish import fd_step
from ..optim.finish import central_hessian
from ..optim.finish import beta_covariance
from .fit import fit_core


@functools.partial(jax.jit, static_argnames=("nagq",))
def _fit_batch(X0, Y, G, nagq: int, max_iter, glm_beta):
    """:func:`jaxlmm.glmer.fit_core` for each response of ``Y (B, n)`` from ``X0 (B, d)``
    (no snapping to the boundary)."""
    def one(x0, y):
        r = fit_core(x0, dataclasses.replace(G, y=y), nagq, max_iter, glm_beta, 0.0)
        return r.x, r.fun, r.grad, r.status, r.nfev, r.extra_g

    return jax.vmap(one)(X0, Y)


FIELDS = ("x", "objective", "grad", "status", "n_evals")


def fit_responses(model, Y: np.ndarray, x0: np.ndarray, *, glm_beta: bool = False, batch_size: int | None = None,
                  max_iter: int = 1000) -> dict:
    """Fit the responses ``Y (n, B)`` from ``x0`` (its ``beta`` from each response's GLM fit
    when ``glm_beta``). Returns arrays with leading axis ``B``: ``x`` (theta rectified),
    ``objective``, ``grad``, ``status``, ``n_evals``, ``converged``, ``singular`` and
    ``vcov_beta (B, p, p)`` (the beta block of ``2 H^{-1}``)."""
    max_iter = positive_int(max_iter, "max_iter")
    batch_size = optional_positive_int(batch_size, "batch_size")
    B = Y.shape[1]
    x0 = np.asarray(x0, dtype=np.float64).copy()
    k, p = model.n_theta, model.p
    diag = np.concatenate([diagonal_mask(model.specs), np.zeros(len(x0) - k, bool)])
    x0[diag] = np.maximum(np.abs(x0[diag]), 0.1)  # zero is a stationary point: start inside
    if batch_size is None:
        cap = MAX_BATCH.get(jax.default_backend(), MAX_BATCH_ACCELERATOR)
        per = max(1, model.n * (1 + sum(s.p * s.p for s in model.specs)))
        batch_size = int(max(1, min(1 << max(B - 1, 0).bit_length(), 2e7 // per, cap)))
    batch_size = positive_int(batch_size, "batch_size")
    out = {key: [] for key in FIELDS}
    vcovs = []
    with float64():
        G = model.arrays()
        with progress(B, "batched glmer fits", unit="fit") as bar:
            for s in range(0, B, batch_size):
                Yb = model.pad_response(Y[:, s : s + batch_size].T)  # rows padded as the model's arrays
                nb = Yb.shape[0]
                if nb < batch_size and s > 0:  # pad to one compiled shape
                    Yb = np.concatenate([Yb, np.repeat(Yb[-1:], batch_size - nb, axis=0)])
                X0 = np.repeat(x0[None], Yb.shape[0], axis=0)
                res = [np.asarray(v) for v in _fit_batch(jnp.asarray(X0), jnp.asarray(Yb), G, model.nagq,
                                                         jnp.asarray(max_iter), jnp.asarray(glm_beta))]
                xs, grad, eg = res[0].copy(), res[2].copy(), res[5]
                for r in range(nb):
                    h = fd_step(xs[r])
                    H = central_hessian(eg[r, 1:], h)
                    theta, sign = rectify(xs[r, :k], model.specs)
                    xs[r, :k] = theta
                    sign = np.concatenate([sign, np.ones(xs.shape[1] - k)])
                    grad[r] *= sign
                    boundary = diag & (np.abs(xs[r]) < SINGULAR_TOL)
                    vcovs.append(beta_covariance(H * np.outer(sign, sign), k, p, boundary)[0])
                for key, v in zip(FIELDS, (xs, res[1], grad, res[3], res[4])):
                    out[key].append(v[:nb])
                bar.update(nb)
    r = {key: np.concatenate(v) for key, v in out.items()}
    gmax = np.max(np.abs(r["grad"]), axis=1)
    r["converged"] = finish.converged(r["status"], gmax, r["objective"])
    r["singular"] = np.any(np.abs(r["x"][:, diag]) < SINGULAR_TOL, axis=1)
    r["vcov_beta"] = np.stack(vcovs)
    return r

