# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Registration with the transformers Auto classes, and with `save_pretrained`'s code copying for the Hub."""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
)

from xgenmm_processing import XGenMMImageProcessor, XGenMMImageProcessorPil, XGenMMProcessor, XGenMMTokenizer

from .configuration_xgenmm import XGenMMConfig, XGenMMPerceiverConfig
from .modeling_xgenmm import XGenMMForConditionalGeneration, XGenMMModel


def register_auto_classes() -> None:
    """Idempotent: registers the model and processing classes locally and marks them for code copying on
    `save_pretrained`, so a saved folder loads with `trust_remote_code=True` where this package is not installed."""
    AutoConfig.register(XGenMMConfig.model_type, XGenMMConfig, exist_ok=True)
    AutoConfig.register(XGenMMPerceiverConfig.model_type, XGenMMPerceiverConfig, exist_ok=True)
    AutoModel.register(XGenMMConfig, XGenMMModel, exist_ok=True)
    AutoModelForImageTextToText.register(XGenMMConfig, XGenMMForConditionalGeneration, exist_ok=True)
    AutoModelForCausalLM.register(XGenMMConfig, XGenMMForConditionalGeneration, exist_ok=True)
    AutoImageProcessor.register(
        XGenMMConfig,
        image_processor_classes={"pil": XGenMMImageProcessorPil, "torchvision": XGenMMImageProcessor},
        exist_ok=True,
    )
    AutoTokenizer.register(XGenMMConfig, tokenizer_class=XGenMMTokenizer, exist_ok=True)
    AutoProcessor.register(XGenMMConfig, XGenMMProcessor, exist_ok=True)

    XGenMMConfig.register_for_auto_class()
    XGenMMModel.register_for_auto_class("AutoModel")
    XGenMMForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
    XGenMMImageProcessor.register_for_auto_class()
    XGenMMImageProcessorPil.register_for_auto_class()
    XGenMMTokenizer.register_for_auto_class()
    XGenMMProcessor.register_for_auto_class()
