# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Registration with the transformers Auto classes, and with `save_pretrained`'s code copying for the Hub; and the two
messages of dependencies about each other that are dropped (`drop_dependency_notices`)."""

import logging
import warnings

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


# What bitsandbytes logs on import on CPUs with AVX512-BF16 when the `kernels` package will not fetch its optional
# faster 4-bit kernel from the Hub (an unverified publisher, or no network).
BITSANDBYTES_KERNEL_NOTICE = "Failed to load CPU gemm_4bit_forward from kernels-community"
# What transformers (5.25) warns when peft (0.21) and TRL read the model's `is_gradient_checkpointing`, the name it
# deprecated for `is_activation_checkpointing`: at every LoRA run.
PEFT_DEPRECATED_NAME_WARNING = r"`is_gradient_checkpointing` is deprecated"


def _not_the_kernel_notice(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(BITSANDBYTES_KERNEL_NOTICE)


def drop_dependency_notices() -> None:
    """Idempotent: drops two messages that one dependency prints about another, which read as errors in every run
    and ask nothing the user can do:

    - bitsandbytes' import-time notice that an optional kernel could not be loaded (`BITSANDBYTES_KERNEL_NOTICE`),
      which asks to `pip install kernels` where it is installed. peft imports bitsandbytes wherever it is installed
      (the `qlora` and `test` extras), so every training and evaluation process printed it; QLoRA is unaffected,
      bitsandbytes uses its own CPU kernel. Its other messages stay.
    - transformers' `FutureWarning` that `is_gradient_checkpointing` is deprecated, raised where peft and TRL read it
      (`PEFT_DEPRECATED_NAME_WARNING`); this package reads the new name.
    """
    notices = logging.getLogger("bitsandbytes.backends.cpu.ops")
    if _not_the_kernel_notice not in notices.filters:
        notices.addFilter(_not_the_kernel_notice)
    warnings.filterwarnings("ignore", message=PEFT_DEPRECATED_NAME_WARNING, category=FutureWarning)
