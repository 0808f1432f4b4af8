# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""xGen-MM (BLIP-3) for transformers. Importing this package registers every class with the Auto classes, lets
`from_pretrained` read the original Salesforce checkpoints, and, where torchao is installed, gives its int8 weights
PyTorch's CPU kernel (`inference.quantization.register_cpu_int8_kernel`); it drops two messages of dependencies about
each other that read as errors in every training run (`registration.drop_dependency_notices`: in place before anything
imports peft)."""

from xgenmm_processing import XGenMMImageProcessor, XGenMMImageProcessorPil, XGenMMProcessor, XGenMMTokenizer

from .checkpoint.key_map import register_original_checkpoint_conversion
from .configuration_xgenmm import XGenMMConfig, XGenMMPerceiverConfig
from .inference.quantization import register_cpu_int8_kernel
from .modeling_xgenmm import (
    XGenMMForConditionalGeneration,
    XGenMMModel,
    XGenMMPerceiverResampler,
    XGenMMPreTrainedModel,
)
from .registration import drop_dependency_notices, register_auto_classes


drop_dependency_notices()
register_auto_classes()
register_original_checkpoint_conversion()
register_cpu_int8_kernel()

__all__ = [
    "XGenMMConfig",
    "XGenMMForConditionalGeneration",
    "XGenMMImageProcessor",
    "XGenMMImageProcessorPil",
    "XGenMMModel",
    "XGenMMPerceiverConfig",
    "XGenMMPerceiverResampler",
    "XGenMMPreTrainedModel",
    "XGenMMProcessor",
    "XGenMMTokenizer",
]
