# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Processing for xGen-MM: image processor, tokenizer, processor (installed as `xgenmm_processing`).

Importing `modeling_xgenmm` registers these classes with the transformers Auto classes.
"""

from .image_processing_xgenmm import XGenMMImageProcessor, XGenMMImageProcessorPil
from .processing_xgenmm import XGenMMProcessor
from .tokenization_xgenmm import XGenMMTokenizer


__all__ = ["XGenMMImageProcessor", "XGenMMImageProcessorPil", "XGenMMProcessor", "XGenMMTokenizer"]
