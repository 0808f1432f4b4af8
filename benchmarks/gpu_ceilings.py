# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""The two hardware limits that generation speed is judged against (a helper module of `run.py`).

- Decode at batch 1 reads every weight of the language model and the head once per token, so it cannot beat
  `measured copy bandwidth / decode weight bytes` tokens/s (the bandwidth ceiling). The bandwidth is that of a large
  device-to-device tensor copy, counting the bytes read and the bytes written; the KV cache is left out (a few
  percent of the weights at batch 1 and short prompts).
- A prefill cannot beat `prefill FLOPs / measured matmul FLOP/s` (the FLOP floor). The FLOPs are those PyTorch's
  `FlopCounterMode` counts (matrix products, attention, convolutions) during `generate(max_new_tokens=1)`; the FLOP/s
  those of a large square matrix product in the model's dtype.

The functions run on any device; `run.py` reports them on CUDA only, where the targets apply.
"""

import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from .generation_speed import synchronize


def best_seconds(run: Callable[[], object], repeats: int, device: torch.device) -> float:
    """The shortest wall time of `repeats` calls of `run`, each ended by a device synchronisation."""
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        run()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def copy_bandwidth(device: torch.device, num_bytes: int = 2**30, repeats: int = 10) -> float:
    """Bytes/s of a `num_bytes` device-to-device copy, reads plus writes."""
    source = torch.empty(num_bytes, dtype=torch.uint8, device=device).fill_(1)
    target = torch.empty_like(source)
    target.copy_(source)
    return 2 * num_bytes / best_seconds(lambda: target.copy_(source), repeats, device)


def matmul_flops(device: torch.device, dtype: torch.dtype, size: int = 8192, repeats: int = 10) -> float:
    """FLOP/s of a `size`-square matrix product in `dtype` (2 * size**3 FLOPs)."""
    left = torch.randn(size, size, device=device).to(dtype)
    right = torch.randn(size, size, device=device).to(dtype)
    torch.mm(left, right)
    return 2 * size**3 / best_seconds(lambda: torch.mm(left, right), repeats, device)


def tensor_bytes(tensor: torch.Tensor) -> int:
    """Bytes a tensor holds: those of the inner tensors of a tensor subclass (torchao's quantized weights: int8 or
    packed int4 data and their scales), else its elements'."""
    if hasattr(tensor, "__tensor_flatten__"):
        names, _ = tensor.__tensor_flatten__()
        return sum(tensor_bytes(inner) for inner in (getattr(tensor, name) for name in names) if inner is not None)
    return tensor.numel() * tensor.element_size()


def language_model_bytes(model: torch.nn.Module) -> int:
    """Bytes of the language model's weights, its input embedding and the head included (what quantization shrinks)."""
    return sum(
        tensor_bytes(weight) for weight in [*model.model.language_model.parameters(), *model.lm_head.parameters()]
    )


def decode_weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of the weights one decode step reads: the language model and the head, but not the input embedding
    (one row per token), the vision tower or the resampler (used at prefill only)."""
    embedding = model.get_input_embeddings().weight
    return language_model_bytes(model) - tensor_bytes(embedding)


def prefill_flops(model, inputs: dict) -> int:
    """FLOPs of `generate(max_new_tokens=1)` on `inputs`: vision tower, resampler, language model prefill and head."""
    return prefill_flops_by_part(model, inputs)["total"]


def prefill_flops_by_part(model, inputs: dict) -> dict[str, int]:
    """FLOPs of `generate(max_new_tokens=1)` on `inputs` in all (`total`) and in each part: `vision_tower`,
    `resampler`, `language_model` (its prefill) and `head` (the last position's logits); each part counted by a
    counter of its own, opened and closed by hooks on its module."""
    parts = {
        "vision_tower": model.model.vision_tower,
        "resampler": model.model.resampler,
        "language_model": model.model.language_model,
        "head": model.lm_head,
    }
    counted = dict.fromkeys(parts, 0)
    open_counters, hooks = {}, []
    for name, module in parts.items():

        def enter(_module, _args, name=name):
            open_counters[name] = FlopCounterMode(display=False)
            open_counters[name].__enter__()

        def leave(_module, _args, _output, name=name):
            counter = open_counters.pop(name)
            counter.__exit__(None, None, None)
            counted[name] += counter.get_total_flops()

        hooks += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    # The counter's module tracking fails on a module input viewed from a weight under no_grad (the resampler's
    # expanded latents: requires grad, no grad_fn), so the weights stop requiring grad while it counts.
    trainable = [weight for weight in model.parameters() if weight.requires_grad]
    model.requires_grad_(False)
    try:
        with FlopCounterMode(display=False) as counter:
            model.generate(**inputs, do_sample=False, max_new_tokens=1)
    finally:
        for hook in hooks:
            hook.remove()
        for weight in trainable:
            weight.requires_grad_(True)
    return {**counted, "total": counter.get_total_flops()}


def ceilings(
    model,
    inputs: dict,
    decode_tokens_per_s: float,
    ttft_s: float,
    repeats: int = 10,
    copy_bytes: int = 2**30,
    matmul_size: int = 8192,
) -> dict:
    """Both limits for `model` on the device of `inputs` (one row), and how close the measurements came: decode
    tokens/s over the bandwidth ceiling, TTFT over the FLOP floor."""
    device = inputs["input_ids"].device
    bandwidth = copy_bandwidth(device, copy_bytes, repeats)
    flops_per_s = matmul_flops(device, model.dtype, matmul_size, repeats)
    weight_bytes = decode_weight_bytes(model)
    flops = prefill_flops(model, inputs)
    ceiling_tokens_per_s = bandwidth / weight_bytes
    floor_s = flops / flops_per_s
    return {
        "copy_bandwidth_bytes_per_s": bandwidth,
        "matmul_flops_per_s": flops_per_s,
        "decode_weight_bytes": weight_bytes,
        "decode_ceiling_tokens_per_s": ceiling_tokens_per_s,
        "decode_tokens_per_s": decode_tokens_per_s,
        "decode_fraction_of_ceiling": decode_tokens_per_s / ceiling_tokens_per_s,
        "prefill_flops": flops,
        "ttft_floor_s": floor_s,
        "ttft_s": ttft_s,
        "ttft_over_floor": ttft_s / floor_s,
    }
