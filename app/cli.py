"""The `recsys` console script: one entry point, subcommands owned by each area.

Each module of `app` registers its own subcommands (`register(subparsers)`), so this file
only wires them together and turns `UserError` into a one-line message with exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
import warnings
from collections.abc import Sequence

from recsys.errors import UserError

BENCH_PACKAGE = "benchmarks"
BENCH_PREFIX = "bench_"


def bench_names() -> list[str]:
    """NAME of every benchmarks/bench_NAME.py module."""
    import benchmarks

    return sorted(
        m.name.removeprefix(BENCH_PREFIX)
        for m in pkgutil.iter_modules(benchmarks.__path__)
        if m.name.startswith(BENCH_PREFIX)
    )


def _register_bench(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench",
        help="run a benchmark from benchmarks/ (writes JSON to benchmarks/results/)",
        description="Run benchmarks.bench_NAME's main(); arguments after NAME go to it.",
    )
    p.add_argument("name", choices=bench_names() or None, help="benchmark name")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the benchmark")
    p.set_defaults(func=_run_bench)


def _run_bench(args: argparse.Namespace) -> int:
    module = importlib.import_module(f"{BENCH_PACKAGE}.{BENCH_PREFIX}{args.name}")
    return int(module.main(list(args.args)) or 0)


def build_parser() -> argparse.ArgumentParser:
    from app.data import register as register_data
    from app.demo import register as register_demo
    from app.export import register as register_export
    from app.serve import register as register_serving
    from app.train import register as register_training

    parser = argparse.ArgumentParser(
        prog="recsys",
        description="Sequential recommendation with learned similarities (Mixture of Logits).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register_data(sub)
    register_training(sub)
    register_export(sub)
    register_serving(sub)
    _register_bench(sub)
    register_demo(sub)
    return parser


# Third-party output a user of the CLI cannot act on (library use is left untouched).
_NOISE_WARNINGS = (r".*isinstance\(treespec, LeafSpec\)` is deprecated",)  # Lightning on torch 2.13
_NOISE_LOG_PREFIXES = ("💡 Tip:",)  # Lightning's advert for its cloud logger


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(_NOISE_LOG_PREFIXES)


def quiet_third_party() -> None:
    """Silence the third-party notices in _NOISE_WARNINGS / _NOISE_LOG_PREFIXES."""
    for pattern in _NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in logger.filters):
            logger.addFilter(_DropNoise())


# Commands that train: with RECSYS_HUGEPAGES=1 they run on glibc's huge-page heap
# (recsys.malloc), which takes a re-exec of the console script. Never for in-process calls
# (`main(argv)`, the tests).
_HUGEPAGE_COMMANDS = {("train", None), ("bench", "accuracy")}


def main(argv: Sequence[str] | None = None) -> int:
    quiet_third_party()
    parser = build_parser()
    args = parser.parse_args(argv)
    if argv is None and (args.command, getattr(args, "name", None)) in _HUGEPAGE_COMMANDS:
        from recsys.malloc import reexec_with_hugepages

        reexec_with_hugepages()
    if args.func is not _run_bench:  # each benchmark chooses its own malloc settings
        from recsys.malloc import tune_malloc

        tune_malloc()
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
