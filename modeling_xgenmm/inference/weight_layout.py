# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""The memory layout of float32 weights for decoding on a CPU.

A decoding step at batch 1 multiplies one row by every weight matrix, so it runs at the speed weights are read. An
`nn.Linear` weight is stored (out, in) row by row, and `F.linear` hands the BLAS its transpose: MKL's single-row
product (`sgemv`) reads that layout at 5-11 GB/s on the benchmark machine, and the same matrix stored (in, out) at
12-24 GB/s, its read bandwidth being 32 GB/s (one thread, `small` preset's shapes; at batch 8 and at the prefill both
layouts run at the same speed; in bfloat16 the transposed storage is slower, 5.4 against 6.9 GB/s). Transposing the
storage keeps every weight's shape, values and name, and `save_pretrained` writes the same checkpoint (it writes
tensors contiguous); the BLAS may sum a product's terms in another order (logits within float32 rounding).
"""

import torch
from torch import nn


def transpose_linear_storage(model: nn.Module, prefixes: tuple[str, ...] = ("model.language_model", "lm_head")):
    """Stores the float32 weights of the linear layers under `prefixes` (module names from `model`'s root; by
    default the language model and the head, which decoding reads every token) transposed in memory, in place;
    returns `model`. Weights of other dtypes, and quantized ones, are left as they are."""
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or not name.startswith(prefixes):
            continue
        weight = module.weight
        if type(weight.data) is not torch.Tensor or weight.dtype != torch.float32 or weight.dim() != 2:
            continue
        with torch.no_grad():
            weight.data = weight.data.t().contiguous().t()
    return model


__all__ = ["transpose_linear_storage"]
