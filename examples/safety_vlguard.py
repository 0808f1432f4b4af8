# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Safety tuning of xGen-MM on VLGuard with TRL's `DPOTrainer`.

Answers are preferred to over-refusals for safe instructions, refusals for unsafe ones (the rules are in
`modeling_xgenmm.train.preference_data`). VLGuard holds no complying answer for its unsafe images; those instructions
are skipped (and counted in the log) unless `load_vlguard` is given a `compliant_response` function from Python.
LoRA adapts the language model (`--use_peft false` for full DPO). The trained model is saved with its adapters
merged, with its processor, to `<output_dir>/model`.

    python examples/safety_vlguard.py --model_name_or_path runs/dpo/model --data VLGuard/train.json \
        --images_dir VLGuard/train --output_dir runs/safety --num_train_epochs 3

Every `DPOConfig` flag works (`--beta`, `--max_length`, `--per_device_train_batch_size`, ...).
"""

from pathlib import Path

from trl import TrlParser

from modeling_xgenmm.train import (
    PreferenceDataArguments,
    XGenMMDPOConfig,
    XGenMMModelConfig,
    build_dpo_trainer,
    load_model_and_processor,
    load_vlguard,
    peft_config_from_args,
    refuse_quantization,
    save_trained_model,
    train_resuming,
)


def main(argv: list[str] | None = None):
    parser = TrlParser((PreferenceDataArguments, XGenMMDPOConfig, XGenMMModelConfig))
    parser.set_defaults_with_config(use_peft=True)  # the report's DPO: LoRA on the language model
    data_args, dpo_config, model_args = parser.parse_args_and_config(argv)

    refuse_quantization(model_args, "Safety DPO")
    model, processor = load_model_and_processor(model_args.model_name_or_path)
    rows = [row for path in data_args.data for row in load_vlguard(path, data_args.images_dir)]

    trainer = build_dpo_trainer(
        model,
        processor,
        rows,
        args=dpo_config,
        peft_config=peft_config_from_args(model_args, model),
        freeze_vision=model_args.freeze_vision,
    )
    train_resuming(trainer)  # from output_dir's last checkpoint, if any; a finished run trains nothing
    save_trained_model(trainer, Path(dpo_config.output_dir) / "model")
    return trainer


if __name__ == "__main__":
    main()
