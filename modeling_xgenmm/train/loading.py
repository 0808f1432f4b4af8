# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Loading the model to train: fp32 master weights from a Hub id or folder, a seeded random initialisation for a
configuration folder without weights, or a quantized language model for QLoRA."""

import tempfile
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor, BitsAndBytesConfig, GenerationConfig
from transformers.utils import GENERATION_CONFIG_NAME, logging

from ..checkpoint.folders import has_weight_files
from .qlora import load_quantized_model


logger = logging.get_logger(__name__)


def load_model_and_processor(
    name_or_path: str | Path,
    seed: int = 0,
    trust_remote_code: bool = False,
    quantization_config: BitsAndBytesConfig | None = None,
):
    """The model and processor of a Hub id or folder, in fp32 (the master weights of mixed-precision training).

    A local folder with a `config.json` but no weights (e.g. `hub_configs/tiny-random`) gives a model initialised
    at random with `seed`, identical on every process, that generates as the folder's `generation_config.json` says
    (where it has one: the ids that end a turn, as a trained model's folder holds them).

    With `quantization_config` (`quantization_config_from_args`), the model is quantized by bitsandbytes and frozen
    for QLoRA (`load_quantized_model`); a folder without weights is initialised at random first, saved to a
    temporary folder and loaded from there quantized.
    """
    path = Path(name_or_path)
    if not path.exists() and (str(name_or_path).startswith((".", "/", "~")) or str(name_or_path).count("/") > 1):
        raise FileNotFoundError(
            f"{name_or_path} does not exist: expected a model folder or a Hub repo id (name/model)"
        )
    processor = AutoProcessor.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    if path.is_dir() and not has_weight_files(path):
        logger.warning(f"{path} holds no weights: initialising the model at random (seed {seed})")
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config, trust_remote_code=trust_remote_code).float()
        if (path / GENERATION_CONFIG_NAME).is_file():
            model.generation_config = GenerationConfig.from_pretrained(path)
        if quantization_config is None:
            return model, processor
        with tempfile.TemporaryDirectory() as folder:
            model.save_pretrained(folder)
            return load_quantized_model(folder, quantization_config, trust_remote_code), processor
    if quantization_config is not None:
        return load_quantized_model(name_or_path, quantization_config, trust_remote_code), processor
    model = AutoModelForImageTextToText.from_pretrained(
        name_or_path, dtype=torch.float32, trust_remote_code=trust_remote_code
    )
    return model, processor


__all__ = ["load_model_and_processor"]
