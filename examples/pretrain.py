# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Pretraining of xGen-MM on interleaved image-text documents and caption pairs with `transformers.Trainer`.

Rows: documents `{"text": "...<image>...<|endofchunk|><image>...", "images": [...]}` and caption pairs
`{"image": ..., "caption": "..."}` (trained as `<image>{caption}<|endofchunk|>`), mixed freely; see
`xgenmm_processing.rows`. Every text token is a target; image tokens and padding are not. The vision tower stays
frozen; the resampler and the language model train.

    python examples/pretrain.py --model hub_configs/tiny-random --data docs.jsonl captions.jsonl \
        --output_dir runs/pretrain --max_steps 100
    accelerate launch --multi_gpu --num_processes 2 examples/pretrain.py ...   # same arguments, data-parallel

Every `TrainingArguments` flag works (`--per_device_train_batch_size`, `--resume_from_checkpoint`, ...).
"""

from functools import partial

from modeling_xgenmm.stage_scripts import run_trainer_stage


main = partial(run_trainer_stage, "pretrain")

if __name__ == "__main__":
    main()
