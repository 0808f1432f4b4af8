# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Instruction tuning (SFT) of xGen-MM with TRL's `SFTTrainer`: the same rows and policy as `sft.py`, with TRL's
vision collator (`assistant_only_loss=True`: the chat template's `{% generation %}` spans, i.e. each answer and its
`<|end|>`, are the only targets) and TRL's fused LM-head loss.

    python examples/sft_trl.py --model hub_configs/tiny-random --data sft.jsonl --output_dir runs/sft-trl \
        --max_steps 100
    accelerate launch --num_processes 2 examples/sft_trl.py ...   # same arguments, data-parallel

Every `SFTConfig` flag works (`--max_length`, `--per_device_train_batch_size`, `--resume_from_checkpoint`, ...).
Truncation that would cut an image raises here (TRL truncates in the processor, which refuses it); `sft.py` cuts
before the image instead.
"""

from transformers import HfArgumentParser

from modeling_xgenmm.training import (
    ScriptArguments,
    XGenMMSFTConfig,
    build_trl_sft_trainer,
    load_model_and_processor,
    weights_sha256,
)
from xgenmm_processing.rows import load_rows


def main(argv=None):
    parser = HfArgumentParser((ScriptArguments, XGenMMSFTConfig))
    script_args, sft_config = parser.parse_args_into_dataclasses(argv)

    model, processor = load_model_and_processor(script_args.model, seed=sft_config.seed)
    rows = [row for path in script_args.data for row in load_rows(path)]
    trainer = build_trl_sft_trainer(
        model,
        processor,
        rows,
        sft_config,
        freeze_vision=script_args.freeze_vision,
        lora=script_args.lora_config(model),
    )
    metrics = trainer.train(resume_from_checkpoint=sft_config.resume_from_checkpoint).metrics
    trainer.save_model()
    if trainer.is_world_process_zero():
        print(f"sft (TRL): {metrics}")
    if script_args.print_weights_sha256:
        state = trainer.accelerator.state
        digest = weights_sha256(trainer.model)
        rank = f"rank {state.process_index} of {state.num_processes} ({state.backend})"
        # One write per line: the processes share stdout.
        print(f"{rank}: weights sha256 {digest}\n", end="", flush=True)


if __name__ == "__main__":
    main()
