"""jaxlmm: linear mixed models in lme4 syntax, fitted by REML/ML on a jitted blocked sparse
Cholesky in JAX.

Data flow, one folder a step: ``terms`` (lme4 bars, the design: X, level codes, per-row columns)
-> ``covariance`` (theta <-> templates, sd/cor) -> ``gram`` (blocked ``[Z X y]' W [Z X y]``, in
memory, sharded or out of core) -> ``lmm`` (profiled objective over ``kernels``, BFGS from
``optim``, the engine, the record, :class:`LmerResult`) -> ``inference`` (exact Hessians,
Satterthwaite, Kenward–Roger, profiles, intervals, simulate/bootstrap, anova, predict) ->
``report`` (summary, tidy, plots). Residual structures: ``rside`` (correlation and variance
structures, ``gls``). Generalized linear mixed models: ``glmm`` (family -> PIRLS -> fit ->
:class:`GlmerResult`).
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
from .inference.anova import anova  # noqa: E402
from .rside.correlation import AR1, Exponential  # noqa: E402
from .rside.correlation_matrices import CompoundSymmetry, Toeplitz, Unstructured  # noqa: E402
from .rside.gls import gls  # noqa: E402
from .lmm.lmer import lmer  # noqa: E402
from .glmm.family import Family, binomial, family, gamma, poisson  # noqa: E402
from .glmm.glmer import glmer  # noqa: E402
from .glmm.many import glmer_many  # noqa: E402
from .glmm.result import GlmerResult  # noqa: E402
from .lmm.many import lmer_many  # noqa: E402
from .rside.variance import VarExp, VarIdent, VarPower  # noqa: E402
from .lmm.result import LmerResult  # noqa: E402
from .nlmm.many import nlmer_many  # noqa: E402
from .nlmm.nlmer import nlmer  # noqa: E402
from .nlmm.result import NlmerResult  # noqa: E402
from .nlmm import selfstart as nonlinear  # noqa: E402
from .progress import set_progress  # noqa: E402
from .compilation import cache_dir, clear_cache, set_cache  # noqa: E402
from .report import plots  # noqa: E402
from .saving import load  # noqa: E402

from .version import __version__  # noqa: E402

__all__ = [
    "lmer",
    "lmer_many",
    "glmer",
    "glmer_many",
    "GlmerResult",
    "nlmer",
    "nlmer_many",
    "NlmerResult",
    "nonlinear",
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
    "set_cache",
    "cache_dir",
    "clear_cache",
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
