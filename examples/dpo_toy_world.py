# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""DPO on the toy world: a toy-world SFT model learns to prefer correct answers over hallucinated colours, shapes and
counts; prints held-out preference accuracy and hallucination rates before and after (definitions in
`modeling_xgenmm.toy_world.dpo`). LoRA on the language model by default, as in the report (`--use_peft false` for
full DPO; add `--freeze_vision false --freeze_resampler false` to train the vision side too).

    python examples/dpo_toy_world.py --sft_model runs/toy-world/model --output_dir runs/toy-world-dpo
    python examples/dpo_toy_world.py --output_dir runs/toy-world-dpo   # trains the SFT model first (xgenmm toy-world)
"""

from dataclasses import dataclass, field
from pathlib import Path

from trl import TrlParser

from modeling_xgenmm.toy_world.dpo import ToyWorldDPOSettings, run_toy_world_dpo
from modeling_xgenmm.toy_world.recipe import run_toy_world
from modeling_xgenmm.toy_world.settings import ToyWorldSettings


@dataclass
class ScriptArguments:
    output_dir: str = field(metadata={"help": "Where the DPO model (and the SFT model, when trained here) go."})
    sft_model: str | None = field(default=None, metadata={"help": "A saved toy-world SFT model; default: train one."})


def main(argv: list[str] | None = None) -> dict:
    parser = TrlParser((ScriptArguments, ToyWorldDPOSettings))
    script_args, settings = parser.parse_args_and_config(argv)

    output_dir = Path(script_args.output_dir)
    sft_model = script_args.sft_model
    if sft_model is None:
        run_toy_world(output_dir / "sft", ToyWorldSettings())
        sft_model = output_dir / "sft" / "model"

    metrics = run_toy_world_dpo(sft_model, output_dir, settings)
    print(f"{'held-out metric':<24}{'before':>10}{'after':>10}")
    for name in metrics["before"]:
        print(f"{name:<24}{metrics['before'][name]:>10.3f}{metrics['after'][name]:>10.3f}")
    return metrics


if __name__ == "__main__":
    main()
