# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""xGen-MM (BLIP-3) for transformers. Importing this package registers every class with the Auto classes, lets
`from_pretrained` read the original Salesforce checkpoints, and, where torchao is installed, gives its int8 weights
PyTorch's CPU kernel (`inference.quantization.register_cpu_int8_kernel`); it drops three messages of dependencies about
each other that read as errors in every run (`notices.drop_dependency_notices`: in place before anything imports
transformers, which imports torchao, or peft)."""

# ruff: noqa: E402  (the notices' filters go in place before the imports below import transformers)
from .notices import drop_dependency_notices  # isort: skip


drop_dependency_notices()

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
from .registration import register_auto_classes


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
