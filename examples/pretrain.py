# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Pretraining of xGen-MM on interleaved image-text documents and caption pairs with `transformers.Trainer`.

Rows: documents `{"text": "...<image>...<|endofchunk|><image>...", "images": [...]}` and caption pairs
`{"image": ..., "caption": "..."}` (trained as `<image>{caption}<|endofchunk|>`), mixed freely (formats in
`modeling_xgenmm.train.rows`). Every text token is a target; image tokens and padding are not. The vision tower stays
frozen; the resampler and the language model train.

    python examples/pretrain.py --model_name_or_path hub_configs/tiny-random --data docs.jsonl captions.jsonl \
        --output_dir runs/pretrain --max_steps 100
    accelerate launch --multi_gpu --num_processes 2 examples/pretrain.py ...   # same arguments, data-parallel

Every `TrainingArguments` flag works (`--per_device_train_batch_size`, `--resume_from_checkpoint`, ...), as does
`--config recipe.yaml` with the same names.
"""

from trl import TrlParser

from modeling_xgenmm.train import (
    DataArguments,
    XGenMMModelConfig,
    XGenMMTrainingArguments,
    build_trainer,
    checkpoint_to_resume,
    load_model_and_processor,
    peft_config_from_args,
    quantization_config_from_args,
)
from modeling_xgenmm.train.streaming import load_training_data


def main(argv: list[str] | None = None):
    parser = TrlParser((DataArguments, XGenMMTrainingArguments, XGenMMModelConfig))
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

    trainer = build_trainer(
        model,
        processor,
        rows,
        stage="pretrain",
        args=training_args,
        peft_config=peft_config_from_args(model_args, model),
        freeze_vision=model_args.freeze_vision,
        skip_counts=skip_counts,
    )
    trainer.train(resume_from_checkpoint=checkpoint_to_resume(training_args))
    trainer.save_model()
    return trainer


if __name__ == "__main__":
    main()
