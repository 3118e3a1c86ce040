"""The blocked Gram matrix ``[Z X y]' W [Z X y]``: every sum over the n rows the fit needs,
block by block of level pairs (design note section 3), so that no per-theta evaluation touches
the rows again.

Modules: ``blocks`` (the Gram blocks of a design, in memory), ``shards`` (the same sums over row
shards on several devices, ``jax.shard_map``), ``outofcore`` (accumulated over Parquet batches,
two passes, memory bounded by one batch).
"""
