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
from functools import partial

from modeling_xgenmm.preference_data import load_vlfeedback
from modeling_xgenmm.stage_scripts import run_dpo_script


@dataclass
class VLFeedbackArguments:
    min_chosen_score: float = field(
        default=3.0, metadata={"help": "Drop rows whose best response averages below this rating (1-5)."}
    )


main = partial(
    run_dpo_script,
    load_preference_rows=load_vlfeedback,
    description="dpo (VLFeedback)",
    extra_arguments=(VLFeedbackArguments,),
)


if __name__ == "__main__":
    main()
