"""Blocked sparse linear algebra for symmetric positive definite block matrices.

Free of statistics. Imported as ``jaxlmm.kernels``.

A matrix is given in *stages* (block rows/columns). Stage ``i`` has ``nlevels[i]`` levels
of width ``widths[i]``; its diagonal block is block diagonal by level, and an off-diagonal
block ``(i, j)`` (``i > j``) is a sparse set of ``widths[i] x widths[j]`` blocks.
:func:`analyze` finds, once per sparsity pattern, which leading stages can be eliminated
keeping their diagonal blocks block diagonal (the rest form a dense tail), the fill-in and
the index lists of every Schur-complement update; :func:`blocked_cholesky` then factors
numerically in JAX with static shapes.
"""

from .structure import BlockStructure, analyze
from .cholesky import BlockedFactor, blocked_cholesky
from .solve import solve_leading, solve_lower, solve_lower_transpose, split_stages
from .selinv import diagonal_blocks_of_inverse
from .small import small_cholesky, small_solve_lower, small_solve_upper

__all__ = [
    "BlockStructure",
    "BlockedFactor",
    "analyze",
    "blocked_cholesky",
    "solve_leading",
    "solve_lower",
    "split_stages",
    "solve_lower_transpose",
    "diagonal_blocks_of_inverse",
    "small_cholesky",
    "small_solve_lower",
    "small_solve_upper",
]
