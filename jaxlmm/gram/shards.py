"""The Gram blocks accumulated over row shards on a mesh of devices (``jax.shard_map`` + ``psum``).

Same blocks as :func:`jaxlmm.gram.gram_blocks` (``A = [Z X y]' W [Z X y]``, level pattern
included), but the sums over rows run on the devices: the rows are split evenly over a 1-D
mesh (padded with zero-weight rows), each device sums its own rows per level (or level pair)
with segment sums, and one ``psum`` adds the partial blocks. The level pattern of each
off-diagonal block (which level pairs occur) is found once on the host. With several
accelerators, or with XLA's host platform split into devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=8``), the pass over the rows runs in
parallel; multi-host, each process passes its own devices.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ..terms.design import Design
from .blocks import Gram, stage_pattern
from ..kernels.structure import key_name
from ..precision import float64

AXIS = "rows"

# ``lmer(shard=None)`` sums over row shards when this process has several devices and at least
# this many rows (below it the host's bincounts take milliseconds).
SHARD_MIN_ROWS = 100_000


def segment_cross(a, b, w, seg, nseg: int):
    """``sum_{r: seg_r = s} w_r a_r b_r'`` for every segment ``s``: ``(nseg, p_a, p_b)`` (in JAX)."""
    prod = (w[:, None, None] * a[:, :, None]) * b[:, None, :]
    return jax.ops.segment_sum(prod, seg, num_segments=nseg)


def _local_sums(codes, cols, pair_ids, w, *, nlevels, npairs, pair_keys):
    """Per-device partial blocks of the rows it holds, then summed over the mesh."""
    K = len(nlevels)

    def cross(a, b, seg, nseg):
        return segment_cross(a, b, w, seg, nseg)

    diag = [cross(cols[i], cols[i], codes[i], nlevels[i]) for i in range(K - 1)]
    xy = cols[K - 1]
    diag.append(((w[:, None] * xy).T @ xy)[None])
    off = {}
    for i, j in pair_keys:
        if i == K - 1:
            off[key_name(i, j)] = jnp.swapaxes(cross(cols[j], xy, codes[j], nlevels[j]), 1, 2)
        else:
            off[key_name(i, j)] = cross(cols[i], cols[j], pair_ids[key_name(i, j)], npairs[key_name(i, j)])
    return jax.lax.psum((diag, off), AXIS)


def gram_blocks_sharded(design: Design, devices: Sequence[jax.Device] | None = None) -> Gram:
    """:func:`jaxlmm.gram.gram_blocks` with the sums over rows split over ``devices`` (default:
    this process's devices of the default backend). Returns host (numpy) blocks."""
    devices = list(jax.local_devices() if devices is None else devices)
    nd = len(devices)
    terms = design.terms
    XY = np.column_stack([design.X, design.y - design.offset])
    nlevels = tuple(t.n_levels for t in terms) + (1,)
    widths = tuple(t.width for t in terms) + (XY.shape[1],)
    K = len(nlevels)
    codes = [t.codes.astype(np.int32) for t in terms]
    cols = [np.asarray(t.columns, dtype=np.float64) for t in terms] + [XY]

    pattern, pair_ids = stage_pattern(codes, nlevels[:-1])
    pair_ids = {name: inv.astype(np.int32) for name, inv in pair_ids.items()}
    pair_keys = list(pattern)
    npairs = {key_name(i, j): len(pattern[(i, j)][0]) for (i, j) in pair_keys if i < K - 1}

    n = design.n
    pad = (-n) % nd

    def padded(a):
        return np.concatenate([a, np.zeros((pad,) + a.shape[1:], dtype=a.dtype)]) if pad else a

    mesh = Mesh(np.array(devices), (AXIS,))
    rows = NamedSharding(mesh, PartitionSpec(AXIS))
    with float64():
        put = lambda a: jax.device_put(padded(a), rows)  # noqa: E731
        args = ([put(c) for c in codes] + [put(np.zeros(n, dtype=np.int32))],
                [put(c) for c in cols], {k: put(v) for k, v in pair_ids.items()},
                put(np.asarray(design.weights, dtype=np.float64)))

        def local(codes_, cols_, pairs_, w_):
            return _local_sums(codes_, cols_, pairs_, w_, nlevels=nlevels, npairs=npairs,
                               pair_keys=tuple(pair_keys))

        fn = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=PartitionSpec(AXIS),
                                   out_specs=PartitionSpec()))
        diag, off = jax.device_get(fn(*args))
    return Gram(nlevels=nlevels, widths=widths, diag=[np.asarray(d) for d in diag],
                off={k: np.asarray(v) for k, v in off.items()}, pattern=pattern)


def use_shards(shard: bool | None, n: int) -> bool:
    """Whether ``lmer(shard=...)`` sums the Gram blocks over row shards."""
    if shard is None:
        return len(jax.local_devices()) > 1 and n >= SHARD_MIN_ROWS
    return bool(shard)
