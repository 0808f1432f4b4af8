# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Speed and memory benchmarks of xGen-MM in one command: image processing, generation (time to first token and
decode tokens/s at batch 1, 8 and 32 with eager attention, sdpa, and static cache + `torch.compile`), SFT and DPO
training steps, and the project's targets, each reported as pass or fail. Prints tables; `--json` writes every number.

    python -m benchmarks.run --preset tiny|small|full [--json results.json] [--threads N] [--device cpu|cuda]

Presets build models with random weights from `hub_configs/` configs. The Phi-3 vocabulary cannot be downloaded here,
so every preset tokenizes with the tiny tokenizer of `hub_configs/tiny-random`, whose special-token ids the config
takes over (the vocabulary size, and so the weight bytes, stay the config's):

- `tiny`: the tiny-random test model; a CI smoke test. `torch.compile` uses its "eager" backend there (graph capture
  without code generation) to stay within seconds.
- `small`: the v1.5 layout at 384-pixel views, shrunk to take a few minutes on a two-core CPU.
- `full`: the v1.5 size (SigLIP so400m at 384 pixels, 128-latent perceiver, Phi-3-mini 3.8B) in bf16; CUDA only.

Sections: `image_processing` (images/s of both backends, `image_processing.py`), `generation` (definitions in
`generation_speed.py`), `training` (samples/s of a forward + backward step on toy-world preference rows, the median
of `repeats` steps, see `dpo_cost.py`; and the peak memory of the first step, absolute and over its start: CUDA
allocator on a GPU, anonymous RSS on a CPU), `checks`, and on CUDA `gpu_ceilings` (see `gpu_ceilings.py`). On a
shared CPU, `--threads 1` avoids the thread contention that otherwise dominates small operations. Checks and targets:

- `images_encoded_once`: every `generate` call runs the vision tower exactly once (a forward hook counts).
- `load_peak_over_weights`: a fresh process's peak memory increase while `from_pretrained` loads the saved safetensors
  checkpoint and every weight is read once, over the checkpoint's bytes: <= 1.3, i.e. never a second copy.
- `batch32_over_batch1`: decode tokens/s at batch 32 over batch 1, static cache + compile: >= 15.
- `decode_fraction_of_bandwidth_ceiling` (CUDA): batch-1 decode tokens/s, static cache + compile, over the
  bandwidth ceiling: >= 0.5.
- `ttft_over_flop_floor` (CUDA): batch-1 TTFT with sdpa over the FLOP floor of that prefill: <= 3.
"""

import argparse
import dataclasses
import datetime
import gc
import json
import os
import statistics
import tempfile
from pathlib import Path

import torch
import transformers

from modeling_xgenmm import XGenMMConfig, XGenMMForConditionalGeneration
from modeling_xgenmm.checkpoint.contents import build_processor
from modeling_xgenmm.train.freezing import freeze_resampler, freeze_vision_tower
from xgenmm_processing import XGenMMImageProcessor, XGenMMImageProcessorPil, XGenMMTokenizer

from .decode_variants import GPU_VARIANTS, REFERENCE, VARIANTS, measure_variants
from .dpo_cost import (
    sft_trainer_and_batch,
    step_times,
    toy_preference_rows,
    xgenmm_dpo_trainer_and_batch,
)
from .generation_speed import (
    MODES,
    VIEWS_PER_IMAGE,
    VisionPassCounter,
    generation_inputs,
    measure_generation,
    mode_settings,
)
from .gpu_ceilings import ceilings, matmul_flops, prefill_flops_by_part
from .image_processing import checked_agreement, images_per_second, mixed_images
from .peak_memory import PeakMemory, peak_rss_in_fresh_process
from .presets import PRESETS, TOKENIZER_FOLDER, Preset, preset_config


BATCH_SIZES = (1, 8, 32)
MIB = 2**20

TARGETS = {
    "images_encoded_once": ("== 1 vision pass per generate", lambda passes: passes == [1]),
    "load_peak_over_weights": ("<= 1.3", lambda ratio: ratio <= 1.3),
    "batch32_over_batch1": (">= 15", lambda ratio: ratio >= 15),
    "int8_decode_over_float32": (">= 1.8", lambda ratio: ratio >= 1.8),
    "int8_language_model_bytes_over_float32": ("<= 0.55", lambda ratio: ratio <= 0.55),
    "compiled_float32_decode_over_float32": (">= 2", lambda ratio: ratio >= 2),
    "compiled_int8_decode_over_float32": (">= 3", lambda ratio: ratio >= 3),
    "greedy_ids_by_the_margin_rule": ("every variant", lambda broken: broken == []),
    "decode_fraction_of_bandwidth_ceiling": (">= 0.5", lambda fraction: fraction >= 0.5),
    "ttft_over_flop_floor": ("<= 3", lambda ratio: ratio <= 3),
}
CUDA_CHECKS = ("decode_fraction_of_bandwidth_ceiling", "ttft_over_flop_floor")

# (variant, its measure, the variant it is judged against) of the decode variants' checks, on a CPU
VARIANT_CHECKS = {
    "int8_decode_over_float32": ("int8", "decode_tokens_per_s", REFERENCE),
    "int8_language_model_bytes_over_float32": ("int8", "language_model_bytes", REFERENCE),
    "compiled_float32_decode_over_float32": ("float32_compiled", "decode_tokens_per_s", REFERENCE),
    "compiled_int8_decode_over_float32": ("int8_compiled", "decode_tokens_per_s", REFERENCE),
}
# The square matrix product whose FLOP/s the prefill is judged against: a CPU core takes 0.2 s for 2048
MATMUL_SIZES = {"cpu": 2048, "cuda": 8192}
LOAD_RESOLUTION_BYTES = 32 * MIB  # smaller checkpoints drown in the ~1 MiB of one-time allocations of a first load

# Runs in a fresh process (see `peak_memory.peak_rss_in_fresh_process`). Before the baseline: the device's context, and
# a load onto the meta device, which runs the loading code once (lazy imports, caches) without any weights. Then the
# measured load; reading every weight once faults in the pages of a memory-mapped checkpoint, so that a lazily
# loaded model counts as one copy, not as none.
LOAD_SETUP = """
import torch
from modeling_xgenmm import XGenMMForConditionalGeneration
torch.empty(0, device=sys.argv[3])
# Hub kernels (on by default from transformers 5.25) refuse to kernelize a model on the meta device.
XGenMMForConditionalGeneration.from_pretrained(sys.argv[1], device_map="meta", use_kernels=False)
"""
LOAD_BODY = """
model = XGenMMForConditionalGeneration.from_pretrained(
    sys.argv[1], dtype=getattr(torch, sys.argv[2]), device_map=sys.argv[3]
)
checksum = sum(float(weight.sum()) for weight in model.parameters())
result = {"cuda_peak": torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0}
"""


def build_model(config: XGenMMConfig, dtype: torch.dtype, device: torch.device) -> XGenMMForConditionalGeneration:
    """Seeded random weights, built on the device."""
    torch.manual_seed(0)
    with torch.device(device):
        model = XGenMMForConditionalGeneration._from_config(config, dtype=dtype)
    return model.eval()


def image_processing_section(repeats: int) -> dict:
    """Images/s of both backends at the released settings (384-pixel views), outputs checked to agree."""
    images = mixed_images()
    pil, fast = XGenMMImageProcessorPil(), XGenMMImageProcessor()
    views, difference = checked_agreement(pil, fast, images)
    return {
        "images": len(images),
        "views": views,
        "max_difference_uint8_levels": difference,
        "images_per_s": {
            "pil": images_per_second(pil, images, repeats),
            "torchvision": images_per_second(fast, images, repeats),
        },
    }


def generation_section(model, processor, preset: Preset, device: torch.device) -> tuple[dict, list[int]]:
    """TTFT and decode tokens/s per mode and batch size; also the vision passes of every `generate` call."""
    counter = VisionPassCounter(model)
    results = {}
    for mode in MODES:
        attention, settings = mode_settings(mode, preset.compile_backend)
        model.set_attn_implementation(attention)
        results[mode] = {}
        for batch_size in BATCH_SIZES:
            inputs = generation_inputs(processor, batch_size, device)
            results[mode][str(batch_size)] = measure_generation(
                model, inputs, settings, preset.new_tokens, preset.repeats, counter
            )
    counter.remove()
    section = {
        "prompt_tokens": generation_inputs(processor, 1, device)["input_ids"].shape[1],
        "image_views_per_row": VIEWS_PER_IMAGE,
        "new_tokens": preset.new_tokens,
        "compile_backend": preset.compile_backend,
        "results": results,
    }
    return section, counter.per_generate


def training_section(config: XGenMMConfig, processor, preset: Preset, device: torch.device, workdir: str) -> dict:
    """SFT and DPO (XGenMMDPOTrainer, shared image features) steps with LoRA on the language model, on toy-world
    preference rows; fp32 master weights (bf16 autocast where CUDA has it), frozen vision tower and resampler."""
    rows = toy_preference_rows(preset.train_rows)
    builders = {
        "sft": lambda model: sft_trainer_and_batch(model, processor, rows, workdir, lora=True),
        "dpo": lambda model: xgenmm_dpo_trainer_and_batch(model, processor, rows, workdir, lora=True, share=True),
    }
    section = {}
    for name, build in builders.items():
        model = build_model(config, torch.float32, device)
        freeze_vision_tower(model)
        freeze_resampler(model)
        trainer, batch = build(model)
        # Memory of the untimed first step: later steps reuse what the allocator kept, and sampling slows a step.
        memory = PeakMemory(device)
        times, _ = step_times(trainer, batch, preset.repeats, first_step=memory)
        step = statistics.median(times)
        section[name] = {
            "rows_per_step": len(rows),
            "step_s": step,
            "samples_per_s": len(rows) / step,
            "peak_memory_bytes": memory.peak,
            "step_memory_increase_bytes": memory.increase,
        }
        del trainer, model
        release_memory(device)
    return section


def load_peak(model: XGenMMForConditionalGeneration, workdir: str, device: torch.device) -> dict:
    """Saves `model` as safetensors and measures loading it in a fresh process (see `LOAD_BODY`)."""
    folder = Path(workdir) / "checkpoint"
    model.save_pretrained(folder)
    weight_bytes = sum(path.stat().st_size for path in folder.glob("*.safetensors"))
    dtype = str(model.dtype).removeprefix("torch.")
    measured = peak_rss_in_fresh_process(LOAD_SETUP, LOAD_BODY, [str(folder), dtype, device.type])
    return {
        "weight_bytes": weight_bytes,
        "peak_rss_increase_bytes": measured["peak"] - measured["baseline"],
        "peak_cuda_bytes": measured["cuda_peak"],
    }


def judged(name: str, measured, **details) -> dict:
    target, passes = TARGETS[name]
    return {"measured": measured, "target": target, "passed": bool(passes(measured)), **details}


def not_judged(name: str, measured, reason: str, **details) -> dict:
    return {"measured": measured, "target": TARGETS[name][0], "passed": None, "reason": reason, **details}


def prefill_section(model, processor, generation: dict, repeats: int, device: torch.device) -> dict:
    """TTFT (sdpa) against its FLOP floor at batch 1 and 8: the prefill's FLOPs by part (`prefill_flops_by_part`) over
    the FLOP/s of a large square matrix product in the model's dtype."""
    model.set_attn_implementation("sdpa")
    size = MATMUL_SIZES.get(device.type, 2048)
    rate = matmul_flops(device, model.dtype, size, repeats)
    batches = {}
    for batch in ("1", "8"):
        flops = prefill_flops_by_part(model, generation_inputs(processor, int(batch), device))
        ttft = generation["results"]["sdpa"][batch]["ttft_s"]
        floor = flops["total"] / rate
        batches[batch] = {"flops": flops, "floor_s": floor, "ttft_s": ttft, "ttft_over_floor": ttft / floor}
    return {"matmul_size": size, "matmul_flops_per_s": rate, "batches": batches}


def decode_variants_section(folder: Path, processor, preset: Preset, device: torch.device) -> dict:
    """Batch-1 decoding of the same weights as float32, bf16, int8, int4, eager and compiled (`decode_variants.py`);
    on a GPU, bf16 and int8, against bf16."""
    names, reference = (list(VARIANTS), REFERENCE) if device.type == "cpu" else (list(GPU_VARIANTS), "bfloat16")
    inputs = generation_inputs(processor, 1, device)
    results = measure_variants(
        str(folder), inputs, preset.new_tokens, preset.repeats, preset.compile_backend, device, names, reference
    )
    return {"reference": reference, "new_tokens": preset.new_tokens, "results": results}


def variant_checks(variants: dict) -> dict:
    """The decode variants' targets: int8 and compiled decoding against float32 eager, greedy ids by the margin
    rule."""
    results, checks = variants["results"], {}
    for name, (variant, measure, reference) in VARIANT_CHECKS.items():
        measured = [results.get(key, {}).get(measure) for key in (variant, reference)]
        if None in measured:
            checks[name] = not_judged(name, None, f"{variant} or {reference} not measured here")
        else:
            checks[name] = judged(name, measured[0] / measured[1], variant=variant, reference=reference)
    broken = [name for name, result in results.items() if result.get("agreement_holds") is False]
    checks["greedy_ids_by_the_margin_rule"] = judged(
        "greedy_ids_by_the_margin_rule", broken, reference=variants["reference"]
    )
    return checks


def checks_section(
    generation: dict, vision_passes: list[int], load: dict, gpu: dict | None, variants: dict | None = None
) -> dict:
    static = generation["results"]["static_compile"]
    batch_ratio = static["32"]["decode_tokens_per_s"] / static["1"]["decode_tokens_per_s"]
    load_ratio = max(load["peak_rss_increase_bytes"], load["peak_cuda_bytes"]) / load["weight_bytes"]
    checks = {
        "images_encoded_once": judged(
            "images_encoded_once", sorted(set(vision_passes)), generate_calls=len(vision_passes)
        ),
        "load_peak_over_weights": judged("load_peak_over_weights", load_ratio, **load),
        "batch32_over_batch1": judged("batch32_over_batch1", batch_ratio, mode="static_compile"),
    }
    if load["weight_bytes"] < LOAD_RESOLUTION_BYTES:
        reason = f"weights under {LOAD_RESOLUTION_BYTES // MIB} MiB, below the measurement's resolution"
        checks["load_peak_over_weights"] = not_judged("load_peak_over_weights", load_ratio, reason, **load)
    if gpu is None:
        for name in CUDA_CHECKS:
            checks[name] = not_judged(name, None, "needs a CUDA GPU")
    else:
        checks["decode_fraction_of_bandwidth_ceiling"] = judged(
            "decode_fraction_of_bandwidth_ceiling", gpu["decode_fraction_of_ceiling"], mode="static_compile"
        )
        checks["ttft_over_flop_floor"] = judged("ttft_over_flop_floor", gpu["ttft_over_floor"], mode="sdpa")
    if variants is not None:
        checks |= variant_checks(variants)
    return checks


def gpu_section(model, processor, generation: dict, repeats: int, device: torch.device) -> dict:
    """Bandwidth ceiling and FLOP floor at batch 1 (see `gpu_ceilings.py`), and batch-32 throughput."""
    results = generation["results"]
    model.set_attn_implementation("sdpa")
    section = ceilings(
        model,
        generation_inputs(processor, 1, device),
        decode_tokens_per_s=results["static_compile"]["1"]["decode_tokens_per_s"],
        ttft_s=results["sdpa"]["1"]["ttft_s"],
        repeats=repeats,
    )
    section["batch32_decode_tokens_per_s"] = results["static_compile"]["32"]["decode_tokens_per_s"]
    return section


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model_names = [line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")]
    return model_names[0].split(":", 1)[1].strip() if model_names else device.type


def release_memory(device: torch.device) -> None:
    """Frees what dropped models left (trainers hold them in reference cycles), so each measurement starts clean."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run(preset_name: str, device: torch.device, compile_backend: str | None = None) -> dict:
    preset = PRESETS[preset_name]
    if compile_backend is not None:
        preset = dataclasses.replace(preset, compile_backend=compile_backend)
    if preset.needs_cuda and device.type != "cuda":
        raise SystemExit(f"the {preset_name} preset needs a CUDA GPU, and the device is {device}")
    tokenizer = XGenMMTokenizer.from_pretrained(TOKENIZER_FOLDER)
    config = preset_config(preset, tokenizer)
    processor = build_processor(config, tokenizer)
    model = build_model(config, preset.dtype, device)
    results = {
        "meta": {
            "preset": preset_name,
            "date": datetime.date.today().isoformat(),
            "device": device.type,
            "device_name": device_name(device),
            "cpu_cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "dtype": str(preset.dtype).removeprefix("torch."),
            "parameters": model.num_parameters_by_part(),
            "repeats": preset.repeats,
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        },
        "image_processing": image_processing_section(preset.repeats),
    }
    results["generation"], vision_passes = generation_section(model, processor, preset, device)
    results["prefill"] = prefill_section(model, processor, results["generation"], preset.repeats, device)
    gpu = None
    if device.type == "cuda":
        gpu = gpu_section(model, processor, results["generation"], preset.repeats, device)
    with tempfile.TemporaryDirectory() as workdir:
        load = load_peak(model, workdir, device)
        del model
        release_memory(device)
        results["decode_variants"] = decode_variants_section(Path(workdir) / "checkpoint", processor, preset, device)
        release_memory(device)
        results["training"] = training_section(config, processor, preset, device, workdir)
    results["checks"] = checks_section(results["generation"], vision_passes, load, gpu, results["decode_variants"])
    if gpu is not None:
        results["gpu_ceilings"] = gpu
    return results


def markdown_table(header: list[str], rows: list[list]) -> str:
    """An aligned Markdown table; numbers right-aligned."""
    cells = [header] + [[cell if isinstance(cell, str) else f"{cell:,.1f}" for cell in row] for row in rows]
    widths = [max(len(row[column]) for row in cells) for column in range(len(header))]
    numeric = [any(not isinstance(row[column], str) for row in rows) for column in range(len(header))]

    def line(row: list[str]) -> str:
        return (
            "| "
            + " | ".join(
                cell.rjust(width) if right else cell.ljust(width) for cell, width, right in zip(row, widths, numeric)
            )
            + " |"
        )

    rule = "|" + "|".join("-" * (width + 1) + (":" if right else "-") for width, right in zip(widths, numeric)) + "|"
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


def verdict(check: dict) -> str:
    return {True: "pass", False: "FAIL", None: f"n/a: {check.get('reason')}"}[check["passed"]]


def report(results: dict) -> str:
    """Every section's tables, as Markdown: the run, image processing, generation, training, the GPU ceilings (on
    CUDA) and the targets."""
    parts = [
        *run_and_images_report(results),
        *generation_report(results),
        *prefill_report(results),
        *decode_variants_report(results),
        *training_report(results),
        *(gpu_ceilings_report(results) if "gpu_ceilings" in results else []),
        "\nTargets",
        markdown_table(
            ["check", "measured", "target", "result"],
            [
                [name, describe(name, check), check["target"], verdict(check)]
                for name, check in results["checks"].items()
            ],
        ),
    ]
    return "\n".join(parts)


def run_and_images_report(results: dict) -> list[str]:
    meta, images = results["meta"], results["image_processing"]
    parameters = meta["parameters"]
    return [
        f"preset {meta['preset']}: {parameters['total'] / 1e6:,.1f}M parameters ({meta['dtype']}), "
        f"{meta['device']} ({meta['device_name']}), "
        f"{meta['cpu_cores']} CPU cores, {meta['torch_threads']} torch thread(s), {meta['date']}",
        f"\nImage processing: {images['images']} mixed-size images -> {images['views']} views of 384x384 "
        f"(backends agree within {images['max_difference_uint8_levels']:.2f} uint8 levels), best of {meta['repeats']}",
        markdown_table(["backend", "images/s"], [[name, rate] for name, rate in images["images_per_s"].items()]),
    ]


def generation_report(results: dict) -> list[str]:
    meta, generation = results["meta"], results["generation"]
    return [
        f"\nGeneration: rows of one {generation['image_views_per_row']}-view image + chat prompt "
        f"({generation['prompt_tokens']} tokens), greedy, {generation['new_tokens']} new tokens, "
        f"compile backend {generation['compile_backend']}, best of {meta['repeats']}",
        markdown_table(
            ["mode", "batch", "TTFT ms", "decode tokens/s"],
            [
                [mode, batch, timing["ttft_s"] * 1000, timing["decode_tokens_per_s"]]
                for mode, batches in generation["results"].items()
                for batch, timing in batches.items()
            ],
        ),
    ]


def prefill_report(results: dict) -> list[str]:
    prefill = results["prefill"]
    return [
        f"\nPrefill against its FLOP floor: FLOPs by part (torch's FlopCounterMode) over "
        f"{prefill['matmul_flops_per_s'] / 1e9:,.1f} GFLOP/s (a {prefill['matmul_size']}-square "
        f"{results['meta']['dtype']} matrix product here); TTFT with sdpa",
        markdown_table(
            [
                "batch",
                "GFLOP",
                "vision tower",
                "resampler",
                "language model",
                "head",
                "floor ms",
                "TTFT ms",
                "TTFT / floor",
            ],
            [
                [
                    batch,
                    *(row["flops"][part] / 1e9 for part in ("total", "vision_tower", "resampler", "language_model")),
                    f"{row['flops']['head'] / 1e9:.3f}",
                    row["floor_s"] * 1000,
                    row["ttft_s"] * 1000,
                    f"{row['ttft_over_floor']:.2f}",
                ]
                for batch, row in prefill["batches"].items()
            ],
        ),  # fmt: skip
    ]


def decode_variants_report(results: dict) -> list[str]:
    variants = results["decode_variants"]
    reference = variants["results"][variants["reference"]]
    rows = []
    for name, result in variants["results"].items():
        if "skipped" in result:
            rows.append([name, "-", "-", "-", "-", "-", "-", f"not run: {result['skipped']}"])
            continue
        break_even = result.get("break_even_tokens")
        rows.append(
            [
                name,
                result["decode_tokens_per_s"],
                f"{result['decode_tokens_per_s'] / reference['decode_tokens_per_s']:.2f}x",
                result["language_model_bytes"] / MIB,
                f"{result['language_model_bytes'] / reference['language_model_bytes']:.2f}x",
                f"{result['compile_s']:.1f}" if "compile_s" in result else "",
                "" if "compile_s" not in result else ("never" if break_even is None else f"{break_even:,.0f}"),
                result["agreement"],
            ]
        )
    return [
        f"\nDecoding variants, batch 1, {variants['new_tokens']} new tokens, against {variants['reference']} eager "
        "(compiled: static cache + torch.compile; pays off after: generated tokens to earn back the compile time)",
        markdown_table(
            [
                "variant",
                "decode tokens/s",
                "speed",
                "LM weights MiB",
                "bytes",
                "compile s",
                "pays off after",
                "greedy ids",
            ],
            rows,
        ),  # fmt: skip
    ]


def training_report(results: dict) -> list[str]:
    memory = "CUDA allocated" if results["meta"]["device"] == "cuda" else "anonymous RSS"
    return [
        f"\nTraining: forward + backward on {results['training']['sft']['rows_per_step']} toy-world rows per step, "
        "LoRA on the language model, median step",
        markdown_table(
            ["step", "samples/s", "step ms", f"peak {memory} MiB", "added by the step MiB"],
            [
                [
                    name.upper(),
                    step["samples_per_s"],
                    step["step_s"] * 1000,
                    step["peak_memory_bytes"] / MIB,
                    step["step_memory_increase_bytes"] / MIB,
                ]
                for name, step in results["training"].items()
            ],
        ),
    ]


def gpu_ceilings_report(results: dict) -> list[str]:
    gpu = results["gpu_ceilings"]
    return [
        f"\nGPU ceilings ({results['meta']['device_name']})",
        markdown_table(
            ["quantity", "value"],
            [
                ["copy bandwidth GB/s", gpu["copy_bandwidth_bytes_per_s"] / 1e9],
                ["matmul TFLOP/s", gpu["matmul_flops_per_s"] / 1e12],
                ["decode weight GB", gpu["decode_weight_bytes"] / 1e9],
                ["batch-1 decode ceiling tokens/s", gpu["decode_ceiling_tokens_per_s"]],
                ["batch-1 decode tokens/s (static + compile)", gpu["decode_tokens_per_s"]],
                ["prefill GFLOP (batch 1, 5 views)", gpu["prefill_flops"] / 1e9],
                ["TTFT floor ms", gpu["ttft_floor_s"] * 1000],
                ["TTFT ms (sdpa)", gpu["ttft_s"] * 1000],
                ["batch-32 decode tokens/s (static + compile)", gpu["batch32_decode_tokens_per_s"]],
            ],
        ),
    ]


def describe(name: str, check: dict) -> str:
    measured = check["measured"]
    if measured is None:
        return "-"
    if name == "images_encoded_once":
        return f"{'/'.join(map(str, measured))} pass(es) in each of {check['generate_calls']} calls"
    if name == "greedy_ids_by_the_margin_rule":
        return "holds" if not measured else f"broken: {', '.join(measured)}"
    return f"{measured:.2f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--json", type=Path, help="write every number to this file")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", help="cpu or cuda (default: cuda where available)")
    parser.add_argument(
        "--compile_backend", help="torch.compile backend of static_compile (default: the preset's; tiny: eager)"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    results = run(args.preset, device, args.compile_backend)
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
