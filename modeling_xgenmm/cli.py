# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""The `xgenmm` command line. Each subcommand registers itself in `build_parser` through an `add_<name>_command`
function that sets the handler to run; `xgenmm COMMAND --help` describes its arguments.

- `xgenmm convert`: a released Salesforce checkpoint into this package's format (`checkpoint.convert`).
- `xgenmm publish`: a self-contained Hub folder, written and uploaded (`hub.publish`).
- `xgenmm toy-world`: the toy-world recipe, trained and evaluated (`toy_world.recipe`).
- `xgenmm eval`: lmms-eval on a model, the results into its model card (`eval.run`).
"""

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import torch
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.serialization._base import parse_size_to_int

from .checkpoint.convert import convert_original_checkpoint
from .checkpoint.folders import ModelFolderError
from .checkpoint.key_map import OriginalCheckpointError
from .checkpoint.network import HubRequestError
from .hub.publish import PublishError, prepare_hub_folder, publish
from .hub.variants import REPORT_SHOTS, VARIANTS
from .toy_world.settings import DEFAULT_CONFIG as DEFAULT_TOY_CONFIG
from .toy_world.settings import ToyWorldSettings


def add_convert_command(subcommands: argparse._SubParsersAction) -> None:
    convert = subcommands.add_parser(
        "convert",
        help="convert a released Salesforce xGen-MM v1.5 checkpoint into this package's format",
        description=(
            "Convert a released Salesforce xGen-MM v1.5 checkpoint (original format: config.json with "
            "vision_encoder_config, `vlm.` weights) into this package's format: translated config.json with the Hub "
            "auto_map, model code, generation_config.json and sharded safetensors weights, streamed one tensor at a "
            "time. The result loads with from_pretrained, or with trust_remote_code=True without this package."
        ),
    )
    convert.add_argument("original", metavar="ORIGINAL", help="local folder or Hub repo id of the original checkpoint")
    convert.add_argument("output", metavar="OUT", help="output folder (must not exist or be empty)")
    convert.add_argument(
        "--dtype",
        choices=["bfloat16", "float32"],
        default="bfloat16",
        help="dtype of the written weights (default: %(default)s)",
    )
    convert.add_argument(
        "--max-shard-size",
        type=shard_size,
        default="5GB",
        help="largest weight file, e.g. 5GB or 500MB (default: %(default)s); the conversion's peak memory is about "
        "one such file",
    )
    convert.set_defaults(handler=run_convert)


def run_convert(args: argparse.Namespace) -> None:
    output_dir = convert_original_checkpoint(
        args.original, args.output, dtype=getattr(torch, args.dtype), max_shard_size=args.max_shard_size
    )
    print(f"Converted {args.original} into {output_dir}")


def add_publish_command(subcommands: argparse._SubParsersAction) -> None:
    publish_command = subcommands.add_parser(
        "publish",
        help="write a self-contained Hub folder for a model and upload it to the Hugging Face Hub",
        description=(
            "Write a self-contained Hub folder for the model in FOLDER (config.json with the auto_map, "
            "generation_config.json, model and processing code, processor and tokenizer files, chat template, "
            "safetensors weights, README.md model card), which loads with trust_remote_code=True without this "
            "package, and upload it to REPO_ID (created if needed) with your saved Hugging Face login."
        ),
    )
    publish_command.add_argument(
        "source",
        metavar="FOLDER",
        help="a model folder saved with save_pretrained (model and processor), or a hub_configs/<variant> folder "
        "with --weights",
    )
    publish_command.add_argument("repo_id", metavar="REPO_ID", help="Hub repo id, e.g. namespace/name")
    publish_command.add_argument(
        "--weights", metavar="DIR", help="folder of the safetensors weights (default: FOLDER)"
    )
    publish_command.add_argument(
        "--tokenizer",
        metavar="DIR_OR_REPO",
        help="folder or Hub repo id of the tokenizer (default: FOLDER, then --weights)",
    )
    publish_command.add_argument(
        "--variant",
        choices=sorted(VARIANTS),
        metavar="NAME",
        help=f"the variant the model card describes, one of {', '.join(sorted(VARIANTS))} (default: FOLDER's name "
        "when it is one of them)",
    )
    publish_command.add_argument(
        "--output-dir", metavar="DIR", help="where to write the Hub folder (default: a temporary folder)"
    )
    publish_command.add_argument("--private", action="store_true", default=None, help="create the repo as private")
    publish_command.add_argument("--commit-message", metavar="TEXT", help="message of the upload commit")
    publish_command.add_argument(
        "--dry-run", action="store_true", help="only write the Hub folder and say where; upload nothing"
    )
    publish_command.set_defaults(handler=run_publish)


def run_publish(args: argparse.Namespace) -> None:
    sources = {"weights": args.weights, "tokenizer": args.tokenizer, "variant": args.variant}
    if args.dry_run:
        output_dir = args.output_dir or tempfile.mkdtemp(prefix="xgenmm-publish-")
        folder = prepare_hub_folder(args.source, output_dir, args.repo_id, **sources)
        print(f"Dry run: wrote the Hub folder for {args.repo_id} to {folder}; nothing was uploaded")
        return
    commit = publish(
        args.source,
        args.repo_id,
        **sources,
        output_dir=args.output_dir,
        private=args.private,
        commit_message=args.commit_message,
    )
    print(f"Published {args.source} to {commit.repo_url} ({commit.commit_url})")


def shard_size(text: str) -> int | str:
    """A size `huggingface_hub` reads (`5GB`, `500MB`) or a number of bytes, checked before anything is written."""
    try:
        size = int(text) if text.isdigit() else parse_size_to_int(text)
    except ValueError:
        size = 0
    if size <= 0:
        raise argparse.ArgumentTypeError(f"expected a size such as 5GB, 500MB or 1000000 (bytes), got {text!r}")
    return int(text) if text.isdigit() else text


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {text}")
    return value


def add_toy_world_command(subcommands: argparse._SubParsersAction) -> None:
    defaults = ToyWorldSettings()
    toy_world = subcommands.add_parser(
        "toy-world",
        help="train a small random xGen-MM on a synthetic world of coloured shapes and print held-out accuracy",
        description=(
            "Train a small randomly initialised xGen-MM model on a synthetic world of coloured shapes, through "
            "pretraining (captions, interleaved documents) and supervised fine-tuning (single- and two-image "
            "questions) on transformers.Trainer, then print its exact-match accuracy on held-out questions. The "
            'model and processor are saved to OUTPUT_DIR/model. The README\'s "Toy world" section gives the time '
            "it takes."
        ),
    )
    toy_world.add_argument(
        "--output-dir",
        default="runs/toy-world",
        help="where to save the model and processor, in OUTPUT_DIR/model (default: %(default)s)",
    )
    toy_world.add_argument(
        "--config", default=str(DEFAULT_TOY_CONFIG), help="the toy-world model config folder (default: %(default)s)"
    )
    toy_world.add_argument(
        "--quick", action="store_true", help="a shortened run (about a minute) that learns far less"
    )
    toy_world.add_argument(
        "--pretrain-steps", type=positive_int, help=f"pretraining steps (default {defaults.pretrain_steps})"
    )
    toy_world.add_argument("--sft-steps", type=positive_int, help=f"fine-tuning steps (default {defaults.sft_steps})")
    toy_world.add_argument(
        "--pair-fraction",
        type=fraction,
        help=f"share of two-image questions among the fine-tuning rows (default {defaults.pair_fraction})",
    )
    toy_world.add_argument(
        "--seed", type=int, default=defaults.seed, help="seed of the weights and the data (default: %(default)s)"
    )
    toy_world.set_defaults(handler=run_toy_world_command)


def run_toy_world_command(args: argparse.Namespace) -> None:
    # Imported here: the trainers take a second to import, which `convert` and `publish` should not pay.
    from .toy_world.evaluation import format_accuracy_table
    from .toy_world.recipe import run_toy_world

    settings = ToyWorldSettings.quick() if args.quick else ToyWorldSettings()
    given = {name: getattr(args, name) for name in ("pretrain_steps", "sft_steps", "pair_fraction")}
    settings = dataclasses.replace(settings, seed=args.seed, **{k: v for k, v in given.items() if v is not None})
    started = time.perf_counter()
    accuracy = run_toy_world(args.output_dir, settings, args.config)
    print(format_accuracy_table(accuracy))
    print(f"Trained and evaluated in {time.perf_counter() - started:.0f} s; model saved to {args.output_dir}/model")


def add_eval_command(subcommands: argparse._SubParsersAction) -> None:
    evaluate = subcommands.add_parser(
        "eval",
        help="evaluate a model with lmms-eval and write the results into its model card",
        description=(
            "Run lmms-eval (installed with the package's `eval` extra) on MODEL for TASKS (comma-separated lmms-eval "
            "task names; the package's own, e.g. xgenmm_toy_world, included), write lmms-eval's JSON under "
            "--output-path and, for a local folder, the results into its README.md (model-index), which `xgenmm "
            "publish` publishes."
        ),
    )
    evaluate.add_argument("model", metavar="MODEL", help="a model folder (or Hub id)")
    evaluate.add_argument("--tasks", required=True, help="comma-separated lmms-eval task names")
    evaluate.add_argument(
        "--output-path", default="runs/eval", help="where lmms-eval writes its results (default: %(default)s)"
    )
    evaluate.add_argument(
        "--batch-size", type=positive_int, default=1, help="prompts per generate call (default: %(default)s)"
    )
    evaluate.add_argument(
        "--num-shots",
        type=int,
        default=0,
        help=f"in-context examples, base models only: {', '.join(map(str, REPORT_SHOTS))} (default: %(default)s)",
    )
    evaluate.add_argument("--limit", type=positive_int, help="only the first N documents of each task (testing)")
    evaluate.add_argument(
        "--model-args",
        default="",
        help="more model_args for lmms-eval, e.g. dtype=bfloat16 (the model and --num-shots are given above)",
    )
    evaluate.add_argument("--force-simple", action="store_true", help="lmms-eval's plain mode (likelihood tasks)")
    evaluate.add_argument("--log-samples", action="store_true", help="also write every prompt's output")
    evaluate.add_argument("--no-card", action="store_true", help="leave the model card as it is")
    evaluate.set_defaults(handler=run_eval_command)


def run_eval_command(args: argparse.Namespace) -> None:
    from .eval.run import run_eval

    results_file = run_eval(
        args.model,
        args.tasks,
        args.output_path,
        write_card=not args.no_card,
        batch_size=args.batch_size,
        num_shots=args.num_shots,
        limit=args.limit,
        model_args=args.model_args,
        force_simple=args.force_simple,
        log_samples=args.log_samples,
    )
    card = Path(args.model) / "README.md"
    written_to_card = not args.no_card and card.parent.is_dir()
    print(f"lmms-eval results: {results_file}" + (f"; written into the model card {card}" if written_to_card else ""))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xgenmm", description="xGen-MM (BLIP-3) tools.")
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_convert_command(subcommands)
    add_publish_command(subcommands)
    add_toy_world_command(subcommands)
    add_eval_command(subcommands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        args.handler(args)
    except (ModelFolderError, OriginalCheckpointError, PublishError, HubRequestError) as error:
        parser.exit(1, f"xgenmm {args.command}: error: {one_line(error)}\n")
    except HfHubHTTPError as error:
        parser.exit(1, f"xgenmm {args.command}: error: the Hub refused the request: {one_line(error)}\n")
    except (OSError, ValueError, RuntimeError) as error:
        # Anything else the inputs can cause (an unreadable file, a malformed config the library rejects).
        parser.exit(1, f"xgenmm {args.command}: error: {type(error).__name__}: {one_line(error)}\n")
    return 0


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


if __name__ == "__main__":
    sys.exit(main())
