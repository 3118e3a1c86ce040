"""Many responses of one design, fitted by one compiled, vmapped program.

The response enters the Gram matrix only through ``XY' W [Z X y]``
(:meth:`jaxlmm.model.LmerModel.response_blocks`: one sparse product for all responses), so BFGS,
the fixed effects, their standard errors and sigma are ``vmap``-ped over responses, in batches
of a power of two (programs are shared across calls of different sizes). With more than one
device the batch axis is sharded over a one-dimensional mesh (``jax.sharding``); the model's
constant arrays are replicated. Used by the parametric bootstrap and :func:`jaxlmm.lmer_many`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..arguments import optional_positive_int, positive_int
from ..covariance.templates import diagonal_mask, rectify
from ..optim import finish
from ..optim.finish import GTOL
from .model import LmerModel, with_response
from .objective import ModelArrays, factor, objective
from ..optim.bfgs import minimize_bfgs
from ..covariance.sdcor import sdcor_from_varpar
from ..precision import float64
from ..progress import progress


def _beta_se_sigma(theta, M: ModelArrays):
    """Fixed effects, their standard errors and sigma at ``theta`` from the trailing
    ``(p+1)^2`` block of the factor: ``beta = L_X^{-T} l``, ``sigma^2 = r^2 / nu``,
    ``Var(beta) = sigma^2 (L_X L_X')^{-1}``."""
    f = factor(theta, M)
    p = M.p
    Lt = f.tail[M.m_z_tail :, M.m_z_tail :]
    LX, l, r = Lt[:p, :p], Lt[p, :p], Lt[p, p]
    beta = jax.scipy.linalg.solve_triangular(LX, l, lower=True, trans="T")
    nu = M.n - p if M.reml else M.n
    sigma = jnp.abs(r) / jnp.sqrt(nu)
    Linv = jax.scipy.linalg.solve_triangular(LX, jnp.eye(p, dtype=LX.dtype), lower=True)
    se = sigma * jnp.sqrt(jnp.sum(Linv * Linv, axis=0))
    return beta, se, sigma


@jax.jit
def _fit_batch(theta0, M: ModelArrays, D, offs, max_iter):
    """BFGS for each response of the batch from its own start ``theta0 (B, k)``; ``max_iter``
    is traced (both passes of :func:`fit_many` share one program)."""
    def one(t0, D1, offs1):
        M1 = with_response(M, D1, offs1)
        r = minimize_bfgs(objective, t0, M1, gtol=GTOL, max_iter=max_iter)
        beta, se, sigma = _beta_se_sigma(r.x, M1)
        sdcor = sdcor_from_varpar(jnp.concatenate([r.x, sigma[None]]), M.specs)
        return r.fun, r.grad, r.status, beta, sdcor, se, r.x, r.nfev

    return jax.vmap(one)(theta0, D, offs)


# lanes per batch at most: on CPU small batches stay in cache and wait less for their slowest
# lane (1,000 sleepstudy fits: 64 lanes 0.16 s, 1,024 lanes 0.25 s); accelerators want width
MAX_BATCH = {"cpu": 64}
MAX_BATCH_ACCELERATOR = 1024
FIELDS = ("objective", "grad", "status", "beta", "sdcor", "se", "theta", "n_evals")


def _mesh_sharding():
    """A sharding of the leading (batch) axis over this process's devices of the default
    backend, or None with a single device (multi-host: each process shards its own batches)."""
    devices = jax.local_devices()
    if len(devices) < 2:
        return None, 1
    mesh = jax.sharding.Mesh(np.array(devices), ("batch",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch")), len(devices)


# vmapped lanes run until the slowest of their batch stops: a first pass caps the iterations
# (most fits need far fewer) and the few lanes that hit the cap continue, alone, from there
FIRST_PASS_ITER = 32


def fit_many(model: LmerModel, Y: np.ndarray, theta0: np.ndarray, reml: bool, batch_size: int | None = None,
             max_iter: int = 1000, shard: bool | None = None) -> dict:
    """Fit responses ``Y (n, B)`` (offset not yet subtracted) from ``theta0``: a dict of arrays
    with leading axis ``B`` (see :data:`FIELDS`). ``shard``: split each batch over the devices
    (default: when there are several)."""
    max_iter = positive_int(max_iter, "max_iter")
    batch_size = optional_positive_int(batch_size, "batch_size")
    B = Y.shape[1]
    theta0 = np.array(theta0, dtype=np.float64)
    diag = diagonal_mask(model.specs)
    theta0[diag] = np.maximum(np.abs(theta0[diag]), 0.1)  # zero is a stationary point: start inside
    starts = np.repeat(theta0[None], B, axis=0)
    first = min(max_iter, FIRST_PASS_ITER)
    r = _run(model, Y, starts, reml, batch_size, first, shard, pilot=True)
    more = (r["status"] == 2) & (max_iter > first)
    if more.any():
        idx = np.nonzero(more)[0]
        r2 = _run(model, Y[:, idx], r["theta"][idx], reml, batch_size, max_iter - first, shard)
        r2["n_evals"] = r2["n_evals"] + r["n_evals"][idx]
        for k in FIELDS:
            r[k][idx] = r2[k]
    gmax = np.max(np.abs(r["grad"]), axis=1) if r["grad"].shape[1] else np.zeros(B)
    r["converged"] = finish.converged(r["status"], gmax, r["objective"])
    return r


def _run(model: LmerModel, Y: np.ndarray, starts: np.ndarray, reml: bool, batch_size: int | None,
         max_iter: int, shard: bool | None, pilot: bool = False) -> dict:
    """Batches of :func:`_fit_batch`. ``pilot``: the later batches start from the median
    estimate of the first (responses of one design have similar theta)."""
    B = Y.shape[1]
    sharding, n_dev = _mesh_sharding() if shard is not False else (None, 1)
    out = {k: [] for k in FIELDS}
    with float64():
        M = model.arrays(reml, host_lapack=False, bucket=False)  # responses replace unpadded blocks
        if batch_size is None:  # about 2e7 doubles of batched Gram and factor arrays per batch
            per = sum(int(np.size(d)) for d in M.diag) + sum(int(np.size(o)) for o in M.off.values())
            per += int(M.structure.m) ** 2
            # a power of two: calls of different sizes share compiled programs
            cap = MAX_BATCH.get(jax.default_backend(), MAX_BATCH_ACCELERATOR)
            batch_size = int(max(1, min(1 << max(B - 1, 0).bit_length(), 2e7 // per, cap)))
        batch_size = positive_int(batch_size, "batch_size")
        if sharding is not None:
            batch_size = -(-batch_size // n_dev) * n_dev  # a multiple of the device count
        with progress(B, "batched fits", unit="fit") as bar:
            for s in range(0, B, batch_size):
                Yb = Y[:, s : s + batch_size]
                Sb = starts[s : s + batch_size]
                nb = Yb.shape[1]
                if nb < batch_size and (s > 0 or sharding is not None):  # pad: one compiled shape
                    Yb = np.concatenate([Yb, np.repeat(Yb[:, -1:], batch_size - nb, axis=1)], axis=1)
                    Sb = np.concatenate([Sb, np.repeat(Sb[-1:], batch_size - nb, axis=0)], axis=0)
                D, offs = model.response_blocks(Yb - model.design.offset[:, None])
                D, offs, Sb = jnp.asarray(D), [jnp.asarray(o) for o in offs], jnp.asarray(Sb)
                if sharding is not None:
                    D, Sb = jax.device_put(D, sharding), jax.device_put(Sb, sharding)
                    offs = [jax.device_put(o, sharding) for o in offs]
                res = _fit_batch(Sb, M, D, offs, jnp.asarray(max_iter))
                for key, v in zip(FIELDS, res):
                    out[key].append(np.asarray(v)[:nb])
                bar.update(nb)
                if pilot and s == 0 and B > batch_size:
                    ok = np.asarray(res[2])[:nb] == 0
                    if ok.any():
                        fitted = np.stack([rectify(t, model.specs)[0] for t in np.asarray(res[6])[:nb][ok]])
                        starts = starts.copy()
                        starts[batch_size:] = np.median(fitted, axis=0)
    return {k: np.concatenate(v) for k, v in out.items()}
