"""jaxlmm: linear mixed models in lme4 syntax, fitted by REML/ML on a jitted blocked sparse
Cholesky in JAX.

Data flow: ``formula`` (lme4 bars) -> ``design`` (X, level codes, per-row columns) -> ``gram``
(blocked ``[Z X y]' W [Z X y]``) -> ``objective`` (profiled criterion over ``kernels``) ->
``optimize``/``fit`` (BFGS with exact gradients) -> ``results`` (:class:`LmerResult`).
Inference on a fit: ``inference`` (exact Hessians, delta method), ``ddf`` (Satterthwaite,
Kenward–Roger), ``intervals``, ``profile``, ``anova``, ``predict``, ``simulate`` (refits and
the vmapped parametric bootstrap). Generalized linear mixed models: ``family`` -> ``pirls``
(conditional modes, Laplace / adaptive Gauss-Hermite objective on the same blocked Cholesky) ->
``glmer`` -> ``glmer_result`` (:class:`GlmerResult`).
"""

def _map_source_kernels() -> None:
    """In a source checkout that is not installed, import the top-level ``kernels/`` folder as
    ``jaxlmm.kernels`` (an installed jaxlmm ships it there)."""
    import importlib.util
    import pathlib
    import sys

    if importlib.util.find_spec(__name__ + ".kernels") is not None:
        return
    src = pathlib.Path(__file__).resolve().parent.parent / "kernels" / "__init__.py"
    spec = importlib.util.spec_from_file_location(
        __name__ + ".kernels", src, submodule_search_locations=[str(src.parent)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[__name__ + ".kernels"] = module
    spec.loader.exec_module(module)
    globals()["kernels"] = module


_map_source_kernels()

from .errors import (  # noqa: E402
    ArgumentError,
    DataError,
    FitError,
    FitWarning,
    FormulaError,
    InferenceWarning,
    JaxlmmError,
    JaxlmmWarning,
    RankDeficiencyWarning,
)
from .anova import anova  # noqa: E402
from .correlation import AR1, CompoundSymmetry, Exponential, Toeplitz, Unstructured  # noqa: E402
from .gls import gls  # noqa: E402
from .lmer import lmer  # noqa: E402
from .family import Family, binomial, family, gamma, poisson  # noqa: E402
from .glmer import glmer  # noqa: E402
from .glmer_many import glmer_many  # noqa: E402
from .glmer_result import GlmerResult  # noqa: E402
from .many import lmer_many  # noqa: E402
from .variance import VarExp, VarIdent, VarPower  # noqa: E402
from .results import LmerResult  # noqa: E402
from .progress import set_progress  # noqa: E402
from .saving import load  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "lmer",
    "lmer_many",
    "glmer",
    "glmer_many",
    "GlmerResult",
    "Family",
    "family",
    "binomial",
    "poisson",
    "gamma",
    "gls",
    "anova",
    "AR1",
    "Exponential",
    "CompoundSymmetry",
    "Unstructured",
    "Toeplitz",
    "VarIdent",
    "VarPower",
    "VarExp",
    "LmerResult",
    "set_progress",
    "load",
    "JaxlmmError",
    "FormulaError",
    "DataError",
    "ArgumentError",
    "FitError",
    "JaxlmmWarning",
    "FitWarning",
    "RankDeficiencyWarning",
    "InferenceWarning",
    "__version__",
]
