"""Generate the simulated ``classroom`` example data set (``classroom.csv``).

The data are *simulated*, not observed. Four classrooms were (notionally) randomised
to a level of background noise -- classrooms A, B, C and D got noise levels 10, 4, 6
and 8 -- and hold 5, 4, 5 and 4 students. Each student's gender ("F"/"M") is recorded
and the outcome is a science test score::

    score = 80 - 2.0 * noise + 3.0 * (gender == "F")
            + classroom effect ~ N(0, 4^2) + residual ~ N(0, 5^2)

rounded to one decimal. Noise is a classroom-level (between-group) covariate, so the
model ``score ~ noise + gender + (1 | classroom)`` estimates its effect from only four
classrooms -- a deliberately small example.

Run ``python -m jaxlmm.datasets.make_classroom`` (or this file directly) to rewrite
``classroom.csv`` next to this script; the fixed seed makes the output reproducible.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

SEED = 20261125
CLASSROOMS = ("A", "B", "C", "D")
NOISE = (10, 4, 6, 8)
SIZES = (5, 4, 5, 4)
INTERCEPT = 80.0
NOISE_SLOPE = -2.0
FEMALE_EFFECT = 3.0
SD_CLASSROOM = 4.0
SD_RESIDUAL = 5.0


def simulate(seed: int = SEED) -> pd.DataFrame:
    """Return the simulated classroom data (18 rows) for ``seed``."""
    rng = np.random.default_rng(seed)
    n = sum(SIZES)
    classroom = np.repeat(CLASSROOMS, SIZES)
    noise = np.repeat(NOISE, SIZES)
    student = [f"{c}{i + 1}" for c, k in zip(CLASSROOMS, SIZES) for i in range(k)]
    # Draw order is part of the data set's definition: classroom effects, genders, residuals.
    u = rng.normal(0.0, SD_CLASSROOM, size=len(CLASSROOMS))
    gender = rng.choice(np.array(["F", "M"]), size=n)
    eps = rng.normal(0.0, SD_RESIDUAL, size=n)
    effect = np.repeat(u, SIZES)
    score = INTERCEPT + NOISE_SLOPE * noise + FEMALE_EFFECT * (gender == "F") + effect + eps
    return pd.DataFrame(
        {
            "student": student,
            "classroom": classroom,
            "noise": noise.astype(int),
            "gender": gender,
            "score": np.round(score, 1),
        }
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0]) if argv else Path(__file__).with_name("classroom.csv")
    df = simulate()
    df.to_csv(out, index=False, float_format="%.1f")
    print(f"wrote {len(df)} rows to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
