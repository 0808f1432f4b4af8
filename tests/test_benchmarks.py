"""The benchmark command (`python -m benchmarks.run`): the tiny preset as a CI smoke test, the refusal of the full
preset without a GPU, and the GPU ceilings' arithmetic, run on the CPU; the margin rule of greedy agreement; the GPU
script's (`python -m benchmarks.gpu`) measurements and fixed report, on the tiny preset on the CPU."""

import copy
import json
import subprocess
import sys

import pytest
import torch

from benchmarks import gpu
from benchmarks.agreement import margin_rule, summary
from benchmarks.decode_variants import REFERENCE, VARIANTS
from benchmarks.generation_speed import MODES, generation_inputs
from benchmarks.gpu_ceilings import ceilings, decode_weight_bytes, language_model_bytes, prefill_flops_by_part
from benchmarks.run import (
    BATCH_SIZES,
    PRESETS,
    TOKENIZER_FOLDER,
    build_model,
    checks_section,
    preset_config,
    report,
    run,
)
from modeling_xgenmm.checkpoint.contents import build_processor
from paths import REPO_ROOT
from xgenmm_processing import XGenMMTokenizer


@pytest.fixture(scope="module")
def tiny_results(tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("bench") / "tiny.json"
    command = [sys.executable, "-m", "benchmarks.run", "--preset", "tiny", "--threads", "1", "--json", str(path)]
    completed = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=110)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "Targets" in completed.stdout
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def tiny_model_and_processor():
    tokenizer = XGenMMTokenizer.from_pretrained(TOKENIZER_FOLDER)
    config = preset_config(PRESETS["tiny"], tokenizer)
    return build_model(config, torch.float32, torch.device("cpu")), build_processor(config, tokenizer)


def test_tiny_preset_measures_both_image_processing_backends(tiny_results):
    section = tiny_results["image_processing"]
    assert section["views"] > section["images"] > 0
    assert section["images_per_s"]["pil"] > 0 and section["images_per_s"]["torchvision"] > 0


def test_tiny_preset_measures_ttft_and_decode_per_mode_and_batch_size(tiny_results):
    results, decoded = tiny_results["generation"]["results"], tiny_results["generation"]["new_tokens"] - 1
    assert list(results) == list(MODES)
    for mode, batches in results.items():
        assert list(batches) == [str(size) for size in BATCH_SIZES], mode
        for size, timing in batches.items():
            assert timing["ttft_s"] > 0 and timing["decode_s"] > 0, (mode, size)
            assert timing["decode_tokens_per_s"] == pytest.approx(int(size) * decoded / timing["decode_s"])


def test_tiny_preset_measures_sft_and_dpo_steps_and_their_memory(tiny_results):
    for name in ("sft", "dpo"):
        step = tiny_results["training"][name]
        assert step["samples_per_s"] > 0 and step["step_s"] > 0, name
        assert step["peak_memory_bytes"] > 0, name


def test_tiny_preset_finds_images_encoded_once_per_generate(tiny_results):
    check = tiny_results["checks"]["images_encoded_once"]
    calls = len(MODES) * len(BATCH_SIZES) * (1 + PRESETS["tiny"].repeats)
    assert check == {"measured": [1], "target": check["target"], "passed": True, "generate_calls": calls}


def test_tiny_preset_reports_the_other_checks_with_numbers_or_reasons(tiny_results):
    checks = tiny_results["checks"]
    assert checks["load_peak_over_weights"]["measured"] > 0
    assert checks["load_peak_over_weights"]["weight_bytes"] > 0
    assert checks["batch32_over_batch1"]["measured"] > 0
    assert isinstance(checks["batch32_over_batch1"]["passed"], bool)
    for name in ("decode_fraction_of_bandwidth_ceiling", "ttft_over_flop_floor"):
        assert checks[name]["passed"] is None and checks[name]["reason"] == "needs a CUDA GPU"
    assert "gpu_ceilings" not in tiny_results


def test_tiny_preset_measures_every_decode_variant_against_float32_eager(tiny_results):
    section = tiny_results["decode_variants"]
    results = section["results"]
    assert section["reference"] == REFERENCE and list(results) == list(VARIANTS)
    for name, result in results.items():
        assert result["decode_tokens_per_s"] > 0 and result["ttft_s"] > 0, name
        assert len(result["ids"]) == section["new_tokens"] and result["agreement_holds"] is True, name
        assert ("compile_s" in result) == VARIANTS[name].compiled, name
    assert results[REFERENCE]["agreement"] == "identical"
    full = results[REFERENCE]["language_model_bytes"]
    assert results["bfloat16"]["language_model_bytes"] == full / 2
    assert full / 2 > results["int8"]["language_model_bytes"] > results["int4"]["language_model_bytes"]
    checks = tiny_results["checks"]
    int8_speed = checks["int8_decode_over_float32"]
    assert int8_speed["measured"] == pytest.approx(
        results["int8"]["decode_tokens_per_s"] / results[REFERENCE]["decode_tokens_per_s"]
    )
    assert isinstance(int8_speed["passed"], bool) and checks["greedy_ids_by_the_margin_rule"]["passed"] is True


def test_tiny_preset_judges_ttft_against_the_prefills_flop_floor_by_part(tiny_results):
    prefill = tiny_results["prefill"]
    for batch, row in prefill["batches"].items():
        parts = {part: count for part, count in row["flops"].items() if part != "total"}
        assert all(count > 0 for count in parts.values()) and sum(parts.values()) == row["flops"]["total"], batch
        assert row["floor_s"] == pytest.approx(row["flops"]["total"] / prefill["matmul_flops_per_s"])
        assert row["ttft_s"] == tiny_results["generation"]["results"]["sdpa"][batch]["ttft_s"]
    batch_8, batch_1 = prefill["batches"]["8"]["flops"], prefill["batches"]["1"]["flops"]
    assert batch_8["language_model"] == 8 * batch_1["language_model"]


def test_language_model_bytes_count_quantized_weights_by_their_stored_bytes(tiny_model_and_processor):
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    model = copy.deepcopy(tiny_model_and_processor[0]).to(torch.bfloat16)
    unquantized = language_model_bytes(model)
    quantize_(model.lm_head, Int8WeightOnlyConfig())
    weight = model.lm_head.weight
    # the head's bf16 weights (2 bytes each) become int8 (1 byte each), with a scale and a zero point per output row
    row_bytes = sum(tensor.numel() * tensor.element_size() for tensor in (weight.scale, weight.zero_point))
    assert weight.scale.numel() == weight.zero_point.numel() == weight.shape[0]
    assert language_model_bytes(model) == unquantized - 2 * weight.numel() + weight.numel() + row_bytes


def test_the_margin_rule_compares_rows_up_to_their_first_unclear_step():
    # margins 3, 3, 0.5, 3 at the four steps; the variant's logits differ by 0.5 everywhere
    reference_logits = torch.tensor([[[3.0, 0.0], [0.0, 3.0], [0.5, 0.0], [3.0, 0.0]]])
    reference_ids = reference_logits.argmax(-1)
    variant_logits = reference_logits + torch.tensor([0.0, 0.5])
    same = margin_rule(reference_ids, reference_logits, reference_ids, variant_logits)
    assert [(row.steps, row.compared, row.first_difference, row.holds) for row in same] == [(4, 2, None, True)]
    assert summary(same) == "identical"
    differs_where_unclear = torch.tensor([[0, 1, 1, 0]])
    assert margin_rule(reference_ids, reference_logits, differs_where_unclear, variant_logits)[0].holds
    assert summary(margin_rule(reference_ids, reference_logits, differs_where_unclear, variant_logits)) == (
        "margin rule holds (2/4 steps clear)"
    )
    differs_where_clear = torch.tensor([[0, 0, 0, 0]])
    rows = margin_rule(reference_ids, reference_logits, differs_where_clear, variant_logits)
    assert not rows[0].holds and summary(rows) == "margin rule BROKEN (2/4 steps clear)"
    # judged up to the end of sequence: the reference ends at step 2 (id 1), what follows is padding
    assert margin_rule(reference_ids, reference_logits, differs_where_unclear, variant_logits, 1)[0].steps == 2


@pytest.fixture(scope="module")
def gpu_results_on_cpu():
    """The GPU script's measurements on the tiny preset on the CPU (graph capture without code generation, small
    limits' measurements): its arithmetic and report, not its speed."""
    threads = torch.get_num_threads()
    try:
        return gpu.measure("tiny", torch.device("cpu"), (1, 2), 4, 1, "eager", copy_bytes=2**20, matmul_size=64)
    finally:
        torch.set_num_threads(threads)


def test_the_gpu_script_judges_decode_and_ttft_against_bandwidth_and_flops(
    gpu_results_on_cpu, tiny_model_and_processor
):
    model, processor = tiny_model_and_processor
    results = gpu_results_on_cpu
    assert [row["batch"] for row in results["rows"]] == [1, 2]
    text = model.config.text_config
    for row in results["rows"]:
        inputs = generation_inputs(processor, row["batch"], torch.device("cpu"))
        assert row["prefill_flops"] == prefill_flops_by_part(model.to(torch.bfloat16), inputs)
        assert row["flop_floor_s"] == pytest.approx(row["prefill_flops"]["total"] / results["matmul_flops_per_s"])
        # keys and values, every layer, bf16, the static cache's every position
        positions = row["prompt_tokens"] + results["meta"]["new_tokens"]
        cache = row["batch"] * positions * 2 * text.num_hidden_layers * text.hidden_size * 2
        assert row["step_bytes"] == results["decode_weight_bytes"] + cache
        ceiling = row["batch"] * results["copy_bandwidth_bytes_per_s"] / row["step_bytes"]
        assert row["ceiling_tokens_per_s"] == pytest.approx(ceiling)
        assert row["decode_tokens_per_s"] > 0 and row["ttft_s"] > 0
    model.to(torch.float32)


def test_the_gpu_scripts_report_has_its_fixed_format(gpu_results_on_cpu):
    lines = gpu.report(gpu_results_on_cpu).splitlines()
    assert lines[0].startswith("xGen-MM tiny preset, bf16, sdpa, static cache + torch.compile: ")
    assert "copy bandwidth" in lines[1] and "bf16 matmul" in lines[1] and "compile" in lines[1]
    assert lines[3] == "| " + " | ".join(gpu.COLUMNS) + " |"
    rows = [line.split("|")[1:-1] for line in lines[5:]]
    assert [int(row[0]) for row in rows] == [1, 2] and all(len(row) == len(gpu.COLUMNS) for row in rows)
    assert rows[0][-1].strip().endswith("%")


def test_the_gpu_script_refuses_to_run_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="measures a CUDA GPU, and none is available here"):
        gpu.main([])


def test_full_preset_refuses_to_run_on_a_cpu():
    with pytest.raises(SystemExit, match="the full preset needs a CUDA GPU"):
        run("full", torch.device("cpu"))


def test_decode_weight_bytes_count_the_language_model_and_head_but_not_the_input_embedding(tiny_model_and_processor):
    model, _ = tiny_model_and_processor
    text = model.config.text_config
    embedding_bytes = text.vocab_size * text.hidden_size * 4
    language_bytes = sum(weight.numel() * 4 for weight in model.model.language_model.parameters())
    head_bytes = sum(weight.numel() * 4 for weight in model.lm_head.parameters())
    assert decode_weight_bytes(model) == language_bytes - embedding_bytes + head_bytes


def small_ceilings(model, processor, decode_tokens_per_s: float = 100.0, ttft_s: float = 0.01) -> dict:
    inputs = generation_inputs(processor, 1, torch.device("cpu"))
    return ceilings(model, inputs, decode_tokens_per_s, ttft_s, repeats=1, copy_bytes=2**20, matmul_size=64)


def test_ceilings_compare_measurements_with_bandwidth_and_flops(tiny_model_and_processor):
    model, processor = tiny_model_and_processor
    inputs = generation_inputs(processor, 1, torch.device("cpu"))
    result = small_ceilings(model, processor)
    assert result["decode_fraction_of_ceiling"] == pytest.approx(100.0 / result["decode_ceiling_tokens_per_s"])
    assert result["ttft_over_floor"] == pytest.approx(0.01 / result["ttft_floor_s"])
    # The prefill multiplies every prompt token through every language-model matrix at least once.
    matrices = sum(m.weight.numel() for m in model.model.language_model.modules() if isinstance(m, torch.nn.Linear))
    assert result["prefill_flops"] > 2 * matrices * inputs["input_ids"].shape[1]


def test_with_ceilings_the_cuda_checks_are_judged_and_reported(tiny_results, tiny_model_and_processor):
    gpu = small_ceilings(*tiny_model_and_processor)
    gpu |= {"decode_fraction_of_ceiling": 0.6, "ttft_over_floor": 4.0, "batch32_decode_tokens_per_s": 1000.0}
    load = {"weight_bytes": 100 * 2**20, "peak_rss_increase_bytes": 101 * 2**20, "peak_cuda_bytes": 0}
    checks = checks_section(tiny_results["generation"], [1, 1], load, gpu)
    assert checks["decode_fraction_of_bandwidth_ceiling"]["passed"] is True
    assert checks["ttft_over_flop_floor"]["passed"] is False
    assert checks["load_peak_over_weights"]["passed"] is True
    text = report({**tiny_results, "checks": checks, "gpu_ceilings": gpu})
    assert "batch-1 decode ceiling tokens/s" in text and "| ttft_over_flop_floor" in text


@pytest.mark.slow
def test_compare_runs_two_checkouts_on_the_same_weights_and_checks_their_outputs(tmp_path):
    """The committed HEAD against the working tree (the same model code in CI's clean clone): every output agrees."""
    path = tmp_path / "compare.json"
    command = [sys.executable, "-m", "benchmarks.compare", "HEAD", "--preset", "tiny", "--rounds", "1"]
    command += ["--repeats", "1", "--json", str(path)]
    completed = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "training step, batch 4" in completed.stdout and "bandwidth ceiling" in completed.stdout
    assert "batch-1 decoding by variant" in completed.stdout and "against its FLOP floor" in completed.stdout
    result = json.loads(path.read_text())
    checks = result["checks"]
    assert {key for key, verdict in checks.items() if key.startswith(("ids_", "input_ids_"))} == {
        f"{kind}_{name}" for kind in ("ids", "input_ids") for name in ("float32_b1", "float32_b8", "bfloat16_b1")
    } | {f"ids_variant_{name}" for name in VARIANTS}
    assert all(verdict == "equal" for key, verdict in checks.items() if key.startswith(("ids_", "input_ids_")))
    assert checks["pixels_pil"] == checks["pixels_torchvision"] == "max |difference| 0 uint8 levels"
    assert checks["loss"] == "max |difference| 0.00e+00"
    for side in result["best"].values():
        assert side["train_step_s"] > 0 and side["images_per_s_pil"] > 0 and side["decode_weight_bytes_float32_b1"] > 0


def test_packing_benchmark_prints_tokens_per_second_and_no_padding_for_padding_free_batches(capsys):
    from benchmarks.packing import COLUMNS, main

    threads = torch.get_num_threads()
    try:
        results = main(["--stages", "sft", "--steps", "1", "--batch_size", "2", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    lines = capsys.readouterr().out.splitlines()
    header = lines.index("| " + " | ".join((*COLUMNS, "speed-up")) + " |")
    assert [line.split(" | ")[1] for line in lines[header + 2 : header + 4]] == ["padded", "padding-free"]
    padded, packed = results
    assert [padded["batching"], packed["batching"]] == ["padded", "padding-free"]
    assert packed["padding fraction"] == 0 and padded["padding fraction"] > 0
    assert packed["real tokens/step"] == padded["real tokens/step"] > 0
    assert packed["real tokens/s"] > 0 and padded["real tokens/s"] > 0
