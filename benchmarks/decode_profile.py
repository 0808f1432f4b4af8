# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Where a decode step's time goes: `generate`'s loop around the model, the model's forward, its linear layers, and
the package's own code (self time of `modeling_xgenmm.py`), per step at batch 1, under `cProfile` (which inflates
Python-heavy parts: read the split, not the absolute times). The decode share is a 65-token run minus a 1-token run.

    python -m benchmarks.decode_profile [--preset tiny|small] [--threads 1] [--dtype float32|bfloat16]
"""

import argparse
import copy
import cProfile
import pstats

import torch

from modeling_xgenmm.checkpoint.contents import build_processor
from xgenmm_processing import XGenMMTokenizer

from .generation_speed import generation_inputs
from .presets import PRESETS, TOKENIZER_FOLDER, preset_config
from .run import build_model


MODEL_FILE = "modeling_xgenmm/modeling_xgenmm.py"
NEW_TOKENS = 65


def profiled(function) -> pstats.Stats:
    profile = cProfile.Profile()
    profile.enable()
    function()
    profile.disable()
    return pstats.Stats(profile)


def cumulative(stats: pstats.Stats, file_part: str, function: str, first_line: int = 0) -> float:
    return sum(
        entry[3]
        for (file, line, name), entry in stats.stats.items()
        if file_part in file and name == function and line >= first_line
    )


def self_time(stats: pstats.Stats, file_part: str) -> float:
    return sum(entry[2] for (file, _, _), entry in stats.stats.items() if file_part in file)


def decode_split(model, inputs: dict) -> dict:
    """Seconds per decode step: generate, the model's forward, its linear layers, the package's own code."""

    def generate(tokens: int):
        config = copy.deepcopy(model.generation_config)
        config.update(do_sample=False, max_new_tokens=tokens, eos_token_id=None)  # every run decodes all its tokens
        return lambda: model.generate(**inputs, generation_config=config)

    generate(3)()  # warm-up
    short, long = profiled(generate(1)), profiled(generate(NEW_TOKENS))
    # the head model's forward is the last `forward` of the modeling file
    outer = max(line for file, line, name in long.stats if MODEL_FILE in file and name == "forward")
    parts = {
        "generate": lambda stats: cumulative(stats, "generation/utils.py", "generate"),
        "model_forward": lambda stats: cumulative(stats, MODEL_FILE, "forward", outer),
        "linear_layers": lambda stats: cumulative(stats, "torch/nn/modules/linear.py", "forward"),
        "package_own_code": lambda stats: self_time(stats, MODEL_FILE),
    }
    return {name: (measure(long) - measure(short)) / (NEW_TOKENS - 1) for name, measure in parts.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small", choices=("tiny", "small"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tokenizer = XGenMMTokenizer.from_pretrained(TOKENIZER_FOLDER)
    config = preset_config(PRESETS[args.preset], tokenizer)
    model = build_model(config, getattr(torch, args.dtype), torch.device("cpu"))
    inputs = generation_inputs(build_processor(config, tokenizer), 1, torch.device("cpu"))
    inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    split = decode_split(model, inputs)
    step = split["generate"]
    print(f"preset {args.preset}, {args.dtype}, {args.threads} thread(s): one decode step at batch 1, under cProfile")
    rows = [
        ("decode step (generate)", step),
        ("  generate's loop around the model", step - split["model_forward"]),
        ("  model forward", split["model_forward"]),
        ("    linear layers (matrix work)", split["linear_layers"]),
        ("    package's own code (modeling_xgenmm.py)", split["package_own_code"]),
        (
            "    the rest (attention, norms, cache, library Python)",
            split["model_forward"] - split["linear_layers"] - split["package_own_code"],
        ),
    ]
    print(f"| {'part':<54} | {'ms':>6} | {'share':>5} |\n|{'-' * 56}|{'-' * 8}|{'-' * 7}|")
    for name, seconds in rows:
        print(f"| {name:<54} | {seconds * 1e3:>6.2f} | {seconds / step:>5.0%} |")


if __name__ == "__main__":
    main()
