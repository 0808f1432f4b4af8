# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""The GPU benchmark: bf16 decoding with a static cache and `torch.compile` (CUDA graphs) at batch 1, 8 and 32 against
the memory-bandwidth ceiling, and the time to first token against the FLOP floor, at the v1.5 size by default.

    python -m benchmarks.gpu [--preset full] [--batches 1 8 32] [--new_tokens 64] [--repeats 3] [--json gpu.json]

Every row is `batch` copies of one 5-view image and a chat prompt (`generation_speed.generation_inputs`), greedy
without an end of sequence, `new_tokens` decoded; the model has the preset's random weights in bf16 and sdpa
attention. Each row's numbers are the best of `repeats` calls after a warm-up call (which compiles):

- TTFT: from the call to the first token's scores (the prefill runs uncompiled, as transformers runs it).
- FLOP floor: the prefill's FLOPs (`gpu_ceilings.prefill_flops_by_part`: vision tower, resampler, language model,
  head) over the FLOP/s of an 8192-square bf16 matrix product; TTFT / floor >= 1, the closer to 1 the better.
- decode tokens/s: `batch * (new_tokens - 1)` over the time after the first token.
- bandwidth ceiling: a decoding step reads the language model's and the head's weights once and the whole static
  cache (keys and values of `prompt + new_tokens` positions per row, as sdpa reads a static cache); the ceiling is
  `batch * copy bandwidth / those bytes` tokens/s (the bandwidth of a 1 GiB device copy, bytes read and written).

The output's format is fixed (`report`): a header of the device and its measured limits, then one Markdown table with
the columns of `COLUMNS`, one row per batch. `--json` writes every number.
"""

import argparse
import datetime
import json
import time
from pathlib import Path

import torch
import transformers

from modeling_xgenmm.checkpoint.contents import build_processor
from xgenmm_processing import XGenMMTokenizer

from .generation_speed import VisionPassCounter, generation_inputs, measure_generation, mode_settings, synchronize
from .gpu_ceilings import copy_bandwidth, decode_weight_bytes, matmul_flops, prefill_flops_by_part
from .presets import PRESETS, TOKENIZER_FOLDER, preset_config
from .run import build_model, device_name


BATCHES = (1, 8, 32)
COLUMNS = (
    "batch",
    "prompt tokens",
    "prefill GFLOP",
    "FLOP floor ms",
    "TTFT ms",
    "TTFT / floor",
    "bytes per step GB",
    "ceiling tokens/s",
    "decode tokens/s",
    "decode / ceiling",
)


def static_cache_bytes(config, batch: int, positions: int, dtype: torch.dtype) -> int:
    """Bytes of a static cache of `positions` positions for `batch` rows: keys and values of every layer."""
    text = config.text_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    per_position = 2 * text.num_hidden_layers * text.num_key_value_heads * head_dim
    return batch * positions * per_position * torch.finfo(dtype).bits // 8


def measure(
    preset_name: str = "full",
    device: torch.device | None = None,
    batches: tuple[int, ...] = BATCHES,
    new_tokens: int | None = None,
    repeats: int | None = None,
    compile_backend: str | None = None,
    copy_bytes: int = 2**30,
    matmul_size: int = 8192,
) -> dict:
    """Every number of the report (see the module docstring); the keyword arguments after `batches` default to the
    preset's (the last two make the limits quick to measure in tests)."""
    preset = PRESETS[preset_name]
    device = device or torch.device("cuda")
    new_tokens, repeats = new_tokens or preset.new_tokens, repeats or preset.repeats
    settings = mode_settings("static_compile", compile_backend or preset.compile_backend)[1]
    tokenizer = XGenMMTokenizer.from_pretrained(TOKENIZER_FOLDER)
    config = preset_config(preset, tokenizer)
    processor = build_processor(config, tokenizer)
    model = build_model(config, torch.bfloat16, device)
    model.set_attn_implementation("sdpa")
    bandwidth = copy_bandwidth(device, copy_bytes, repeats)
    flops_per_s = matmul_flops(device, torch.bfloat16, matmul_size, repeats)
    weight_bytes = decode_weight_bytes(model)
    counter = VisionPassCounter(model)
    rows = []
    for batch in batches:
        inputs = generation_inputs(processor, batch, device)
        inputs["pixel_values"] = inputs["pixel_values"].to(torch.bfloat16)
        prompt = inputs["input_ids"].shape[1]
        synchronize(device)
        start = time.perf_counter()
        timing = measure_generation(model, inputs, settings, new_tokens, repeats, counter)
        calls_s = time.perf_counter() - start
        flops = prefill_flops_by_part(model, inputs)
        step_bytes = weight_bytes + static_cache_bytes(config, batch, prompt + new_tokens, torch.bfloat16)
        ceiling = batch * bandwidth / step_bytes
        rows.append(
            {
                "batch": batch,
                "prompt_tokens": prompt,
                "prefill_flops": flops,
                "flop_floor_s": flops["total"] / flops_per_s,
                "ttft_s": timing["ttft_s"],
                "step_bytes": step_bytes,
                "ceiling_tokens_per_s": ceiling,
                "decode_tokens_per_s": timing["decode_tokens_per_s"],
                # the warm-up call compiles: all calls' time over that of as many best calls
                "compile_s": max(calls_s - (1 + repeats) * (timing["ttft_s"] + timing["decode_s"]), 0.0),
            }
        )
    counter.remove()
    return {
        "meta": {
            "preset": preset_name,
            "date": datetime.date.today().isoformat(),
            "device": device.type,
            "device_name": device_name(device),
            "parameters": model.num_parameters_by_part(),
            "new_tokens": new_tokens,
            "repeats": repeats,
            "compile": {key: str(value) for key, value in settings["compile_config"].to_dict().items()},
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        },
        "copy_bandwidth_bytes_per_s": bandwidth,
        "matmul_flops_per_s": flops_per_s,
        "decode_weight_bytes": weight_bytes,
        "rows": rows,
    }


def report(results: dict) -> str:
    """The fixed output: a header, then one Markdown table, a row per batch (`COLUMNS`)."""
    meta = results["meta"]
    lines = [
        f"xGen-MM {meta['preset']} preset, bf16, sdpa, static cache + torch.compile: {meta['device_name']}, "
        f"torch {meta['versions']['torch']}, transformers {meta['versions']['transformers']}, {meta['date']}",
        f"parameters {meta['parameters']['total'] / 1e9:.2f} B; copy bandwidth "
        f"{results['copy_bandwidth_bytes_per_s'] / 1e9:.1f} GB/s; bf16 matmul "
        f"{results['matmul_flops_per_s'] / 1e12:.1f} TFLOP/s; decode weights "
        f"{results['decode_weight_bytes'] / 1e9:.2f} GB per step; {meta['new_tokens']} new tokens, best of "
        f"{meta['repeats']}; compile (warm-up over a call) {max(row['compile_s'] for row in results['rows']):.1f} s",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("-" * (len(column) + 1) + ":" for column in COLUMNS) + "|",
    ]
    for row in results["rows"]:
        cells = (
            f"{row['batch']}",
            f"{row['prompt_tokens']}",
            f"{row['prefill_flops']['total'] / 1e9:.1f}",
            f"{row['flop_floor_s'] * 1e3:.2f}",
            f"{row['ttft_s'] * 1e3:.2f}",
            f"{row['ttft_s'] / row['flop_floor_s']:.2f}",
            f"{row['step_bytes'] / 1e9:.2f}",
            f"{row['ceiling_tokens_per_s']:.1f}",
            f"{row['decode_tokens_per_s']:.1f}",
            f"{row['decode_tokens_per_s'] / row['ceiling_tokens_per_s']:.0%}",
        )
        lines.append("| " + " | ".join(cell.rjust(len(column)) for cell, column in zip(cells, COLUMNS)) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="full")
    parser.add_argument("--batches", type=int, nargs="+", default=list(BATCHES))
    parser.add_argument("--new_tokens", type=int, help="default: the preset's")
    parser.add_argument("--repeats", type=int, help="default: the preset's")
    parser.add_argument("--json", type=Path, help="write every number to this file")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks.gpu measures a CUDA GPU, and none is available here")
    results = measure(args.preset, torch.device("cuda"), tuple(args.batches), args.new_tokens, args.repeats)
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
