# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""DPO on the toy world: a toy-world SFT model learns to prefer correct answers over hallucinated colours, shapes and
counts; prints held-out preference accuracy and hallucination rates before and after (definitions in
`modeling_xgenmm.toy_world.preference`).

    python examples/dpo_toy_world.py --sft_model runs/toy-world/model --output_dir runs/toy-world-dpo
    python examples/dpo_toy_world.py --output_dir runs/toy-world-dpo   # trains the SFT model first (run_toy_world)
"""

import argparse
from pathlib import Path

from modeling_xgenmm.toy_world.preference import ToyWorldDPOSettings, run_toy_world_dpo
from modeling_xgenmm.toy_world.recipe import ToyWorldSettings, run_toy_world


def main(argv=None):
    defaults = ToyWorldDPOSettings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sft_model", help="a saved toy-world SFT model; default: train one into <output_dir>/sft")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--learning_rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--beta", type=float, default=defaults.beta)
    parser.add_argument("--sft_weight", type=float, default=defaults.sft_weight, help="NLL term on chosen answers")
    parser.add_argument("--full", action="store_true", help="full DPO instead of LoRA")
    parser.add_argument("--train_vision", action="store_true", help="full DPO that also trains tower and resampler")
    args = parser.parse_args(argv)

    output_dir = Path(args.output_dir)
    sft_model = args.sft_model
    if sft_model is None:
        run_toy_world(output_dir / "sft", ToyWorldSettings())
        sft_model = output_dir / "sft" / "model"
    settings = ToyWorldDPOSettings(
        steps=args.steps,
        learning_rate=args.learning_rate,
        beta=args.beta,
        sft_weight=args.sft_weight,
        lora=not (args.full or args.train_vision),
        freeze_vision=not args.train_vision,
        freeze_resampler=not args.train_vision,
    )
    metrics = run_toy_world_dpo(sft_model, output_dir, settings)
    print(f"{'held-out metric':<24}{'before':>10}{'after':>10}")
    for name in metrics["before"]:
        print(f"{name:<24}{metrics['before'][name]:>10.3f}{metrics['after'][name]:>10.3f}")


if __name__ == "__main__":
    main()
