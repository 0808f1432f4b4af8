# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""The `xgenmm` command line. Each subcommand registers itself in `build_parser` through an `add_<name>_command`
function that sets the handler to run.

    xgenmm convert ORIGINAL OUT [--dtype bfloat16|float32] [--max-shard-size 5GB]
"""

import argparse
import sys

import torch

from .convert_original_checkpoint import convert_original_checkpoint
from .original_checkpoint import OriginalCheckpointError


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
        "--dtype", choices=["bfloat16", "float32"], default="bfloat16", help="dtype of the written weights"
    )
    convert.add_argument(
        "--max-shard-size", default="5GB", help="largest weight file, e.g. 5GB or 500MB; peak memory is about one"
    )
    convert.set_defaults(handler=run_convert)


def run_convert(args: argparse.Namespace) -> None:
    output_dir = convert_original_checkpoint(
        args.original, args.output, dtype=getattr(torch, args.dtype), max_shard_size=args.max_shard_size
    )
    print(f"Converted {args.original} into {output_dir}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xgenmm", description="xGen-MM (BLIP-3) tools.")
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_convert_command(subcommands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        args.handler(args)
    except OriginalCheckpointError as error:
        parser.exit(2, f"xgenmm {args.command}: error: {error}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
