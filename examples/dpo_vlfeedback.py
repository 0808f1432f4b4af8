# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""DPO of xGen-MM on VLFeedback, the report's hallucination/truthfulness stage: preference pairs of the best and worst
average-rated responses (`modeling_xgenmm.preference_data`), LoRA on the language model (`--lora False` for full DPO),
TRL's `DPOTrainer` with the package's collator and shared image features. The trained model is saved with its
adapters merged, with its processor, to `<output_dir>/model`.

    python examples/dpo_vlfeedback.py --model runs/sft/model --data vlfeedback_80k.jsonl \
        --images_dir merged_images --output_dir runs/dpo --num_train_epochs 1
    accelerate launch --num_processes 2 examples/dpo_vlfeedback.py ...   # same arguments, data-parallel

Every `DPOConfig` flag works (`--beta`, `--max_length`, `--per_device_train_batch_size`, ...).
"""

from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from modeling_xgenmm.dpo import DPOScriptArguments, XGenMMDPOConfig, build_dpo_trainer, save_trained_model
from modeling_xgenmm.preference_data import load_vlfeedback
from modeling_xgenmm.training import load_model_and_processor


@dataclass
class VLFeedbackArguments:
    min_chosen_score: float = field(
        default=3.0, metadata={"help": "Drop rows whose best response averages below this rating (1-5)."}
    )


def main(argv=None):
    parser = HfArgumentParser((DPOScriptArguments, VLFeedbackArguments, XGenMMDPOConfig))
    script_args, vlfeedback_args, dpo_config = parser.parse_args_into_dataclasses(argv)

    model, processor = load_model_and_processor(script_args.model)
    rows = [
        row
        for path in script_args.data
        for row in load_vlfeedback(path, script_args.images_dir, vlfeedback_args.min_chosen_score)
    ]
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
        print(f"dpo (VLFeedback, {len(rows)} pairs): {metrics}")


if __name__ == "__main__":
    main()
