"""Small example data sets shipped with jaxlmm.

``load(name)`` returns a :class:`pandas.DataFrame`; ``names()`` lists what is available
and ``EXAMPLES[name]`` gives the canonical lme4 formula for each data set. Grouping
columns are read as strings (e.g. sleepstudy's ``Subject`` is ``"308"``, not ``308``).

The first six are copies of data sets distributed with the R package lme4
(Bates, Maechler, Bolker & Walker, 2015); see lme4's help pages for the original
sources (Davies & Goldsmith, 1972, for dyestuff, penicillin and pastes; Box & Tiao,
1973, for dyestuff2; Belenky et al., 2003, for sleepstudy):

``sleepstudy`` (180 x 3: ``Reaction``, ``Days``, ``Subject``)
    Average reaction time (ms) per day for 18 subjects in a sleep-deprivation study
    (Belenky et al., 2003); days 0-9, with sleep restricted to 3 hours per night from
    day 2 on. Model: ``Reaction ~ Days + (Days | Subject)``.
``dyestuff`` (30 x 2: ``Batch``, ``Yield``)
    Yield of dyestuff (grams of standard colour) from 5 preparations from each of 6
    batches of an intermediate product. Model: ``Yield ~ 1 + (1 | Batch)``.
``dyestuff2`` (30 x 2: ``Batch``, ``Yield``)
    Simulated data (Box & Tiao) with the same structure as ``dyestuff``, in which the
    between-batch variance is estimated as zero -- the standard singular-fit example.
    Model: ``Yield ~ 1 + (1 | Batch)``.
``penicillin`` (144 x 3: ``diameter``, ``plate``, ``sample``)
    Diameter (mm) of the zone of inhibition of bacterial growth, 6 penicillin samples
    on each of 24 plates: fully crossed random effects.
    Model: ``diameter ~ 1 + (1 | plate) + (1 | sample)``.
``pastes`` (60 x 4: ``strength``, ``batch``, ``cask``, ``sample``)
    Strength of a chemical paste: 10 delivery batches, 3 casks per batch, 2 assays
    per cask; casks are nested in batches (``sample`` is the batch:cask label).
    Model: ``strength ~ 1 + (1 | batch/cask)``.

``cbpp`` (56 x 5: ``herd``, ``incidence``, ``size``, ``period``, ``prop``)
    Contagious bovine pleuropneumonia: new serological cases (``incidence``) among ``size``
    zebu cattle of 15 herds in Ethiopia, in 4 periods (Lesnoff et al., 2004); ``prop`` is
    ``incidence / size``. ``herd`` and ``period`` are Categoricals in R's order. A binomial
    GLMM: ``jaxlmm.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp,
    "binomial")`` (``EXAMPLE_FAMILIES["cbpp"]``).

One from the R package nlme (Pinheiro & Bates, 2000; Potthoff & Roy, 1964):

``orthodont`` (108 x 5: ``distance``, ``age``, ``Subject``, ``Sex``, ``occasion``)
    Distance (mm) from the pituitary to the pterygomaxillary fissure of 16 boys and 11 girls
    at ages 8, 10, 12 and 14 (``occasion`` 1-4). ``Sex`` is a Categorical with R's level order
    (Male, Female). Model: ``distance ~ age + Sex + (1 | Subject)``; with residual structures,
    e.g. ``gls("distance ~ age * Sex", orthodont, correlation=AR1("Subject", "occasion"))``.

One is not from R:

``classroom`` (18 x 5: ``student``, ``classroom``, ``noise``, ``gender``, ``score``)
    **Simulated** data (see ``jaxlmm/datasets/make_classroom.py``, seed 20261125).
    Four classrooms A, B, C, D randomised to background noise levels 10, 4, 6 and 8
    with 5, 4, 5 and 4 students; gender ("F"/"M") recorded; outcome a science test
    score generated as ``80 - 2*noise + 3*(gender == "F")`` plus a classroom effect
    N(0, 4^2) and residual N(0, 5^2). Model: ``score ~ noise + gender + (1 | classroom)``.
"""

from __future__ import annotations

from importlib import resources

import pandas as pd

from ..errors import DataError

__all__ = ["EXAMPLES", "EXAMPLE_FAMILIES", "load", "names"]

#: Canonical lme4 formula for each bundled data set.
EXAMPLES: dict[str, str] = {
    "sleepstudy": "Reaction ~ Days + (Days | Subject)",
    "dyestuff": "Yield ~ 1 + (1 | Batch)",
    "dyestuff2": "Yield ~ 1 + (1 | Batch)",
    "penicillin": "diameter ~ 1 + (1 | plate) + (1 | sample)",
    "pastes": "strength ~ 1 + (1 | batch/cask)",
    "classroom": "score ~ noise + gender + (1 | classroom)",
    "orthodont": "distance ~ age + Sex + (1 | Subject)",
    "cbpp": "cbind(incidence, size - incidence) ~ period + (1 | herd)",
}

#: The family of the data sets whose example is a generalized linear mixed model (``glmer``).
EXAMPLE_FAMILIES: dict[str, str] = {"cbpp": "binomial"}

# name -> (file name, columns read as strings)
_FILES: dict[str, tuple[str, tuple[str, ...]]] = {
    "sleepstudy": ("sleepstudy.csv", ("Subject",)),
    "dyestuff": ("dyestuff.csv", ("Batch",)),
    "dyestuff2": ("dyestuff2.csv", ("Batch",)),
    "penicillin": ("penicillin.csv", ("plate", "sample")),
    "pastes": ("pastes.csv", ("batch", "cask", "sample")),
    "classroom": ("classroom.csv", ("student", "classroom", "gender")),
    "orthodont": ("orthodont.csv", ("Subject", "Sex")),
    "cbpp": ("cbpp.csv", ("herd", "period")),
}

# name -> {column: level order} for factors whose order is not alphabetical in R
_LEVELS: dict[str, dict[str, list[str]]] = {
    "orthodont": {"Sex": ["Male", "Female"]},
    "cbpp": {"herd": [str(k) for k in range(1, 16)], "period": ["1", "2", "3", "4"]},
}


def names() -> list[str]:
    """Names of the bundled data sets, in a stable order."""
    return list(_FILES)


def load(name: str) -> pd.DataFrame:
    """Load a bundled data set by (case-insensitive) name as a new DataFrame.

    Grouping columns come back as strings. Raises :class:`jaxlmm.errors.DataError`
    for an unknown name.
    """
    key = str(name).strip().lower()
    if key not in _FILES:
        raise DataError(
            f"unknown dataset {name!r}; available datasets: {', '.join(names())}"
        )
    fname, str_cols = _FILES[key]
    with resources.files(__name__).joinpath(fname).open("rb") as fh:
        df = pd.read_csv(fh, dtype={c: str for c in str_cols})
    for col, levels in _LEVELS.get(key, {}).items():
        df[col] = pd.Categorical(df[col], categories=levels)
    return df
