# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Safety tuning of xGen-MM on VLGuard with DPO: answers preferred to over-refusals for safe instructions, refusals
preferred for unsafe ones (the rule is in `modeling_xgenmm.preference_data`), LoRA on the language model by default
(`--lora False` for full DPO). The trained model is saved with its adapters merged, with its processor, to
`<output_dir>/model`.

    python examples/safety_vlguard.py --model runs/dpo/model --data VLGuard/train.json --images_dir VLGuard/train \
        --output_dir runs/safety --num_train_epochs 3

VLGuard holds no complying answer for its unsafe images; those instructions are skipped (and counted in the log)
unless `modeling_xgenmm.preference_data.load_vlguard` is given a `compliant_response` function from Python.
Every `DPOConfig` flag works (`--beta`, `--max_length`, `--per_device_train_batch_size`, ...).
"""

from pathlib import Path

from transformers import HfArgumentParser

from modeling_xgenmm.dpo import DPOScriptArguments, XGenMMDPOConfig, build_dpo_trainer, save_trained_model
from modeling_xgenmm.preference_data import load_vlguard
from modeling_xgenmm.training import load_model_and_processor


def main(argv=None):
    parser = HfArgumentParser((DPOScriptArguments, XGenMMDPOConfig))
    script_args, dpo_config = parser.parse_args_into_dataclasses(argv)

    model, processor = load_model_and_processor(script_args.model)
    rows = [row for path in script_args.data for row in load_vlguard(path, script_args.images_dir)]
    trainer = build_dpo_trainer(
        model,
        processor,
        rows,
        dpo_config,
        lora=script_args.lora_config(model),
        freeze_resampler=script_args.freeze_resampler,
    )
    metrics = trainer.train(resume_from_checkpoint=dpo_config.resume_from_checkpoint).metrics
    save_trained_model(trainer, Path(dpo_config.output_dir) / "model")
    if trainer.is_world_process_zero():
        print(f"safety dpo (VLGuard, {len(rows)} pairs): {metrics}")


if __name__ == "__main__":
    main()
