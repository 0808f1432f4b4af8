# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""What a run leaves behind: a full model folder with its processor, LoRA adapters merged into the weights, so that it
loads with `from_pretrained` without peft (and with `trust_remote_code=True` where this package is not installed).

After QLoRA, merging into the 4-bit base would round the merged weights back to 4 bits (and leave a model that needs
bitsandbytes); `merge_qlora_adapter` reloads the base in fp32, applies the adapter, merges and saves, the usual way.
"""

import os
from pathlib import Path

from peft import PeftModel
from transformers import PreTrainedModel, Trainer

from .loading import load_model_and_processor


def save_trained_model(trainer: Trainer, output_dir: str | os.PathLike) -> PreTrainedModel:
    """Saves the trained policy as a full model with its processor and returns it: LoRA adapters are merged into the
    weights, so the folder loads with `from_pretrained` without peft (and with `trust_remote_code=True` where this
    package is not installed)."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    if isinstance(model, PeftModel):
        model = model.merge_and_unload()
    if trainer.is_world_process_zero():
        model.save_pretrained(output_dir)
        trainer.processing_class.save_pretrained(output_dir)
    return model


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


__all__ = ["merge_qlora_adapter", "save_trained_model"]
