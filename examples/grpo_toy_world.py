# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""GRPO on the toy world: a weak toy-world SFT model (a short fine-tuning run) raises its held-out exact-match
accuracy with TRL's `GRPOTrainer`, the toy world's own answer checker as reward; prints the accuracy per question kind
before and after (definitions in `modeling_xgenmm.toy_world.grpo`).

    python examples/grpo_toy_world.py --output_dir runs/toy-world-grpo   # trains the weak SFT model first
    python examples/grpo_toy_world.py --sft_model runs/toy-world/model --output_dir runs/toy-world-grpo
"""

from dataclasses import dataclass, field
from pathlib import Path

from trl import TrlParser

from modeling_xgenmm.toy_world.grpo import ToyWorldGRPOSettings, run_toy_world_grpo
from modeling_xgenmm.toy_world.recipe import run_toy_world
from modeling_xgenmm.toy_world.settings import ToyWorldSettings


@dataclass
class ScriptArguments:
    output_dir: str = field(metadata={"help": "Where the GRPO model (and the SFT model, when trained here) go."})
    sft_model: str | None = field(default=None, metadata={"help": "A saved toy-world SFT model; default: train one."})
    sft_steps: int = field(default=500, metadata={"help": "Fine-tuning steps of the weak SFT model trained here."})


def main(argv: list[str] | None = None) -> dict:
    parser = TrlParser((ScriptArguments, ToyWorldGRPOSettings))
    script_args, settings = parser.parse_args_and_config(argv)

    output_dir = Path(script_args.output_dir)
    sft_model = script_args.sft_model
    if sft_model is None:
        run_toy_world(output_dir / "sft", ToyWorldSettings(pretrain_steps=600, sft_steps=script_args.sft_steps))
        sft_model = output_dir / "sft" / "model"

    metrics = run_toy_world_grpo(sft_model, output_dir, settings)
    print(f"{'held-out exact match':<24}{'before':>10}{'after':>10}")
    for name in metrics["before"]:
        print(f"{name:<24}{metrics['before'][name]:>10.1%}{metrics['after'][name]:>10.1%}")
    return metrics


if __name__ == "__main__":
    main()
