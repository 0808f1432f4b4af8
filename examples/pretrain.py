# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Pretraining of xGen-MM on interleaved image-text documents and caption pairs with `transformers.Trainer`.

Rows: documents `{"text": "...<image>...<|endofchunk|><image>...", "images": [...]}` and caption pairs
`{"image": ..., "caption": "..."}` (trained as `<image>{caption}<|endofchunk|>`), mixed freely; see
`xgenmm_processing.rows`. Every text token is a target; image tokens and padding are not. The vision tower stays
frozen; the resampler and the language model train.

    python examples/pretrain.py --model hub_configs/tiny-random --data docs.jsonl captions.jsonl \
        --output_dir runs/pretrain --max_steps 100
    accelerate launch --num_processes 2 examples/pretrain.py ...   # same arguments, data-parallel

Every `TrainingArguments` flag works (`--per_device_train_batch_size`, `--resume_from_checkpoint`, ...).
"""

from transformers import HfArgumentParser

from modeling_xgenmm.training import (
    CollatorArguments,
    ScriptArguments,
    XGenMMTrainingArguments,
    load_model_and_processor,
    train_stage,
    weights_sha256,
)
from xgenmm_processing.rows import load_rows


STAGE = "pretrain"


def main(argv=None):
    parser = HfArgumentParser((ScriptArguments, CollatorArguments, XGenMMTrainingArguments))
    script_args, collator_args, training_args = parser.parse_args_into_dataclasses(argv)

    model, processor = load_model_and_processor(script_args.model, seed=training_args.seed)
    rows = [row for path in script_args.data for row in load_rows(path)]
    trainer, metrics = train_stage(
        model,
        processor,
        rows,
        STAGE,
        training_args,
        max_length=collator_args.max_length,
        on_bad_sample=collator_args.on_bad_sample,
        freeze_vision=script_args.freeze_vision,
        lora=script_args.lora_config(model),
        resume_from_checkpoint=training_args.resume_from_checkpoint,
    )
    trainer.save_model()
    if trainer.is_world_process_zero():
        print(f"{STAGE}: {metrics}")
    if script_args.print_weights_sha256:
        state = trainer.accelerator.state
        digest = weights_sha256(trainer.model)
        rank = f"rank {state.process_index} of {state.num_processes} ({state.backend})"
        # One write per line: the processes share stdout.
        print(f"{rank}: weights sha256 {digest}\n", end="", flush=True)


if __name__ == "__main__":
    main()
