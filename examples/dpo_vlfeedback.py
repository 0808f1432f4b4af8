# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""DPO of xGen-MM on VLFeedback, the report's hallucination/truthfulness stage, with TRL's `DPOTrainer`.

Preference pairs are the best and the worst average-rated responses of each VLFeedback row (the rules are in
`modeling_xgenmm.train.preference_data`). As in the report, LoRA adapts the language model (`--use_peft false` for
full DPO); the vision tower and the resampler stay fixed, so each image is encoded once per step. The trained model is
saved with its adapters merged, with its processor, to `<output_dir>/model`.

    python examples/dpo_vlfeedback.py --model_name_or_path runs/sft --data vlfeedback_80k.jsonl \
        --images_dir merged_images --output_dir runs/dpo --num_train_epochs 1
    accelerate launch --num_processes 2 examples/dpo_vlfeedback.py ...   # same arguments, data-parallel

Every `DPOConfig` flag works (`--beta`, `--max_length`, `--per_device_train_batch_size`, ...).
"""

from pathlib import Path

from trl import TrlParser

from modeling_xgenmm.train import (
    VLFeedbackArguments,
    XGenMMDPOConfig,
    XGenMMModelConfig,
    build_dpo_trainer,
    load_model_and_processor,
    load_vlfeedback,
    peft_config_from_args,
    refuse_quantization,
    save_trained_model,
    train_resuming,
)


def main(argv: list[str] | None = None):
    parser = TrlParser((VLFeedbackArguments, XGenMMDPOConfig, XGenMMModelConfig))
    parser.set_defaults_with_config(use_peft=True)  # the report's DPO: LoRA on the language model
    data_args, dpo_config, model_args = parser.parse_args_and_config(argv)

    refuse_quantization(model_args, "DPO")
    model, processor = load_model_and_processor(model_args.model_name_or_path)
    rows = [
        row
        for path in data_args.data
        for row in load_vlfeedback(path, data_args.images_dir, data_args.min_chosen_score)
    ]

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
