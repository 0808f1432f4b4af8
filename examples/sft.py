# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Instruction tuning (SFT) of xGen-MM on single-image conversations with `transformers.Trainer`.

Rows: `{"messages": [...], "images": [...]}` or LLaVA's `{"conversations": [...], "image": ...}` (see
`xgenmm_processing.rows`); the loss is on the assistant turns only. The vision tower stays frozen.

    python examples/sft.py --model hub_configs/tiny-random --data sft.jsonl --output_dir runs/sft --max_steps 100
    accelerate launch --multi_gpu --num_processes 2 examples/sft.py ...   # same arguments, data-parallel

Every `TrainingArguments` flag works (`--per_device_train_batch_size`, `--resume_from_checkpoint`, ...).
"""

from functools import partial

from modeling_xgenmm.stage_scripts import run_trainer_stage


main = partial(run_trainer_stage, "sft")

if __name__ == "__main__":
    main()
