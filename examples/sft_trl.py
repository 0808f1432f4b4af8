# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Instruction tuning (SFT) of xGen-MM with TRL's `SFTTrainer`: the same rows and policy as `sft.py`, with TRL's
vision collator (`assistant_only_loss=True`: the chat template's `{% generation %}` spans, i.e. each answer and its
`<|end|>`, are the only targets) and TRL's fused LM-head loss.

    python examples/sft_trl.py --model hub_configs/tiny-random --data sft.jsonl --output_dir runs/sft-trl \
        --max_steps 100
    accelerate launch --multi_gpu --num_processes 2 examples/sft_trl.py ...   # same arguments, data-parallel

Every `SFTConfig` flag works (`--max_length`, `--per_device_train_batch_size`, `--resume_from_checkpoint`, ...).
Truncation that would cut an image raises here (TRL truncates in the processor, which refuses it); `sft.py` cuts
before the image instead.
"""

from modeling_xgenmm.stage_scripts import run_trl_sft


main = run_trl_sft

if __name__ == "__main__":
    main()
