import json
import sys
from pathlib import Path

import pandas as pd
import pytest

DATA = Path(__file__).parent / "data"

# The tests mirror the package's folders (tests/lmm, tests/glmm, tests/oracles, ...); some share
# helpers across folders (the oracles' dense objective, the reference cases, the program-size
# counter), imported by module name: every test folder is on the path.
for _folder in sorted(p for p in Path(__file__).parent.iterdir() if p.is_dir() and p.name not in ("data", "__pycache__")):
    if str(_folder) not in sys.path:
        sys.path.append(str(_folder))

# columns that R treats as factors although the CSV stores them as numbers
FACTOR_COLUMNS = {
    "InstEval": ["s", "d", "studage", "lectage", "service", "dept"],
}


# factors whose R level order is not alphabetical (nlme's Orthodont: Sex is Male, Female)
LEVEL_ORDER = {
    "Orthodont": {"Sex": ["Male", "Female"]},
}


def load_data(name: str) -> pd.DataFrame:
    path = DATA / f"{name}.csv"
    if not path.exists():
        path = DATA / f"{name}.csv.gz"
    dtype = {c: str for c in FACTOR_COLUMNS.get(name, [])}
    df = pd.read_csv(path, dtype=dtype)
    for col, levels in LEVEL_ORDER.get(name, {}).items():
        df[col] = pd.Categorical(df[col], categories=levels)
    return df


def load_reference(fid: str) -> dict:
    return json.loads((DATA / f"{fid}.json").read_text())


def lmer_reference_ids() -> list[str]:
    out = []
    for p in sorted(DATA.glob("*.json")):
        if json.loads(p.read_text()).get("kind") == "lmer":
            out.append(p.stem)
    return out


@pytest.fixture
def sleepstudy() -> pd.DataFrame:
    return load_data("sleepstudy")


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compiled programs after each test module. One process runs the whole suite and
    every compiled CPU executable holds memory mappings: by some 800 tests they neared the
    kernel's limit (vm.max_map_count, 65530 by default), and XLA's compiler then crashed with a
    segmentation fault. A module's own fits still share their programs."""
    yield
    import gc

    import jax

    jax.clear_caches()
    gc.collect()
