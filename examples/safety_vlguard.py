# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Safety tuning of xGen-MM on VLGuard with DPO: answers preferred to over-refusals for safe instructions, refusals
preferred for unsafe ones (the rule is in `modeling_xgenmm.preference_data`), LoRA on the language model by default
(`--lora False` for full DPO). The trained model is saved with its adapters merged, with its processor, to
`<output_dir>/model`.

    python examples/safety_vlguard.py --model runs/dpo/model --data VLGuard/train.json --images_dir VLGuard/train \
        --output_dir runs/safety --num_train_epochs 3

VLGuard holds no complying answer for its unsafe images; those instructions are skipped (and counted in the log)
unless `modeling_xgenmm.preference_data.load_vlguard` is given a `compliant_response` function from Python.
Every `DPOConfig` flag works (`--beta`, `--max_length`, `--per_device_train_batch_size`, ...).
"""

from functools import partial

from modeling_xgenmm.preference_data import load_vlguard
from modeling_xgenmm.stage_scripts import run_dpo_script


main = partial(run_dpo_script, load_preference_rows=load_vlguard, description="safety dpo (VLGuard)")


if __name__ == "__main__":
    main()
