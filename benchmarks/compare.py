# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Two checkouts of the package side by side in one run: the same measurements (`compare_worker.py`) on the same
weights, each in a fresh process, the two sides interleaved and their order swapped every round, so that drift of
the machine falls on both. Prints the speed ratios (the candidate over the baseline, > 1 is faster) and checks that
both give the same outputs (greedy ids, logits, loss and gradients, pixels).

    python -m benchmarks.compare 6e40a3f [CANDIDATE] [--preset small] [--rounds 3] [--threads 1] [--json out.json]

BASELINE and CANDIDATE are git revisions of this repository, or `.` for the working tree (the default candidate).
Each measurement is the best of `--repeats` timed calls after a warm-up; each side's figure is its best round.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch


REPO_ROOT = Path(__file__).resolve().parents[1]
NEW_TOKENS = 32  # compare_worker's default: tokens per generate call
PARTS = ("total", "vision_tower", "resampler", "language_model", "head")
GROUPS = ("generation", "decode", "training", "images")
# metric: (what it is, True where larger is better)
METRICS = {
    "ttft_float32_b1": ("time to first token, batch 1", False),
    "ttft_float32_b8": ("time to first token, batch 8", False),
    "decode_tokens_per_s_float32_b1": ("decode tokens/s, batch 1", True),
    "decode_tokens_per_s_float32_b8": ("decode tokens/s, batch 8", True),
    "ttft_bfloat16_b1": ("time to first token, batch 1, bf16", False),
    "decode_tokens_per_s_bfloat16_b1": ("decode tokens/s, batch 1, bf16", True),
    "train_step_s": ("training step, batch 4 (forward + backward)", False),
    "images_per_s_pil": ("image processing, PIL backend", True),
    "images_per_s_torchvision": ("image processing, torchvision backend", True),
}
# ratio the candidate must reach over the baseline (issue 16's acceptance)
TARGETS = {
    "ttft_float32_b1": 1.2,
    "ttft_float32_b8": 1.2,
    "decode_tokens_per_s_float32_b1": 1.0,
    "decode_tokens_per_s_float32_b8": 1.0,
    "train_step_s": 1.5,
    "images_per_s_pil": 2.0,
    "images_per_s_torchvision": 1.5,
}
BF16_OVER_FP32_TARGET = 1.6
# decode group: (what the variant is, its decode tokens/s over float32 eager's and its language-model weight bytes over
# float32's that issue 28's acceptance asks of the candidate, None where it asks nothing)
VARIANT_TARGETS = {
    "float32": ("float32, eager (the reference)", None, None),
    "float32_compiled": ("float32, static cache + compile", 2.0, None),
    "float32_transposed": ("float32, storage transposed", None, None),
    "float32_transposed_compiled": ("float32, storage transposed, compiled", 2.0, None),
    "bfloat16": ("bf16", None, None),
    "bfloat16_compiled": ("bf16, compiled", None, None),
    "int8": ("int8 weights, bf16 activations", 1.8, 0.55),
    "int8_compiled": ("int8, compiled", 3.0, None),
    "int4": ("int4 weights (int8 head), bf16 activations", None, None),
    "int4_compiled": ("int4, compiled", None, None),
}


def checkout(revision: str, workdir: Path) -> Path:
    """The folder holding `modeling_xgenmm/` and `processing/` of `revision` (`.`: this working tree)."""
    if revision == ".":
        return REPO_ROOT
    folder = workdir / f"checkout-{revision}"
    folder.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "archive", revision, "modeling_xgenmm", "processing"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def side_folder(source: Path, name: str, workdir: Path) -> Path:
    """A folder to run the worker from: this harness's `benchmarks`, and the packages of `source` under their
    installed names, first on `sys.path` (before the editable install's finder)."""
    folder = workdir / name
    folder.mkdir()
    (folder / "benchmarks").symlink_to(REPO_ROOT / "benchmarks")
    (folder / "modeling_xgenmm").symlink_to(source / "modeling_xgenmm")
    (folder / "xgenmm_processing").symlink_to(source / "processing")
    return folder


def run_worker(folder: Path, group: str, args, weights: Path, out: Path | None) -> dict:
    command = [sys.executable, "-m", "benchmarks.compare_worker", group, "--preset", args.preset]
    command += ["--weights", str(weights), "--threads", str(args.threads), "--repeats", str(args.repeats)]
    if out is not None:
        command += ["--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    env.pop("PYTHONPATH", None)
    completed = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    if completed.returncode != 0:
        raise SystemExit(f"{group} failed in {folder.name}:\n{completed.stderr[-4000:]}")
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    expected = (folder / "modeling_xgenmm").resolve()
    if Path(result.pop("package")) != expected:
        raise SystemExit(f"the worker in {folder.name} imported another modeling_xgenmm than {expected}")
    return result


def max_difference(first: torch.Tensor, second: torch.Tensor) -> float:
    if first.shape != second.shape:
        return float("inf")
    difference = (first.float() - second.float()).abs()
    difference[first == second] = 0  # equal infinities (the scores of banned tokens) differ by nothing
    return difference.max().item() if first.numel() else 0.0


def output_checks(baseline: dict, candidate: dict) -> dict:
    """What the two sides' outputs share: equal greedy ids and prompts, and the largest differences."""
    checks = {}
    for key in sorted(baseline):
        first, second = baseline[key], candidate.get(key)
        if second is None:
            continue
        if key.startswith(("ids_", "input_ids_")):
            checks[key] = "equal" if torch.equal(first, second) else "DIFFERENT"
        elif key.startswith("pixels_"):
            checks[key] = f"max |difference| {max_difference(first, second) * 255 / 2:.3g} uint8 levels"
        elif key.startswith("grad_"):
            scale = first.abs().max().item() or 1.0
            checks[key] = f"max |difference| / max |gradient| {max_difference(first, second) / scale:.2e}"
        else:
            checks[key] = f"max |difference| {max_difference(first, second):.2e}"
    return checks


def best_of_rounds(rounds: list[dict]) -> dict:
    """Each measurement's best round (fastest time, highest rate or bandwidth); sizes, counts and verdicts are the same
    every round (the first round's is kept)."""
    best = {}
    for metric in rounds[0]:
        values = [measured[metric] for measured in rounds]
        if metric in METRICS:
            best[metric] = max(values) if METRICS[metric][1] else min(values)
        elif isinstance(values[0], (str, bool)):
            best[metric] = values[0]
        elif metric.endswith("_s") and not metric.endswith("_per_s"):
            best[metric] = min(values)
        else:
            best[metric] = max(values)
    return best


def ratio(metric: str, baseline: float, candidate: float) -> float:
    return candidate / baseline if METRICS[metric][1] else baseline / candidate


def table(best: dict, names: tuple[str, str]) -> str:
    lines = [f"{'measurement':<46} {names[0]:>12} {names[1]:>12} {'speed-up':>9} {'target':>7}  met"]
    for metric, (label, _) in METRICS.items():
        if metric not in best[names[0]] or metric not in best[names[1]]:
            continue
        first, second = best[names[0]][metric], best[names[1]][metric]
        speedup = ratio(metric, first, second)
        target = TARGETS.get(metric)
        met = "" if target is None else ("yes" if speedup >= target else "no")
        target_text = "" if target is None else f">= {target:g}"
        lines.append(f"{label:<46} {first:>12.4g} {second:>12.4g} {speedup:>8.2f}x {target_text:>7}  {met}")
    candidate = best[names[1]]
    if "read_bandwidth_bytes_per_s" in candidate:
        bandwidth = candidate["read_bandwidth_bytes_per_s"]
        lines.append(f"\ncandidate batch-1 decode against the bandwidth ceiling (reads {bandwidth / 1e9:.1f} GB/s):")
        for dtype in ("float32", "bfloat16"):
            weights = candidate[f"decode_weight_bytes_{dtype}_b1"]
            ceiling = bandwidth / weights
            measured = candidate[f"decode_tokens_per_s_{dtype}_b1"]
            lines.append(
                f"  {dtype:<9} {weights / 1e6:6.1f} MB of weights per token: ceiling {ceiling:6.1f} tokens/s, "
                f"measured {measured:6.1f} = {measured / ceiling:.0%} of it"
            )
    if "decode_tokens_per_s_bfloat16_b1" in candidate:
        speedup = candidate["decode_tokens_per_s_bfloat16_b1"] / candidate["decode_tokens_per_s_float32_b1"]
        met = "yes" if speedup >= BF16_OVER_FP32_TARGET else "no"
        lines.append(
            f"{'candidate bf16 over fp32 decode, batch 1':<46} {'':>12} {'':>12} {speedup:>8.2f}x "
            f"{'>= ' + format(BF16_OVER_FP32_TARGET, 'g'):>7}  {met}"
        )
    for name in names:
        lines += prefill_floor_lines(best[name], name) + decode_variant_lines(best[name], name)
    return "\n".join(lines)


def prefill_floor_lines(side: dict, name: str) -> list[str]:
    """Time to first token against its FLOP floor: the prefill's FLOPs by part over the measured matmul rate."""
    if "matmul_flops_per_s_float32" not in side:
        return []
    rate = side["matmul_flops_per_s_float32"]
    lines = [
        f"\n{name}: time to first token against its FLOP floor (float32, matmul rate {rate / 1e9:.1f} GFLOP/s of a "
        "2048-square product at this thread count)",
        f"  {'batch':>5} {'GFLOP':>8} {'vision':>8} {'resampler':>9} {'LM':>8} {'head':>6} {'floor ms':>9} "
        f"{'TTFT ms':>8} {'TTFT/floor':>10} {'LM floor ms':>11}",
    ]
    for batch in (1, 8):
        flops = {part: side[f"prefill_flops_{part}_b{batch}"] / 1e9 for part in PARTS}
        floor, ttft = flops["total"] * 1e9 / rate, side[f"ttft_float32_b{batch}"]
        lines.append(
            f"  {batch:>5} {flops['total']:>8.2f} {flops['vision_tower']:>8.2f} {flops['resampler']:>9.2f} "
            f"{flops['language_model']:>8.2f} {flops['head']:>6.3f} {floor * 1e3:>9.1f} {ttft * 1e3:>8.1f} "
            f"{ttft / floor:>10.2f} {flops['language_model'] * 1e12 / rate:>11.1f}"
        )
    return lines


def decode_variant_lines(side: dict, name: str) -> list[str]:
    """The decode group's variants against this side's float32 eager: speed, weight bytes, compile cost, agreement."""
    if "float32/decode_tokens_per_s" not in side:
        return []
    reference = side["float32/decode_tokens_per_s"], side["float32/language_model_bytes"]
    lines = [
        f"\n{name}: batch-1 decoding by variant, against its float32 eager (the same run)",
        f"  {'variant':<44} {'tokens/s':>8} {'speed':>6} {'LM MB':>7} {'bytes':>6} {'compile s':>9} "
        f"{'pays off after':>14}  {'greedy ids vs float32':<36} target",
    ]
    for variant, (label, speed_target, bytes_target) in VARIANT_TARGETS.items():
        if f"{variant}/decode_tokens_per_s" not in side:
            continue
        rate, weight_bytes = side[f"{variant}/decode_tokens_per_s"], side[f"{variant}/language_model_bytes"]
        speed, size = rate / reference[0], weight_bytes / reference[1]
        compile_s = side.get(f"{variant}/compile_s")
        eager = side.get(f"{variant.removesuffix('_compiled')}/decode_s")
        pays_off = ""
        if compile_s is not None and eager is not None:
            saved = eager - side[f"{variant}/decode_s"]  # over the run's tokens after the first
            pays_off = f"{compile_s / saved * (NEW_TOKENS - 1):,.0f} tokens" if saved > 0 else "never"
        targets = []
        if speed_target is not None:
            targets.append(f"speed >= {speed_target:g} {'yes' if speed >= speed_target else 'no'}")
        if bytes_target is not None:
            targets.append(f"bytes <= {bytes_target:g} {'yes' if size <= bytes_target else 'no'}")
        lines.append(
            f"  {label:<44} {rate:>8.1f} {speed:>5.2f}x {weight_bytes / 1e6:>7.1f} {size:>5.2f}x "
            f"{'' if compile_s is None else format(compile_s, '.1f'):>9} {pays_off:>14}  "
            f"{side[f'{variant}/agreement']:<36} {', '.join(targets)}"
        )
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", help="git revision, or . for the working tree")
    parser.add_argument("candidate", nargs="?", default=".", help="git revision, or . for the working tree")
    parser.add_argument("--preset", default="small", choices=("tiny", "small"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per measurement, after a warm-up")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--groups", nargs="+", choices=GROUPS, default=list(GROUPS))
    parser.add_argument("--json", type=Path, help="write every round's numbers and the checks to this file")
    args = parser.parse_args()

    names = (f"baseline {args.baseline}", f"candidate {args.candidate}")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        folders = {
            names[0]: side_folder(checkout(args.baseline, workdir), "baseline", workdir),
            names[1]: side_folder(checkout(args.candidate, workdir), "candidate", workdir),
        }
        weights = workdir / "weights.safetensors"
        run_worker(folders[names[1]], "weights", args, weights, None)
        rounds = {name: [] for name in names}
        outputs = {name: {} for name in names}
        for round_index in range(args.rounds):
            order = names if round_index % 2 == 0 else names[::-1]
            measured = {name: {} for name in names}
            for group in args.groups:
                for name in order:
                    out = workdir / f"{folders[name].name}-{group}.pt" if round_index == 0 else None
                    measured[name] |= run_worker(folders[name], group, args, weights, out)
                    if out is not None:
                        outputs[name] |= torch.load(out)
            for name in names:
                rounds[name].append(measured[name])
            print(f"round {round_index + 1}/{args.rounds} done", file=sys.stderr)
        best = {name: best_of_rounds(rounds[name]) for name in names}
        checks = output_checks(outputs[names[0]], outputs[names[1]])

    print(f"preset {args.preset}, {args.threads} thread(s), best of {args.rounds} interleaved rounds")
    print(table(best, names))
    print("\noutputs, baseline vs candidate:")
    for key, verdict in checks.items():
        print(f"  {key:<48} {verdict}")
    if args.json:
        args.json.write_text(json.dumps({"rounds": rounds, "best": best, "checks": checks}, indent=2))


if __name__ == "__main__":
    main()
