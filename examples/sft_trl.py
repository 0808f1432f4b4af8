# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Instruction tuning (SFT) of xGen-MM with TRL's `SFTTrainer`: the same rows and policy as `sft.py`, with TRL's
vision collator (`assistant_only_loss=True`: the chat template's `{% generation %}` spans, i.e. each answer and its
`<|end|>`, are the only targets) and TRL's fused LM-head loss.

    python examples/sft_trl.py --model_name_or_path hub_configs/tiny-random --data sft.jsonl \
        --output_dir runs/sft-trl --max_steps 100
    accelerate launch --multi_gpu --num_processes 2 examples/sft_trl.py ...   # same arguments, data-parallel

Every `SFTConfig` flag works (`--max_length`, `--per_device_train_batch_size`, `--resume_from_checkpoint`, ...).
Truncation that would cut an image raises here (TRL truncates in the processor, which refuses it); `sft.py` cuts
before the image instead.
"""

from trl import TrlParser

from modeling_xgenmm.train import (
    DataArguments,
    XGenMMModelConfig,
    XGenMMSFTConfig,
    build_trl_sft_trainer,
    load_model_and_processor,
    load_rows,
    peft_config_from_args,
    quantization_config_from_args,
    train_resuming,
)


def main(argv: list[str] | None = None):
    parser = TrlParser((DataArguments, XGenMMSFTConfig, XGenMMModelConfig))
    data_args, sft_config, model_args = parser.parse_args_and_config(argv)

    model, processor = load_model_and_processor(
        model_args.model_name_or_path,
        seed=sft_config.seed,
        quantization_config=quantization_config_from_args(model_args),
    )
    rows = load_rows(*data_args.data)

    trainer = build_trl_sft_trainer(
        model,
        processor,
        rows,
        args=sft_config,
        peft_config=peft_config_from_args(model_args, model),
        freeze_vision=model_args.freeze_vision,
    )
    train_resuming(trainer)  # from output_dir's last checkpoint, if any; a finished run trains nothing
    trainer.save_model()
    return trainer


if __name__ == "__main__":
    main()
