"""A "maximal" linear mixed model in the sense of Barr et al. (2013): a 2x2x2 within-subject,
within-item factorial, every fixed effect also a random slope by subject and by item,
correlated.

    y ~ 1 + x1 + ... + x7 + (1 + x1 + ... + x7 | subj) + (1 + x1 + ... + x7 | item)

8x8 covariance templates by subject and by item: 2 * 36 = 72 variance parameters, about 1,800
rows (every subject sees every item once). The three factors A, B, C are sum-coded (+-1/2):
``x1 = A``, ``x2 = B``, ``x3 = C``, ``x4 = 2 A B``, ``x5 = 2 A C``, ``x6 = 2 B C``,
``x7 = 4 A B C`` (all +-1/2, mutually orthogonal over the 8 cells). The condition of
subject ``s`` on item ``i`` is a Latin square, cell ``(i + s) mod 8``, so each subject sees
every cell 7-8 times and each item every cell 3-4 times: all slopes vary within subject and
within item, as in a typical psycholinguistic experiment.

True covariances: standard deviations (intercept, slopes) of ``(1.0, 0.6, 0.5, 0.4, 0.3, 0.3,
0.25, 0.2)`` by subject and ``(0.8, 0.5, 0.4, 0.3, 0.3, 0.25, 0.2, 0.2)`` by item, residual 1.0,
and a random correlation matrix (seeded) with eigenvalues bounded away from zero, so the model
is not singular at the truth. With 3-4 observations per item and cell the estimate is, like
that of most real maximal models, close to singular.

``python benchmarks/maximal.py [--csv PATH]`` prints a summary (or writes the data).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

COVARIATES = tuple(f"x{k}" for k in range(1, 8))
_RHS = " + ".join(("1",) + COVARIATES)
MAXIMAL_FORMULA = f"y ~ {_RHS} + ({_RHS} | subj) + ({_RHS} | item)"

BETA = np.array([5.0, 0.5, 0.3, 0.2, 0.1, 0.1, 0.05, 0.0])
SD_SUBJ = np.array([1.0, 0.6, 0.5, 0.4, 0.3, 0.3, 0.25, 0.2])
SD_ITEM = np.array([0.8, 0.5, 0.4, 0.3, 0.3, 0.25, 0.2, 0.2])
SIGMA = 1.0
DEFAULT_SEED = 20240607


def _cells() -> np.ndarray:
    """The 8 cells of the 2x2x2 design as rows of (x1..x7), +-1/2 coding."""
    out = []
    for a in (-0.5, 0.5):
        for b in (-0.5, 0.5):
            for c in (-0.5, 0.5):
                out.append([a, b, c, 2 * a * b, 2 * a * c, 2 * b * c, 4 * a * b * c])
    return np.array(out)


def random_correlation(p: int, rng: np.random.Generator, min_eig: float = 0.2) -> np.ndarray:
    """A random p x p correlation matrix with smallest eigenvalue >= ``min_eig`` (about)."""
    A = rng.normal(size=(p, 2 * p))
    S = A @ A.T / (2 * p)
    d = np.sqrt(np.diag(S))
    R = S / np.outer(d, d)
    w, V = np.linalg.eigh(R)
    w = np.maximum(w, min_eig)
    R = (V * w) @ V.T
    d = np.sqrt(np.diag(R))
    return R / np.outer(d, d)


def true_covariances(seed: int = DEFAULT_SEED) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed + 1)
    Rs = random_correlation(8, rng)
    Ri = random_correlation(8, rng)
    return Rs * np.outer(SD_SUBJ, SD_SUBJ), Ri * np.outer(SD_ITEM, SD_ITEM)


def make_maximal(n_subjects: int = 30, n_items: int = 60, seed: int = DEFAULT_SEED) -> pd.DataFrame:
    """Simulate the maximal design: columns ``subj, item, x1..x7, y`` (``n_subjects * n_items``
    rows). ``subj`` and ``item`` are strings (``s01``, ``i001``), so they are factors in R too."""
    rng = np.random.default_rng(seed)
    cells = _cells()
    s = np.repeat(np.arange(n_subjects), n_items)
    i = np.tile(np.arange(n_items), n_subjects)
    cell = (i + s) % 8
    X = cells[cell]  # (n, 7)
    Xf = np.column_stack([np.ones(len(s)), X])  # (n, 8)
    Gs, Gi = true_covariances(seed)
    bs = rng.multivariate_normal(np.zeros(8), Gs, size=n_subjects)
    bi = rng.multivariate_normal(np.zeros(8), Gi, size=n_items)
    y = Xf @ BETA + np.einsum("np,np->n", Xf, bs[s]) + np.einsum("np,np->n", Xf, bi[i])
    y = y + SIGMA * rng.normal(size=len(s))
    sw = max(2, len(str(n_subjects)))
    iw = max(3, len(str(n_items)))
    df = pd.DataFrame({
        "subj": [f"s{k + 1:0{sw}d}" for k in s],
        "item": [f"i{k + 1:0{iw}d}" for k in i],
    })
    for k, name in enumerate(COVARIATES):
        df[name] = X[:, k]
    df["y"] = y
    return df


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", help="write the data to this CSV file")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    a = ap.parse_args()
    df = make_maximal(seed=a.seed)
    if a.csv:
        df.to_csv(a.csv, index=False)
    print(MAXIMAL_FORMULA)
    print(df.shape)
    print(df.head())
