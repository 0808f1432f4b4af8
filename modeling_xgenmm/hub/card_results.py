# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Evaluation results in model cards, as the Hub reads them (`model-index` in the card's metadata, through
`huggingface_hub.EvalResult`): the report's published numbers of the released variants, and lmms-eval results of a
model folder (`xgenmm eval`), merged into its README.md, which `xgenmm publish` carries into the card it publishes."""

from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard

from .variants import REPORT_SHOTS


REPORT_NAME = "xGen-MM (BLIP-3) report"
REPORT_URL = "https://arxiv.org/abs/2408.08872"
TASK_TYPE = "image-text-to-text"


@dataclass(frozen=True)
class Benchmark:
    """A benchmark of the report: the lmms-eval task that runs it, the dataset that task reads, and its metric."""

    task: str | None
    dataset: str
    metric: str


# The report's benchmarks and their lmms-eval (0.7.x) tasks; VLGuard has no lmms-eval task.
REPORT_BENCHMARKS = {
    "VQAv2": Benchmark("vqav2_val", "lmms-lab/VQAv2", "exact_match"),
    "TextVQA": Benchmark("textvqa_val", "lmms-lab/textvqa", "exact_match"),
    "OKVQA": Benchmark("ok_vqa_val2014", "lmms-lab/OK-VQA", "exact_match"),
    "COCO": Benchmark("coco2017_cap_val", "lmms-lab/COCO-Caption2017", "CIDEr"),
    "NoCaps": Benchmark("nocaps_val", "lmms-lab/NoCaps", "CIDEr"),
    "TextCaps": Benchmark("textcaps_val", "lmms-lab/TextCaps", "CIDEr"),
    "VLGuard (lower is better)": Benchmark(None, "ys-zong/VLGuard", "attack success rate"),
    "HallusionBench": Benchmark("hallusion_bench_image", "lmms-lab/HallusionBench", "aAcc"),
    "POPE": Benchmark("pope", "lmms-lab/POPE", "pope_f1_score"),
    "MMBench-dev": Benchmark("mmbench_en_dev", "lmms-lab/MMBench", "gpt_eval_score"),
    "SEED-IMG": Benchmark("seedbench", "lmms-lab/SEED-Bench", "seed_image"),
    "MMStar": Benchmark("mmstar", "Lin-Chen/MMStar", "average"),
    "MME (norm)": Benchmark("mme", "lmms-lab/MME", "normalized score"),
}


def report_results(few_shot: dict[str, tuple[float, ...]], scores: tuple[tuple[str, str], ...]) -> list[EvalResult]:
    """The report's published numbers as structured results with their source: few-shot scores per number of shots
    (`REPORT_SHOTS`), and single scores."""
    results = []
    for name, values in few_shot.items():
        benchmark = REPORT_BENCHMARKS[name]
        for shots, value in zip(REPORT_SHOTS, values):
            results.append(_published(name, benchmark, float(value), f"{shots}-shot"))
    for name, value in scores:
        results.append(_published(name, REPORT_BENCHMARKS[name], float(value), None))
    return results


def _published(name: str, benchmark: Benchmark, value: float, shots: str | None) -> EvalResult:
    return EvalResult(
        task_type=TASK_TYPE,
        task_name=benchmark.task or name,
        dataset_type=benchmark.dataset,
        dataset_name=name,
        metric_type=benchmark.metric,
        metric_value=value,
        metric_name=f"{benchmark.metric} ({shots})" if shots else benchmark.metric,
        metric_config=shots,
        source_name=REPORT_NAME,
        source_url=REPORT_URL,
    )


LMMS_EVAL_URL = "https://github.com/EvolvingLMMs-Lab/lmms-eval"


def lmms_eval_results(results: dict, num_shots: int | None = None, source_name: str = "lmms-eval") -> list[EvalResult]:
    """Structured results of an lmms-eval results JSON (`*_results.json`): one per task and metric (standard errors
    and aliases left out), with the task's dataset and number of shots (`num_shots` when the shots were the model's
    own, the base protocol's `num_shots` model argument, which lmms-eval's `n-shot` does not see)."""
    out = []
    for task, metrics in results["results"].items():
        config = results.get("configs", {}).get(task, {})
        shots = num_shots if num_shots is not None else results.get("n-shot", {}).get(task)
        for key, value in metrics.items():
            metric, _, _ = key.partition(",")
            if metric == "alias" or "_stderr" in metric or not isinstance(value, (int, float)):
                continue
            out.append(
                EvalResult(
                    task_type=TASK_TYPE,
                    task_name=task,
                    dataset_type=config.get("dataset_path") or task,
                    dataset_name=task,
                    dataset_split=config.get("test_split"),
                    metric_type=metric,
                    metric_value=float(value),
                    metric_config=f"{shots}-shot" if shots else None,
                    source_name=source_name,
                    source_url=LMMS_EVAL_URL,
                )
            )
    return out


def add_card_results(card: ModelCard, results: list[EvalResult], model_name: str) -> ModelCard:
    """`card` with `results` merged into its model-index (a result of the same task, dataset, metric and shots
    replaces the older one); `model_name` names the model in the model-index when the card names none."""
    kept = list(card.data.eval_results or [])
    for result in results:
        kept = [old for old in kept if _key(old) != _key(result)] + [result]
    card.data.eval_results = kept or None
    if kept:
        card.data.model_name = card.data.model_name or model_name
    return card


def card_results(path: str | Path) -> list[EvalResult]:
    """The eval results in the model-index of the card at `path` (none when there is no card)."""
    path = Path(path)
    return list(ModelCard.load(path).data.eval_results or []) if path.is_file() else []


def _key(result: EvalResult) -> tuple:
    return (result.task_name, result.dataset_type, result.metric_type, result.metric_config)


__all__ = [
    "REPORT_BENCHMARKS",
    "Benchmark",
    "add_card_results",
    "card_results",
    "lmms_eval_results",
    "report_results",
]
