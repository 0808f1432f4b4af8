# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Inference on fewer bytes per token: weight-only quantization through transformers' `TorchAoConfig` and its CPU
kernel, and the CPU weight layout of float32 decoding. Each module's job is in the README's layout table."""

from .quantization import QUANTIZATIONS, UNQUANTIZED_MODULES, quantization_config, register_cpu_int8_kernel
from .weight_layout import transpose_linear_storage


__all__ = [
    "QUANTIZATIONS",
    "UNQUANTIZED_MODULES",
    "quantization_config",
    "register_cpu_int8_kernel",
    "transpose_linear_storage",
]
