# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Batch-1 decoding with fewer bytes per token and less per-step work: the same weights as float32, bfloat16, int8 and
int4 (torchao weight-only through transformers' `TorchAoConfig`, the package's choice of layers), each eager and
compiled (a static cache and `torch.compile` of the decoding forward), and float32 with the storage of its linear
weights transposed (`transpose_linear_storage`). A helper module of `run.py` and `compare_worker.py`.

Per variant: TTFT and decode tokens/s (`generation_speed.timed_generate`; the best of `repeats` calls, the variants
interleaved call by call), the bytes of the language model's weights (embedding and head included), and greedy
agreement with float32 eager by the margin rule (`agreement.py`); per compiled variant, the compile time (its first
call's time over its best call's) and the generated tokens from which compiling pays off against the same weights
eager. Variants a checkout cannot build (no `modeling_xgenmm.inference` before it existed; int4's torchao layout on
CPUs only) are reported with the reason.
"""

import copy
import time
from dataclasses import dataclass

import torch
from torch._dynamo.utils import counters
from transformers import AutoConfig, AutoModelForImageTextToText

from .agreement import margin_rule, summary
from .generation_speed import mode_settings, synchronize, timed_generate
from .gpu_ceilings import language_model_bytes


@dataclass(frozen=True)
class Variant:
    """The weights of a decoding run (dtype; `quantization`: None, "int8" or "int4"; the float32 storage transposed)
    and whether decoding is compiled."""

    dtype: torch.dtype
    quantization: str | None = None
    transposed: bool = False
    compiled: bool = False

    @property
    def weights(self) -> tuple:
        return self.dtype, self.quantization, self.transposed


VARIANTS = {
    "float32": Variant(torch.float32),
    "float32_compiled": Variant(torch.float32, compiled=True),
    "float32_transposed": Variant(torch.float32, transposed=True),
    "float32_transposed_compiled": Variant(torch.float32, transposed=True, compiled=True),
    "bfloat16": Variant(torch.bfloat16),
    "bfloat16_compiled": Variant(torch.bfloat16, compiled=True),
    "int8": Variant(torch.bfloat16, "int8"),
    "int8_compiled": Variant(torch.bfloat16, "int8", compiled=True),
    "int4": Variant(torch.bfloat16, "int4"),
    "int4_compiled": Variant(torch.bfloat16, "int4", compiled=True),
}
REFERENCE = "float32"
# On a GPU: bf16 is the reference (the full preset's weights), int4's layout is a CPU one
GPU_VARIANTS = ("bfloat16", "bfloat16_compiled", "int8", "int8_compiled")
# Each weights' compiled call is its own graph (and each batch shape, and the second decoding step once): more than
# torch's default of 8 recompilations of one function before it falls back to eager without a word.
RECOMPILE_LIMIT = 64


def build_weights(folder: str, variant: Variant, device: torch.device, int4_group_size: int):
    """The model saved in `folder` with `variant`'s weights; raises `RuntimeError` naming why it cannot be built."""
    settings = {"dtype": variant.dtype, "device_map": device.type}
    if variant.quantization is not None or variant.transposed:
        try:
            from modeling_xgenmm.inference import quantization_config, transpose_linear_storage
        except ImportError as error:
            raise RuntimeError(f"this checkout has no modeling_xgenmm.inference ({error})") from None
    if variant.quantization == "int4" and device.type != "cpu":
        raise RuntimeError("torchao's int4 layout here is its CPU one (Int4OpaqueTensor)")
    if variant.quantization is not None:
        group = {"group_size": int4_group_size} if variant.quantization == "int4" else {}
        settings["quantization_config"] = quantization_config(variant.quantization, **group)
    model = AutoModelForImageTextToText.from_pretrained(folder, **settings).eval()
    model.set_attn_implementation("sdpa")
    return transpose_linear_storage(model) if variant.transposed else model


def int4_group_size(folder: str) -> int:
    """The largest of torchao's int4 group sizes (128, 64, 32) that divides the widths of the language model saved in
    `folder`."""
    text = AutoConfig.from_pretrained(folder).text_config
    return next(size for size in (128, 64, 32) if text.hidden_size % size == text.intermediate_size % size == 0)


def generated(model, inputs: dict, settings: dict, new_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """New ids `(batch, new_tokens)` of a greedy run (no end of sequence) and the logits they were chosen from."""
    generation_config = copy.deepcopy(model.generation_config)
    generation_config.update(
        **settings,
        do_sample=False,
        max_new_tokens=new_tokens,
        eos_token_id=None,
        output_logits=True,
        return_dict_in_generate=True,
    )
    output = model.generate(**inputs, generation_config=generation_config)
    return output.sequences[:, inputs["input_ids"].shape[1] :], torch.stack(output.logits, 1).float()


def timed_call(model, inputs: dict, settings: dict, new_tokens: int) -> tuple[float, float, float]:
    """(TTFT, the rest, the whole call) in seconds of one `generate` call."""
    device = inputs["input_ids"].device
    synchronize(device)
    start = time.perf_counter()
    ttft, rest = timed_generate(model, inputs, settings, new_tokens)
    return ttft, rest, time.perf_counter() - start


def measure_variants(
    folder: str,
    inputs: dict,
    new_tokens: int,
    repeats: int,
    compile_backend: str,
    device: torch.device,
    names: list[str] | None = None,
    reference_name: str = REFERENCE,
) -> dict:
    """Every variant of `names` (default: all those of `VARIANTS`) on the model saved in `folder`, on `inputs` (one
    row): results per variant name, as the module docstring says, agreement judged against `reference_name`'s;
    `{"skipped": reason}` where a variant cannot be built."""
    torch._dynamo.reset()  # each compiled variant's first call compiles (graphs of earlier models would be reused)
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    names = [reference_name, *(name for name in names or VARIANTS if name != reference_name)]
    compiled_settings = mode_settings("static_compile", compile_backend)[1]
    models, results, runs = {}, {}, {}
    for name in names:
        variant = VARIANTS[name]
        try:
            if variant.weights not in models:
                models[variant.weights] = build_weights(folder, variant, device, int4_group_size(folder))
        except RuntimeError as error:
            results[name] = {"skipped": str(error)}
            continue
        model = models[variant.weights]
        settings = compiled_settings if variant.compiled else {}
        variant_inputs = {**inputs, "pixel_values": inputs["pixel_values"].to(variant.dtype)}
        graphs = counters["stats"]["unique_graphs"]
        first = timed_call(model, variant_inputs, settings, new_tokens)  # warm-up; compiles the compiled variants
        results[name] = {
            "language_model_bytes": language_model_bytes(model),
            "first_call_s": first[2],
            "graphs_compiled": counters["stats"]["unique_graphs"] - graphs,
        }
        runs[name] = (model, variant_inputs, settings, [])
    for _ in range(repeats):  # interleaved, so that drift of the machine falls on every variant
        for model, variant_inputs, settings, timings in runs.values():
            timings.append(timed_call(model, variant_inputs, settings, new_tokens))
    reference = None
    for name, (model, variant_inputs, settings, timings) in runs.items():
        ttft, rest = min(timing[0] for timing in timings), min(timing[1] for timing in timings)
        ids, logits = generated(model, variant_inputs, settings, new_tokens)
        reference = (ids, logits) if name == reference_name else reference
        rows = margin_rule(*reference, ids, logits)
        results[name] |= {
            "ttft_s": ttft,
            "decode_s": rest,
            "decode_tokens_per_s": (new_tokens - 1) / rest,
            "call_s": min(timing[2] for timing in timings),
            "ids": ids[0].tolist(),
            "agreement": summary(rows),
            "agreement_holds": all(row.holds for row in rows),
        }
    add_compile_costs(results, new_tokens)
    return results


def add_compile_costs(results: dict, new_tokens: int) -> None:
    """Per compiled variant: the compile time, and the generated tokens from which it pays off against the same
    weights eager (`None`: compiled decoding is not faster)."""
    for name, result in results.items():
        eager = results.get(name.removesuffix("_compiled"), {})
        if not name.endswith("_compiled") or "call_s" not in result or "decode_s" not in eager:
            continue
        result["compile_s"] = max(result["first_call_s"] - result["call_s"], 0.0)
        saved_per_token = (eager["decode_s"] - result["decode_s"]) / (new_tokens - 1)
        result["break_even_tokens"] = result["compile_s"] / saved_per_token if saved_per_token > 0 else None
