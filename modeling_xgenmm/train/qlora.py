# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""After QLoRA (`--load_in_4bit --use_peft`): merging the trained adapter into the full-precision base.

Merging into the 4-bit base would round the merged weights back to 4 bits (and leave a model that needs
bitsandbytes); the usual way, done here, is to reload the base in fp32, apply the adapter, merge and save.
"""

import os
from pathlib import Path

from peft import PeftModel
from transformers import PreTrainedModel

from .policy import load_model_and_processor


def merge_qlora_adapter(
    base_path: str | Path,
    adapter_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    seed: int = 0,
    trust_remote_code: bool = False,
) -> PreTrainedModel:
    """Merges the LoRA adapter in `adapter_path` (a QLoRA run's `output_dir`) into the base model `base_path`
    loaded in fp32, saves the merged model with the base's processor in `output_dir` (a folder that loads with
    `from_pretrained` without peft or bitsandbytes) and returns it.

    `base_path` is the `--model_name_or_path` of the run (a Hub id or folder); a folder without weights is
    initialised at random with `seed`, as in training (`load_model_and_processor`), so pass the run's `--seed`.
    """
    base, processor = load_model_and_processor(base_path, seed=seed, trust_remote_code=trust_remote_code)
    model = PeftModel.from_pretrained(base, adapter_path).merge_and_unload()
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    return model


__all__ = ["merge_qlora_adapter"]
