"""The package's shape, read from its source with ``ast`` (nothing is imported):

- no import circle between modules of ``jaxlmm`` (``kernels/`` installs as ``jaxlmm.kernels``);
- no import of the package's own modules inside a function;
- no private name (``_x``) imported from another module;
- ``jaxlmm.kernels`` and ``jaxlmm.optim`` import nothing from the rest of the package;
- every module at most 500 lines; every package folder is listed in ``pyproject.toml``.
"""

from __future__ import annotations

import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
MAX_LINES = 500


def modules(root: pathlib.Path = ROOT) -> dict[str, pathlib.Path]:
    """Module name -> file, for ``jaxlmm/`` and ``kernels/`` (as ``jaxlmm.kernels``)."""
    out = {}
    for base, folder in (("jaxlmm", root / "jaxlmm"), ("jaxlmm.kernels", root / "kernels")):
        for f in sorted(folder.rglob("*.py")):
            parts = list(f.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([base, *parts])] = f
    return out


def _target(mod: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(mods: dict[str, pathlib.Path]):
    """``(module, imported module, name or None, line, inside a function)`` for every import of
    the package's own modules."""
    out = []
    for mod, f in mods.items():
        tree = ast.parse(f.read_text(), str(f))
        parent = {c: p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            p, in_function = parent.get(node), False
            while p is not None:
                in_function |= isinstance(p, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                p = parent.get(p)
            if isinstance(node, ast.Import):
                pairs = [(a.name, None) for a in node.names]
            else:
                tgt = _target(mod, f.name == "__init__.py", node)
                pairs = [((tgt + "." + a.name), None) if (tgt + "." + a.name) in mods else (tgt, a.name)
                         for a in node.names]
            for tgt, name in pairs:
                if tgt != "jaxlmm" and not tgt.startswith("jaxlmm."):
                    continue
                while tgt not in mods and "." in tgt:
                    tgt = tgt.rsplit(".", 1)[0]
                out.append((mod, tgt, name, node.lineno, in_function))
    return out


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), or a self-import."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in edges.get(v, ()):
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def graph(mods) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for mod, tgt, _, _, in_function in imports(mods):
        if not in_function and tgt != mod and not (mod.startswith(tgt + ".") and tgt == "jaxlmm"):
            edges[mod].add(tgt)
    return edges


MODS = modules()


def test_the_reader_sees_the_whole_package():
    assert {"jaxlmm", "jaxlmm.lmm.lmer", "jaxlmm.glmm.glmer", "jaxlmm.kernels.cholesky"} <= set(MODS)
    assert len(imports(MODS)) > 200


def test_no_import_circle():
    assert cycles(graph(MODS)) == []


def test_the_cycle_finder_finds_a_back_import(tmp_path):
    """A deliberate back-import (the kernels importing the LMM face) makes a circle."""
    for rel, text in {
        "jaxlmm/__init__.py": "from .lmm import result\n",
        "jaxlmm/lmm/__init__.py": "",
        "jaxlmm/lmm/result.py": "from ..kernels import cholesky\n",
        "kernels/__init__.py": "",
        "kernels/cholesky.py": "from ..lmm.result import LmerResult\n",
    }.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    mods = modules(tmp_path)
    assert cycles(graph(mods)) == [["jaxlmm.kernels.cholesky", "jaxlmm.lmm.result"]]


def test_no_function_level_import_of_own_modules():
    late = [f"{m} line {ln}: {t}{'.' + n if n else ''}" for m, t, n, ln, fn in imports(MODS)
            if fn]
    assert late == []


def test_no_private_name_crosses_modules():
    private = [f"{m} line {ln}: {t}.{n}" for m, t, n, ln, _ in imports(MODS)
               if n and n.startswith("_") and not n.startswith("__") and t != m]
    assert private == []


@pytest.mark.parametrize("room", ["jaxlmm.kernels", "jaxlmm.optim"])
def test_the_lowest_rooms_import_nothing_above(room):
    inside = [m for m in MODS if m == room or m.startswith(room + ".")]
    out = sorted({t for m, t, _, _, _ in imports(MODS) if m in inside
                  and t not in inside and t not in ("jaxlmm.errors", "jaxlmm.precision")})
    assert out == []


def test_no_module_over_500_lines():
    long = {m: n for m, f in MODS.items() if (n := len(f.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_every_package_folder_is_installed():
    text = (ROOT / "pyproject.toml").read_text()
    listed = set(re.findall(r'"(jaxlmm(?:\.\w+)*)"', text.split("[tool.setuptools]")[1].split("[tool.setuptools.package-data]")[0]))
    folders = {m for m, f in MODS.items() if f.name == "__init__.py"}
    assert folders == listed
