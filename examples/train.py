# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""One stage of the xGen-MM recipe on `transformers.Trainer`, chosen with `--stage`: pretraining, instruction tuning
(SFT) or interleaved (multi-image) instruction tuning. The toy world (`xgenmm toy-world`) runs its stages through the
same library calls.

Rows (formats in `modeling_xgenmm.train.rows`), by stage:

- `pretrain`: documents `{"text": "...<image>...<|endofchunk|><image>...", "images": [...]}` and caption pairs
  `{"image": ..., "caption": "..."}` (trained as `<image>{caption}<|endofchunk|>`), mixed freely; every text token is a
  target, image tokens and padding are not. `.parquet` (OBELICS-style documents) and `.tar` (webdataset caption
  shards) files are streamed.
- `sft`: single-image conversations, `{"messages": [...], "images": [...]}` or LLaVA's `{"conversations": [...],
  "image": ...}`; the loss is on the assistant turns only.
- `interleaved_sft`: conversations with any number of images each, placed anywhere in the turns (`<image>` markers or
  image blocks); the released recipe runs it after `sft`, from its output.

The vision tower stays frozen; the resampler and the language model train (`--use_peft` trains LoRA adapters on the
language model instead; adding `--load_in_4bit` trains them on a 4-bit language model, QLoRA).

    python examples/train.py --stage pretrain --model_name_or_path hub_configs/tiny-random \
        --data docs.jsonl captions.jsonl --output_dir runs/pretrain --max_steps 100
    python examples/train.py --stage sft --model_name_or_path runs/pretrain --data sft.jsonl --output_dir runs/sft
    python examples/train.py --stage interleaved_sft --model_name_or_path runs/sft --data multi.jsonl \
        --output_dir runs/isft
    accelerate launch --multi_gpu --num_processes 2 examples/train.py ...   # same arguments, data-parallel

Every `TrainingArguments` flag works (`--per_device_train_batch_size`, `--resume_from_checkpoint`, ...), as does
`--config recipe.yaml` with the same names.
"""

from trl import TrlParser

from modeling_xgenmm.train import (
    StageArguments,
    XGenMMModelConfig,
    XGenMMTrainingArguments,
    load_model_and_processor,
    load_training_data,
    peft_config_from_args,
    quantization_config_from_args,
    train_stage,
)


def main(argv: list[str] | None = None):
    parser = TrlParser((StageArguments, XGenMMTrainingArguments, XGenMMModelConfig))
    data_args, training_args, model_args = parser.parse_args_and_config(argv)

    model, processor = load_model_and_processor(
        model_args.model_name_or_path,
        seed=training_args.seed,
        quantization_config=quantization_config_from_args(model_args),
    )
    rows, skip_counts = load_training_data(
        data_args.data,
        streaming=data_args.streaming,
        seed=training_args.seed,
        shuffle_buffer=data_args.shuffle_buffer,
        allow_image_urls=data_args.allow_image_urls,
    )

    # Resumes from the last complete checkpoint in output_dir unless --resume_from_checkpoint or --start_over say
    # otherwise.
    trainer, _ = train_stage(
        model,
        processor,
        rows,
        data_args.stage,
        training_args,
        peft_config=peft_config_from_args(model_args, model),
        freeze_vision=model_args.freeze_vision,
        skip_counts=skip_counts,
    )
    trainer.save_model()
    return trainer


if __name__ == "__main__":
    main()
