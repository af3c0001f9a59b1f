"""`recsys train` and `recsys evaluate`: thin argparse wrappers around typed functions.

    recsys train --config CFG [--data DIR] [--out RUN_DIR] [--resume CKPT|RUN_DIR] [--max-epochs N]
                 [--refit]
    recsys train --config CFG --print-config
    recsys evaluate (--run RUN_DIR | --checkpoint CKPT | --bundle BUNDLE) [--data DIR]
                    [--split valid|test] [--retriever NAME] [--out JSON]

Both print a Markdown table of the model beside the popularity baseline (ranks: 1 + number
of items scoring strictly higher than the target, seen items masked; see recsys.metrics).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from recsys.errors import UserError
from recsys.evaluation import (
    PopularityScorer,
    evaluate,
    format_table,
    training_item_counts,
    write_json,
)
from recsys.training.config import RunConfig, load_config

BRUTE_FORCE = ("brute-force",)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `train` and `evaluate` to the `recsys` console script."""
    p = subparsers.add_parser(
        "train",
        help="train a sequential recommender (Lightning) and evaluate it",
        description="Train from a YAML run config; writes checkpoints, best.safetensors, "
        "model_config.json and metrics.json into the run directory.",
    )
    p.add_argument("--config", required=True, type=Path, help="YAML run config (configs/*.yaml)")
    p.add_argument("--data", type=Path, help="dataset directory (overrides data.path)")
    p.add_argument("--out", type=Path, help="run directory (default runs/<config name>)")
    p.add_argument("--resume", help="checkpoint to resume from, or a run directory (its last.ckpt)")
    p.add_argument("--max-epochs", type=int, help="override training.epochs")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument(
        "--refit",
        action="store_true",
        help="after selection on validation, train again from scratch on train + validation "
        "targets for the selected number of epochs and report test once (RUN_DIR/refit)",
    )
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print the config as it would run (its `extends` chain merged, every default "
        "filled in: what RUN_DIR/run_config.yaml will hold) and exit without training",
    )
    p.set_defaults(func=run_train)

    e = subparsers.add_parser(
        "evaluate",
        help="full-ranking HR/NDCG/MRR of a trained model beside popularity",
        description="Full-ranking leave-one-out evaluation (seen items masked; "
        "rank = 1 + #items scoring strictly higher than the target).",
    )
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", type=Path, help="run directory written by `recsys train`")
    src.add_argument("--checkpoint", type=Path, help="a Lightning checkpoint (.ckpt)")
    src.add_argument(
        "--bundle",
        type=Path,
        help="a bundle written by `recsys export` (needs --data, its dataset): the model as "
        "served, compared with the figures its run recorded; exit status 1 if they differ",
    )
    e.add_argument("--data", type=Path, help="dataset directory (default: the run's)")
    e.add_argument("--split", choices=("valid", "test"), default="test")
    from recsys.retrieval.factory import RETRIEVER_NAMES

    e.add_argument(
        "--retriever",
        default="brute-force",
        choices=sorted({"brute-force", *RETRIEVER_NAMES}),
        help="brute-force: score the whole catalog (exact, default); others rank through "
        "recsys.retrieval (RAILS: topk_per_embd, topk_avg, combined; bounded_exact)",
    )
    e.add_argument("--out", type=Path, help="write the results as JSON here")
    e.add_argument("--batch-size", type=int, default=256)
    e.add_argument("--bf16", action="store_true", help="score in bf16 (faster, may add ties)")
    e.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda"
    )
    e.set_defaults(func=run_evaluate)


def load_run_config(path: str | Path) -> RunConfig:
    """`recsys.training.config.load_config`, plus the check of `data.synthetic` against the
    generator's fields (`pipelines.synth.SynthConfig`; recsys keeps them as given): every
    error names the file, before any data is read or generated."""
    from pipelines.synth import synth_config

    config = load_config(path)
    if config.data.synthetic is not None:
        try:
            synth_config(config.data.synthetic)
        except UserError as e:
            raise UserError(f"{path}: {e}") from e
    return config


def resolved_config_text(path: str | Path, config: RunConfig) -> str:
    """YAML of `config` as `recsys train` runs it (as RUN_DIR/run_config.yaml holds it),
    under a comment naming the files it was merged from."""
    import yaml

    from recsys.training.config import read_config_file

    _, files = read_config_file(Path(path))
    header = [f"# {path} as `recsys train` runs it, every default filled in; merged from"]
    header += [
        f"#   {f}" + ("" if i + 1 == len(files) else ", which extends") for i, f in enumerate(files)
    ]
    return "\n".join(header) + "\n" + yaml.safe_dump(config.to_dict(), sort_keys=False)


def prepare_data(config: RunConfig, data_dir: str | Path | None) -> Path:
    """The dataset directory of a run (--data beats data.path, `resolve_data_dir`); when it
    does not exist and the config has a `data.synthetic` section, the synthetic dataset is
    generated there first (`recsys train --config configs/demo.yaml` needs no download)."""
    from pipelines.synth import make_dataset, synth_config
    from recsys.training.run import resolve_data_dir

    path = resolve_data_dir(config, data_dir)
    if not path.exists() and config.data.synthetic is not None:
        make_dataset(synth_config(config.data.synthetic), path)
    return path


def run_train(args: argparse.Namespace) -> int:
    from recsys.training.run import train

    if args.max_epochs is not None and args.max_epochs < 1:
        raise UserError(f"--max-epochs must be >= 1, got {args.max_epochs}")
    config = load_run_config(args.config)  # validated before any data is read
    if args.print_config:
        print(resolved_config_text(args.config, config), end="")
        return 0
    metrics = train(
        config,
        data_dir=prepare_data(config, args.data),
        out_dir=args.out,
        resume=args.resume,
        max_epochs=args.max_epochs,
        progress_bar=not args.no_progress,
    )
    if metrics:  # empty on non-zero DDP ranks
        table = {
            "model (valid)": metrics["valid"],
            "popularity (valid)": metrics["popularity_valid"],
            "model (test)": metrics["test"],
            "popularity (test)": metrics["popularity"],
        }
        print(format_table(table))
        for warning in metrics["warnings"]:
            print(f"warning: {warning}", file=sys.stderr)
    if metrics and args.refit:
        from recsys.training.run import DEFAULT_RUNS, refit

        run_dir = args.out if args.out is not None else DEFAULT_RUNS / config.name
        refitted = refit(config, run_dir, data_dir=args.data, progress_bar=not args.no_progress)
        print(f"refit ({refitted['epochs']} epochs on train + valid), selected on validation:")
        print(
            format_table(
                {"refit (test)": refitted["test"], "popularity (test)": refitted["popularity"]}
            )
        )
    return 0


def _load(args: argparse.Namespace) -> tuple[Any, Path, int]:
    """-> (SeqRecModel, data dir, max_len) from --run or --checkpoint."""
    from recsys.training import rundir

    if args.run is not None:
        model, info = rundir.load_model(args.run)
        return model, Path(args.data or info.data_dir), info.max_len
    model, _ = rundir.load_checkpoint_model(args.checkpoint)
    data_dir = args.data
    run_dir = Path(args.checkpoint).resolve().parent.parent
    if data_dir is None and (run_dir / rundir.MODEL_CONFIG).is_file():
        data_dir = rundir.read_run_info(run_dir).data_dir
    if data_dir is None:
        raise UserError("--data is required with a checkpoint outside a run directory")
    return model, Path(data_dir), model.config.encoder.max_len


def run_evaluate(args: argparse.Namespace) -> int:
    from recsys.dataset import load_dataset

    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    bundle = None
    if args.bundle is not None:
        bundle, data_dir, data = _load_bundle(args)
        model, max_len = bundle.model, bundle.max_len
    else:
        model, data_dir, max_len = _load(args)
        data = load_dataset(data_dir)
    if data.num_items != model.num_items:
        raise UserError(
            f"{data_dir} has {data.num_items} items but the model was trained on "
            f"{model.num_items}: pass the training dataset with --data"
        )
    device = torch.device(args.device)
    model = model.to(device)
    if args.retriever in BRUTE_FORCE:
        result = evaluate(model, data, args.split, max_len, args.batch_size, device, args.bf16)
    else:
        result = _evaluate_with_retriever(model, data, args, max_len, device)
    popularity = PopularityScorer(training_item_counts(data)).to(device)
    pop = evaluate(popularity, data, args.split, max_len, args.batch_size, device)
    name = f"model ({args.retriever})"
    rows = {name: result, "popularity": pop}
    recorded = None if bundle is None else (bundle.metadata.get("metrics") or {}).get(args.split)
    if isinstance(recorded, dict):
        rows["recorded at export"] = recorded
    print(format_table(rows), file=sys.stdout)
    if args.out is not None:
        write_json(
            args.out,
            {
                "split": args.split,
                "retriever": args.retriever,
                "data_dir": str(data_dir),
                "model": result,
                "popularity": pop,
            },
        )
    if bundle is None:
        return 0
    return _compare_with_recorded(args, result, recorded)


# A bundle's model ranked as its run ranked it (fp32, brute force) gives the same figures:
# only a score within float rounding of its target's could move a rank, and 1e-4 is less
# than one query's weight in a split of up to 10,000 users.
RECORDED_ATOL = 1e-4


def _load_bundle(args: argparse.Namespace) -> tuple[Any, Path, Any]:
    """-> (Bundle, data dir, SequenceDataset), the dataset checked to be the bundle's."""
    from recsys.bundle import check_bundle_dataset, load_bundle
    from recsys.dataset import load_dataset

    if args.data is None:
        raise UserError(
            "--data DIR is required with --bundle: a bundle does not record where its "
            "dataset lives (pass the one the model was trained on)"
        )
    bundle = load_bundle(args.bundle, device=args.device)
    data = load_dataset(args.data)
    check_bundle_dataset(bundle, data, args.data)
    return bundle, Path(args.data), data


def _compare_with_recorded(
    args: argparse.Namespace, result: dict[str, float], recorded: object
) -> int:
    """Print whether the bundle ranks `args.split` as its run recorded; 1 if it does not."""
    if not isinstance(recorded, dict):
        print(f"{args.bundle}: its run recorded no {args.split} figures to compare with")
        return 0
    shared = [k for k in result if isinstance(recorded.get(k), int | float)]
    worst = max(shared, key=lambda k: abs(result[k] - recorded[k]), default=None)
    if worst is None:
        print(f"{args.bundle}: its recorded {args.split} figures name none of these metrics")
        return 0
    gap = abs(result[worst] - recorded[worst])
    if gap <= RECORDED_ATOL:
        print(
            f"{args.bundle}: the {args.split} figures its run recorded are reproduced "
            f"({len(shared)} metrics, largest difference {gap:.1e})"
        )
        return 0
    print(
        f"{args.bundle}: {worst} on {args.split} is {result[worst]:.4f}, but its run recorded "
        f"{recorded[worst]:.4f}: not the model that was measured, or ranked differently "
        "(--bf16, --retriever)",
        file=sys.stderr,
    )
    return 1


def _evaluate_with_retriever(
    model: Any, data: Any, args: argparse.Namespace, max_len: int, device: torch.device
) -> dict[str, float]:
    """Ranks from a retriever's top-200 lists (recsys.retrieval.evaluate)."""
    from recsys.retrieval.evaluate import evaluate_with_retriever

    return evaluate_with_retriever(
        model, data, args.split, max_len, args.retriever, batch_size=args.batch_size, device=device
    )
