"""The suite's fitted workloads (W1, W2, W3, W6): data generated in code with fixed seeds (or the
bundled InstEval CSV), one lme4-syntax formula each, and which peers can express the model.

W4 (many responses) and W5 (the dense solver as n grows) have their own scripts,
``bench_many.py`` and ``bench_dense.py``; ``suite.py`` runs them and collects their results.

Every generator returns a pandas DataFrame whose grouping columns are strings, so that they are
factors in R and categorical for every Python engine. No jax or jaxlmm import here.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import pandas as pd

import common
from maximal import MAXIMAL_FORMULA, make_maximal


@dataclasses.dataclass(frozen=True)
class Workload:
    """A fitted workload: ``make(size)`` builds the data (``size`` is its scale: rows, or
    subjects for W3); ``factors`` are its grouping columns; ``peers`` the engines that can
    express the model; ``statsmodels`` the ``MixedLM.from_formula`` arguments where it can."""

    key: str
    title: str
    formula: str
    make: Callable[[int], pd.DataFrame]
    default_size: int
    size_label: str
    factors: tuple[str, ...]
    peers: tuple[str, ...]
    statsmodels: dict | None = None
    dense_max_rows: int = 10_000  # the dense n x n solver only below this many rows


# ----------------------------------------------------------------------------- W1


INSTEVAL_FORMULA = "y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept:service)"
INSTEVAL_FACTORS = ("s", "d", "studage", "lectage", "service", "dept")


def insteval(size: int = 0) -> pd.DataFrame:
    """lme4's InstEval (73,421 rows), bundled; ``size`` is ignored."""
    return pd.read_csv(common.DATA_DIR / "InstEval.csv.gz", dtype={c: str for c in INSTEVAL_FACTORS})


# ----------------------------------------------------------------------------- W2


def random_slope(n: int = 1_000_000, groups: int | None = None, seed: int = 2) -> pd.DataFrame:
    """``y = 1 + 0.5 x + b0[g] + b1[g] x + e``: ``n`` rows over ``n / 20`` groups (50,000 at 1M),
    unbalanced (group sizes Poisson around 20), sd(b0) = 1, sd(b1) = 0.5, cor 0.3, sd(e) = 1."""
    groups = max(n // 20, 2) if groups is None else groups
    rng = np.random.default_rng(seed)
    g = np.sort(rng.integers(0, groups, n))
    x = rng.normal(size=n)
    C = np.array([[1.0, 0.15], [0.15, 0.25]])
    b = rng.multivariate_normal(np.zeros(2), C, size=groups)
    y = 1.0 + 0.5 * x + b[g, 0] + b[g, 1] * x + rng.normal(size=n)
    width = len(str(groups))
    labels = np.char.add("g", np.char.zfill(np.arange(groups).astype(str), width))
    return pd.DataFrame({"g": labels[g], "x": x, "y": y})


# ----------------------------------------------------------------------------- W6


def movielens(n: int = 1_000_000, seed: int = 32, n_users: int | None = None,
              n_items: int | None = None) -> pd.DataFrame:
    """Ratings shaped like MovieLens 32M scaled to ``n`` ratings: ``200,948 n / 32M`` users and
    ``84,432 n / 32M`` items (6,280 x 2,638 at 1M), each (user, item) pair at most once.

    User activity is heavy tailed (at least 20 ratings, lognormal beyond, capped at a quarter
    of the items); item popularity is Zipf-like (``rank^-0.9``). Ratings are half stars
    ``0.5..5`` from ``3.5 + u + v + e`` with sd 0.4, 0.5 and 0.9. ``n_users`` / ``n_items``
    override the scaled counts (``gpu_run.py``'s MovieLens 10M shape: 69,878 x 10,677).
    """
    s = n / 32_000_000
    n_users = max(int(round(200_948 * s)), 50) if n_users is None else int(n_users)
    n_items = max(int(round(84_432 * s)), 20) if n_items is None else int(n_items)
    rng = np.random.default_rng(seed)
    cap = max(n_items // 4, 1)
    activity = rng.lognormal(0.0, 1.3, n_users)
    counts = np.full(n_users, min(20, cap), dtype=np.int64)
    for _ in range(50):  # spread the remaining ratings over users below the cap
        rest = n - int(counts.sum())
        free = counts < cap
        if rest <= 0 or not free.any():
            break
        share = activity * free
        add = np.floor(share / share.sum() * rest).astype(np.int64)
        if add.sum() == 0:
            add[np.argmax(share)] = rest
        counts = np.minimum(counts + add, cap)
    popularity = rng.permutation(np.arange(1, n_items + 1) ** -0.9)
    popularity /= popularity.sum()
    users = np.repeat(np.arange(n_users), counts)
    items = rng.choice(n_items, users.size, p=popularity)
    rows = np.arange(users.size)  # rows whose user may still hold a repeated pair
    for _ in range(100):  # redraw repeated (user, item) pairs, later occurrences first drawn again
        key = users[rows] * n_items + items[rows]
        _, first = np.unique(key, return_index=True)
        dup = np.ones(key.size, dtype=bool)
        dup[first] = False
        if not dup.any():
            break
        dup = rows[dup]  # ascending, as the boolean mask over all rows was
        items[dup] = rng.choice(n_items, dup.size, p=popularity)
        # only the redrawn users' rows can repeat a pair next time (a user's rows are contiguous
        # and keys of different users never collide), so the same rows are redrawn as before
        touched = np.zeros(n_users, dtype=bool)
        touched[users[dup]] = True
        rows = np.flatnonzero(touched[users])
    key = np.sort(users * n_items + items)  # np.unique's result, without its slow hash path
    key = key[np.concatenate(([True], key[1:] != key[:-1]))]
    u, i = key // n_items, key % n_items
    value = (3.5 + 0.4 * rng.normal(size=n_users)[u] + 0.5 * rng.normal(size=n_items)[i]
             + 0.9 * rng.normal(size=u.size))
    y = np.clip(np.round(2 * value) / 2, 0.5, 5.0)
    user_labels = np.char.add("u", np.arange(n_users).astype(str))  # labels once per level
    item_labels = np.char.add("m", np.arange(n_items).astype(str))
    return pd.DataFrame({"y": y, "user": user_labels[u], "item": item_labels[i]})


# ----------------------------------------------------------------------------- registry


WORKLOADS: dict[str, Workload] = {
    "W1": Workload(
        key="W1", title="InstEval, crossed (1|s) + (1|d) + (1|dept:service)",
        formula=INSTEVAL_FORMULA, make=insteval, default_size=73_421, size_label="rows",
        factors=INSTEVAL_FACTORS, peers=("mixedlm", "lme4"),
    ),
    "W2": Workload(
        key="W2", title="one factor, random intercept and slope (1 + x | g), n/20 groups",
        formula="y ~ 1 + x + (1 + x | g)", make=random_slope, default_size=1_000_000,
        size_label="rows", factors=("g",), peers=("mixedlm", "lme4", "statsmodels"),
        statsmodels={"formula": "y ~ 1 + x", "groups": "g", "re_formula": "~x"},
    ),
    "W3": Workload(
        key="W3", title="maximal crossed model, 8x8 templates by subject and by item (72 theta)",
        formula=MAXIMAL_FORMULA, make=lambda size: make_maximal(n_subjects=size, n_items=2 * size),
        default_size=30, size_label="subjects (items = 2 x subjects)", factors=("subj", "item"),
        peers=("mixedlm", "lme4", "dense"),
    ),
    "W6": Workload(
        key="W6", title="MovieLens-shaped crossed y ~ 1 + (1|user) + (1|item), Zipf-like activity",
        formula="y ~ 1 + (1 | user) + (1 | item)", make=movielens, default_size=1_000_000,
        size_label="ratings", factors=("user", "item"), peers=("mixedlm", "lme4"),
    ),
}
