"""Command-line interface: ``jaxlmm fit`` and ``jaxlmm datasets``.

Usage::

    jaxlmm fit DATA FORMULA [--ml] [--weights COL] [--offset COL] [--ddf DDF]
                            [--output OUT.json] [--device cpu|gpu] [--max-iter N]
    jaxlmm fit --example NAME [FORMULA] [options]
    jaxlmm datasets

``DATA`` is a CSV file (read with pandas' default type inference; ``-`` reads CSV from
standard input) or a Parquet file (``.parquet`` / ``.pq``; needs pyarrow). ``fit``
prints the model summary; with ``--ddf`` (``satterthwaite``, ``kenward-roger``,
``residual`` or ``none``) also the fixed effects with t tests; ``--output`` writes the fit
as JSON (glance, tidy, varcorr, convergence); ``--device`` picks JAX's platform.

Exit status: 0 on success; 2 for bad input or usage (argument errors, any
:class:`jaxlmm.errors.JaxlmmError`, an unreadable or missing data file, a device that is not
available), with a one-line message on standard error and no traceback; 3 when the fit
finished but did not converge (the summary and JSON are still written, the warning is on
standard error); 1 for any other failure.
jaxlmm's warnings (e.g. a singular fit) are printed to standard error as
``jaxlmm: warning: ...`` lines. Set ``JAXLMM_DEBUG=1`` to get the traceback of an unexpected failure.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings
from pathlib import Path
from typing import Sequence

import pandas as pd

import jaxlmm

from . import datasets
from .arguments import positive_int
from .errors import ArgumentError, JaxlmmError, JaxlmmWarning

PROG = "jaxlmm"
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOT_CONVERGED = 3
DDF_CHOICES = ("satterthwaite", "kenward-roger", "residual", "none")

_PARQUET_SUFFIXES = (".parquet", ".pq")


class _UsageError(Exception):
    """Bad input detected by the CLI itself (exit status 2)."""


class _DependencyError(Exception):
    """An optional dependency is missing (exit status 1)."""


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Fit linear (and, with --family, generalized linear) mixed models written in lme4 "
                    "formula syntax.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    fit = sub.add_parser(
        "fit",
        help="fit a model and print its summary",
        description=(
            "Fit FORMULA to the data in DATA (CSV, or Parquet if the name ends in "
            ".parquet/.pq; '-' reads CSV from stdin), or to a bundled data set with "
            "--example NAME (FORMULA then defaults to that data set's example formula)."
        ),
        usage=(
            f"{PROG} fit DATA FORMULA [options]\n"
            f"       {PROG} fit --example NAME [FORMULA] [options]"
        ),
    )
    fit.add_argument("args", nargs="*", metavar="DATA FORMULA", help=argparse.SUPPRESS)
    fit.add_argument(
        "--example",
        metavar="NAME",
        help="use a bundled data set (" + ", ".join(datasets.names()) + ")",
    )
    fit.add_argument(
        "--ml",
        action="store_true",
        help="fit by maximum likelihood instead of REML",
    )
    fit.add_argument("--weights", metavar="COL", help="column of prior (precision) weights")
    fit.add_argument("--offset", metavar="COL", help="column added to the linear predictor")
    fit.add_argument("--ddf", choices=DDF_CHOICES, metavar="DDF",
                     help="also print fixed-effect t tests with these denominator degrees of freedom: "
                          + ", ".join(DDF_CHOICES))
    fit.add_argument("--output", metavar="FILE", help="write the fit as JSON to FILE")
    fit.add_argument("--device", choices=("cpu", "gpu"), help="JAX platform to fit on (default: JAX's choice)")
    fit.add_argument("--max-iter", default=1000, metavar="N",
                     help="optimiser iteration limit (default 1000)")
    fit.add_argument("--family", metavar="NAME",
                     help="fit a generalized linear mixed model (glmer) of this family: binomial, poisson, gamma "
                          "(default for --example cbpp: binomial)")
    fit.add_argument("--link", metavar="LINK", help="link function of --family (default: the canonical one)")
    fit.add_argument("--nagq", default=1, metavar="K",
                     help="adaptive Gauss-Hermite nodes for --family (default 1: Laplace)")
    fit.set_defaults(handler=_cmd_fit, subparser=fit)

    ds = sub.add_parser(
        "datasets",
        help="list the bundled data sets and their example formulas",
        description="List the bundled data sets and their example formulas.",
    )
    ds.set_defaults(handler=_cmd_datasets, subparser=ds)
    return parser


def read_data(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a CSV (pandas default inference) or Parquet file into a DataFrame."""
    spath = os.fspath(path)
    if spath == "-":
        try:
            return pd.read_csv(sys.stdin)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _UsageError(f"cannot read CSV from standard input: {exc}") from None
    p = Path(spath)
    if not p.exists():
        raise _UsageError(f"data file not found: {spath}")
    if p.is_dir():
        raise _UsageError(f"data path is a directory, not a file: {spath}")
    if p.suffix.lower() in _PARQUET_SUFFIXES:
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise _DependencyError(
                f"reading Parquet file {spath} needs pyarrow, which is not installed; "
                "install it with `pip install pyarrow` (or `pip install jaxlmm[parquet]`), "
                "or convert the data to CSV"
            ) from None
        reader = pd.read_parquet
    else:
        reader = pd.read_csv
    try:
        return reader(p)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        # unreadable file, malformed CSV/Parquet (pandas' and pyarrow's parse errors
        # are ValueErrors), wrong encoding: bad input, not a bug
        raise _UsageError(f"cannot read data file {spath}: {exc}") from None


def _cmd_fit(ns: argparse.Namespace) -> int:
    sub: argparse.ArgumentParser = ns.subparser
    args: list[str] = list(ns.args)
    # counts parsed here, not by argparse, before the data are read: a bad value is one
    # 'jaxlmm: error:' line (exit status 2)
    ns.max_iter = positive_int(_int_option(ns.max_iter, "--max-iter"), "--max-iter")
    ns.nagq = _int_option(ns.nagq, "--nagq")  # its range is glmer's to check
    if ns.example is not None:
        if len(args) > 1:
            sub.error("with --example, give at most one positional argument (FORMULA)")
        data = datasets.load(ns.example)  # DataError (exit 2) for an unknown name
        formula = args[0] if args else datasets.EXAMPLES[ns.example.strip().lower()]
        if ns.family is None and not args:
            ns.family = datasets.EXAMPLE_FAMILIES.get(ns.example.strip().lower())
    else:
        if len(args) != 2:
            sub.error(
                "expected DATA and FORMULA (or --example NAME [FORMULA]); got "
                f"{len(args)} positional argument{'s' if len(args) != 1 else ''}"
            )
        data = read_data(args[0])
        formula = args[1]

    _select_device(ns.device)
    kwargs = {} if ns.max_iter == 1000 else {"max_iter": ns.max_iter}
    glmm = ns.family is not None
    if not glmm and (ns.link is not None or ns.nagq != 1):
        raise _UsageError("--link and --nagq need --family (a generalized linear mixed model)")
    if glmm and (ns.ml or ns.ddf not in (None, "none")):
        raise _UsageError("--family fits by maximum likelihood with z tests: leave out --ml and --ddf")
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        if glmm:
            fit = jaxlmm.glmer(formula, data, ns.family, link=ns.link, nagq=ns.nagq, weights=ns.weights,
                               offset=ns.offset, **kwargs)
        else:
            fit = jaxlmm.lmer(formula, data, reml=not ns.ml, weights=ns.weights, offset=ns.offset, **kwargs)
        summary = fit.summary()
        ddf = None if ns.ddf in (None, "none") else ns.ddf
        table = fit.coef_table(ddf) if ns.ddf else None
        if ns.output:
            _write_json(ns.output, fit, ddf)
    print(summary)
    if table is not None:
        print(f"\nFixed effects, t tests ({ns.ddf} df):")
        print(table.to_string())
    converged = getattr(fit, "converged", True)
    return EXIT_OK if converged else EXIT_NOT_CONVERGED


def _int_option(text, option: str) -> int:
    """The integer an option's text spells, or an ArgumentError naming the option."""
    try:
        return int(text)
    except (TypeError, ValueError):
        raise ArgumentError(f"{option} must be an integer, got {text!r}") from None


def _select_device(device: str | None) -> None:
    """Point JAX at the requested platform before its backend starts."""
    if device is None:
        return
    import jax

    try:
        jax.config.update("jax_platforms", "cpu" if device == "cpu" else "cuda,rocm")
        jax.devices()
    except RuntimeError:
        hint = "; install jax[cuda12] on a machine with an NVIDIA GPU" if device == "gpu" else ""
        raise _UsageError(f"--device {device}: JAX has no {device.upper()} backend here{hint}") from None


def _write_json(path: str, fit, ddf: str | None) -> None:
    """The fit as JSON: model, glance, fixed effects (tidy rows), varcorr, convergence."""
    import json

    def records(frame):
        return json.loads(frame.to_json(orient="records", double_precision=15))

    out = {
        "formula": fit.formula,
        "reml": fit.reml,
        "converged": bool(fit.converged),
        "singular": bool(fit.singular),
        "warnings": list(fit.optinfo.get("warnings", ())),
        "glance": records(fit.glance())[0],
        "coefficients": records(fit.tidy() if hasattr(fit, "family") else fit.tidy(ddf=ddf)),
        "family": [fit.family.name, fit.family.link.name] if hasattr(fit, "family") else None,
        "varcorr": records(fit.varcorr) if fit.ngroups else [],
        "theta": [float(t) for t in fit.theta],
        "n_evals": int(fit.optinfo["n_evals"]),
    }
    try:
        Path(path).write_text(json.dumps(out, indent=2) + "\n")
    except OSError as exc:
        raise _UsageError(f"cannot write --output {path}: {exc}") from None


def _cmd_datasets(ns: argparse.Namespace) -> int:
    rows = []
    for name in datasets.names():
        df = datasets.load(name)
        rows.append((name, f"{df.shape[0]} x {df.shape[1]}", datasets.EXAMPLES[name]))
    w0 = max(len("name"), *(len(r[0]) for r in rows))
    w1 = max(len("rows x cols"), *(len(r[1]) for r in rows))
    print(f"{'name':<{w0}}  {'rows x cols':<{w1}}  example formula")
    for name, shape, formula in rows:
        print(f"{name:<{w0}}  {shape:<{w1}}  {formula}")
    print(f"\nRun one with: {PROG} fit --example NAME [FORMULA]")
    return EXIT_OK


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Print jaxlmm's own warnings as one plain line; others in the usual format."""
    stream = sys.stderr if file is None else file
    if issubclass(category, JaxlmmWarning):
        text = f"{PROG}: warning: {message}\n"
    else:
        text = warnings.formatwarning(message, category, filename, lineno, line)
    try:
        stream.write(text)
    except (OSError, AttributeError):
        pass


def _error(msg: str) -> None:
    print(f"{PROG}: error: {msg}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (never raises ``SystemExit``)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        parser = _build_parser()
        ns = parser.parse_args(argv)
        return int(ns.handler(ns))
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        code = exc.code
        if code is None:
            return EXIT_OK
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)
        return EXIT_FAILURE
    except (JaxlmmError, _UsageError) as exc:
        _error(str(exc))
        return EXIT_USAGE
    except FileNotFoundError as exc:
        _error(f"file not found: {exc.filename or exc}")
        return EXIT_USAGE
    except _DependencyError as exc:
        _error(str(exc))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except Exception as exc:  # anything else is a bug or an environment problem
        if os.environ.get("JAXLMM_DEBUG"):
            traceback.print_exc()
        _error(f"unexpected {type(exc).__name__}: {exc}")
        return EXIT_FAILURE


if __name__ == "__main__":
    raise SystemExit(main())
