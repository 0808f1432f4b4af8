# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Time to first token and decode speed of xGen-MM `generate`, per batch size and mode (a helper module of `run.py`).

Modes:

- `eager`: eager attention in the vision tower, the resampler and the language model; dynamic cache.
- `sdpa`: PyTorch's scaled-dot-product attention everywhere; dynamic cache.
- `static_compile`: sdpa, a static cache, and the decoding forward compiled by `torch.compile` (full graph) through
  `generate`'s `compile_config`; transformers runs the prefill uncompiled.

Every row is one 5-view image and a short chat prompt. Every run is greedy without an end-of-sequence id, so that
every run decodes the same N tokens (no `min_new_tokens` processor, which scans the vocabulary every step, weighs on
the decode). Inputs are on the device before the clock starts. A logits processor notes the time when the first
token's scores are ready (after a device synchronisation), which splits each `generate(max_new_tokens=N)` call in
two; each part is the best of `repeats` runs that follow a warm-up run (which also compiles):

- TTFT = from the call to the first token's scores: image encoding, prefill and the head.
- decode tokens/s = batch * (N - 1) / (time from the first token's scores to the end of the call, synchronised):
  the tokens after the first over the time they take.
"""

import copy
import time
from functools import cache

import torch
from PIL import Image
from transformers import CompileConfig, LogitsProcessor, LogitsProcessorList

from .image_processing import mixed_images


MODES = ("eager", "sdpa", "static_compile")
PROMPT = "Describe the image in detail."
VIEWS_PER_IMAGE = 5  # the global view and a 2x2 grid of crops


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class FirstTokenClock(LogitsProcessor):
    """Notes `perf_counter()` when `generate` first asks for its scores, i.e. when the first token's logits are ready
    (synchronising the device first); leaves the scores as they are."""

    def __init__(self, device: torch.device):
        self.device = device
        self.time: float | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.time is None:
            synchronize(self.device)
            self.time = time.perf_counter()
        return scores


class VisionPassCounter:
    """Counts the vision tower's forward calls (a forward hook) and, at each `record()`, files the count of the
    `generate` call that just ended."""

    def __init__(self, model: torch.nn.Module):
        self.current = 0
        self.per_generate: list[int] = []
        self._hook = model.model.vision_tower.register_forward_hook(self._count)

    def _count(self, *_) -> None:
        self.current += 1

    def record(self) -> None:
        self.per_generate.append(self.current)
        self.current = 0

    def remove(self) -> None:
        self._hook.remove()


@cache
def square_image(side: int) -> Image.Image:
    return mixed_images()[0].resize((side, side))


def generation_inputs(processor, batch_size: int, device: torch.device) -> dict:
    """`batch_size` identical rows, each a chat turn with one square image of two views' side (5 views)."""
    image_processor = processor.image_processor
    side = 2 * image_processor.size["height"]
    image = square_image(side)
    views = image_processor.get_num_image_views((side, side))
    if views != VIEWS_PER_IMAGE:
        raise ValueError(f"a {side}x{side} image makes {views} views under these grids, {VIEWS_PER_IMAGE} expected")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text] * batch_size, images=[[image]] * batch_size, return_tensors="pt")
    return inputs.to(device)


def mode_settings(mode: str, compile_backend: str) -> tuple[str, dict]:
    """The attention implementation and the `generate` arguments of a mode."""
    if mode == "static_compile":
        # "reduce-overhead" (CUDA graphs) is an inductor mode; other backends take no mode
        compile_mode = "reduce-overhead" if compile_backend == "inductor" else None
        compile_config = CompileConfig(fullgraph=True, backend=compile_backend, mode=compile_mode)
        compile_config._compile_all_devices = True  # transformers compiles on GPUs only unless told
        return "sdpa", {"cache_implementation": "static", "compile_config": compile_config}
    if mode in ("eager", "sdpa"):
        return mode, {}
    raise ValueError(f"mode is one of {MODES}, got {mode!r}")


def timed_generate(model, inputs: dict, settings: dict, new_tokens: int) -> tuple[float, float]:
    """Seconds of one `generate` call before and after the first token's scores are ready."""
    device = inputs["input_ids"].device
    clock = FirstTokenClock(device)
    generation_config = copy.deepcopy(model.generation_config)
    generation_config.update(**settings, do_sample=False, max_new_tokens=new_tokens, eos_token_id=None)
    synchronize(device)
    start = time.perf_counter()
    model.generate(
        **inputs,
        generation_config=generation_config,
        logits_processor=LogitsProcessorList([clock]),
    )
    synchronize(device)
    return clock.time - start, time.perf_counter() - clock.time


def measure_generation(
    model, inputs: dict, settings: dict, new_tokens: int, repeats: int, counter: VisionPassCounter
) -> dict:
    """TTFT and decode tokens/s (definitions in the module docstring) of `model.generate` on `inputs` in one mode."""
    runs = []
    for _ in range(1 + repeats):  # the first is the warm-up
        runs.append(timed_generate(model, inputs, settings, new_tokens))
        counter.record()
    ttft = min(first for first, _ in runs[1:])
    decode = min(rest for _, rest in runs[1:])
    return {
        "ttft_s": ttft,
        "decode_s": decode,
        "decode_tokens_per_s": inputs["input_ids"].shape[0] * (new_tokens - 1) / decode,
    }
