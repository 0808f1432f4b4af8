# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Interleaved (multi-image) instruction tuning of xGen-MM with `transformers.Trainer`.

Rows: `{"messages": [...], "images": [...]}` or LLaVA's `{"conversations": [...], "image": ...}` (see
`xgenmm_processing.rows`) with any number of images each, placed anywhere in the turns (`<image>` markers or image
blocks); the loss is on the assistant turns only. The vision tower stays frozen. The released recipe runs this after
`sft.py`, from its output (`--model runs/sft`).

    python examples/interleaved_sft.py --model runs/sft --data multi.jsonl --output_dir runs/isft --max_steps 100
    accelerate launch --multi_gpu --num_processes 2 examples/interleaved_sft.py ...   # same arguments, data-parallel

Every `TrainingArguments` flag works (`--per_device_train_batch_size`, `--resume_from_checkpoint`, ...).
"""

from functools import partial

from modeling_xgenmm.stage_scripts import run_trainer_stage


main = partial(run_trainer_stage, "interleaved_sft")

if __name__ == "__main__":
    main()
