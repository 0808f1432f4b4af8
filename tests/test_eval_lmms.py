"""Evaluation through the real lmms-eval: its command line finds the `xgenmm` model through the package's entry point
(fresh processes), the toy-world task gives the package's own answers, likelihoods are the model's own, the base
model's few-shot prompt is the report's format, and results land in the model card as the Hub reads it."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from lmms_eval.api.instance import Instance
from transformers import AutoTokenizer

from modeling_helpers import tiny_config, tiny_model
from modeling_xgenmm.checkpoint.contents import build_processor
from modeling_xgenmm.cli import main as xgenmm
from modeling_xgenmm.eval.fewshot import Shot, draw_shots, few_shot_prompt
from modeling_xgenmm.eval.lmms import XGenMM
from modeling_xgenmm.eval.tasks import interleaved
from modeling_xgenmm.hub.card_results import add_card_results, lmms_eval_results
from modeling_xgenmm.hub.model_card import folder_card
from modeling_xgenmm.toy_world.evaluation import greedy_answers
from modeling_xgenmm.toy_world.recipe import ToyWorldSettings, held_out_rows, run_toy_world
from modeling_xgenmm.toy_world.settings import DEFAULT_CONFIG
from modeling_xgenmm.train.loading import load_model_and_processor
from paths import HUB_CONFIGS, TINY_RANDOM
from processing_helpers import synthetic_image


@pytest.fixture(scope="module")
def toy_world_folder(tmp_path_factory) -> Path:
    """An untrained toy-world model saved with its processor (its answers are arbitrary text: what matters is that
    both evaluations give the same text)."""
    folder = tmp_path_factory.mktemp("toy-world-model")
    model, processor = load_model_and_processor(DEFAULT_CONFIG, seed=3)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def single_thread_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def samples_of(output: Path) -> list[dict]:
    (path,) = output.rglob("*_samples_xgenmm_toy_world.jsonl")
    return sorted((json.loads(line) for line in path.read_text().splitlines()), key=lambda sample: sample["doc_id"])


def test_lmms_eval_cli_runs_the_toy_world_task_with_the_packages_answers(toy_world_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(os, "environ", single_thread_env())
    limit = 12
    code = xgenmm(
        [
            "eval",
            str(toy_world_folder),
            "--tasks",
            "xgenmm_toy_world",
            "--limit",
            str(limit),
            "--batch-size",
            "1",
            "--log-samples",
            "--output-path",
            str(tmp_path / "eval"),
        ]
    )
    assert code == 0
    samples = samples_of(tmp_path / "eval")
    assert [sample["doc_id"] for sample in samples] == list(range(limit))

    # The package's own evaluation of the same held-out rows (lmms-eval's task alternates the two kinds).
    rows = interleaved(held_out_rows(ToyWorldSettings(eval_rows=300)), 300)[:limit]
    assert {row["kind"] for row in rows} >= {"color", "same_shape"}
    model, processor = load_model_and_processor(toy_world_folder)
    ours = greedy_answers(model, processor, rows, batch_size=1)
    assert [sample["target"] for sample in samples] == [row["answer"] for row in rows]
    assert [sample["filtered_resps"].strip().rstrip(".").lower() for sample in samples] == ours

    # xgenmm eval wrote lmms-eval's result into the card, as the Hub parses model-index.
    (results_file,) = (tmp_path / "eval").rglob("*_results.json")
    value = json.loads(results_file.read_text())["results"]["xgenmm_toy_world"]["exact_match,none"]
    assert value == sum(answer == row["answer"] for answer, row in zip(ours, rows)) / limit
    card = ModelCard.load(toy_world_folder / "README.md")
    (result,) = [r for r in card.data.eval_results if r.task_name == "xgenmm_toy_world"]
    assert (result.metric_type, result.metric_value, result.source_name) == ("exact_match", value, "lmms-eval")


def test_eval_then_publish_dry_run_publishes_the_results(toy_world_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(os, "environ", single_thread_env())
    folder = shutil.copytree(toy_world_folder, tmp_path / "model", ignore=shutil.ignore_patterns("README.md"))
    eval_args = ["--tasks", "xgenmm_toy_world", "--limit", "2", "--output-path", str(tmp_path / "eval")]
    assert xgenmm(["eval", str(folder), *eval_args]) == 0
    (results_file,) = (tmp_path / "eval").rglob("*_results.json")
    value = json.loads(results_file.read_text())["results"]["xgenmm_toy_world"]["exact_match,none"]
    # A folder without a card gets the package's card (its architecture, its usage), not huggingface_hub's template.
    card = ModelCard.load(folder / "README.md")
    assert "Model Card for" not in card.text and "| vision tower | `timm_wrapper` backbone" in card.text

    assert xgenmm(["publish", str(folder), "me/toy", "--dry-run", "--output-dir", str(tmp_path / "hub")]) == 0
    published = ModelCard.load(tmp_path / "hub" / "README.md")
    results = [(r.task_name, r.metric_type, r.metric_value) for r in published.data.eval_results]
    assert results == [("xgenmm_toy_world", "exact_match", value)]
    assert "# toy" in published.text  # the card of the repo published to, with the folder's results


def test_eval_results_round_trip_into_a_card_and_replace_older_ones(tmp_path):
    tiny_config().save_pretrained(tmp_path)
    results = {
        "results": {"pope": {"alias": "pope", "pope_f1_score,none": 0.861, "pope_f1_score_stderr,none": "N/A"}},
        "configs": {"pope": {"dataset_path": "lmms-lab/POPE", "test_split": "test"}},
        "n-shot": {"pope": 0},
    }
    add_card_results(folder_card(tmp_path), lmms_eval_results(results), "tiny").save(tmp_path / "README.md")
    results["results"]["pope"]["pope_f1_score,none"] = 0.872
    add_card_results(folder_card(tmp_path), lmms_eval_results(results), "tiny").save(tmp_path / "README.md")
    card = ModelCard.load(tmp_path / "README.md")
    (result,) = card.data.eval_results
    assert (result.task_name, result.dataset_type, result.dataset_split) == ("pope", "lmms-lab/POPE", "test")
    assert (result.metric_type, result.metric_value) == ("pope_f1_score", 0.872)
    assert "model-index" in (tmp_path / "README.md").read_text()
    # A folder without a card got the package's card for its config, not huggingface_hub's generic template.
    assert card.data.pipeline_tag == "image-text-to-text" and "Model Card for" not in card.text


def test_released_cards_carry_the_reports_numbers_with_their_source():
    base = ModelCard.load(HUB_CONFIGS / "xgen-mm-phi3-mini-base-r-v1.5" / "README.md")
    scores = {(r.dataset_name, r.metric_config): r.metric_value for r in base.data.eval_results}
    # The facts sheet: "VQAv2 43.1/66.3/66.9" (0/4/8 shots), "TextCaps 69.5/89.9/94.0".
    assert [scores[("VQAv2", f"{k}-shot")] for k in (0, 4, 8)] == [43.1, 66.3, 66.9]
    assert [scores[("TextCaps", f"{k}-shot")] for k in (0, 4, 8)] == [69.5, 89.9, 94.0]
    dpo = ModelCard.load(HUB_CONFIGS / "xgen-mm-phi3-mini-instruct-dpo-r-v1.5" / "README.md")
    assert {r.dataset_name: r.metric_value for r in dpo.data.eval_results}["POPE"] == 86.8
    assert {r.source_url for r in base.data.eval_results + dpo.data.eval_results} == {
        "https://arxiv.org/abs/2408.08872"
    }


# --- loglikelihood ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def instruct_folder(tmp_path_factory) -> Path:
    from processing_helpers import tiny_processor

    folder = tmp_path_factory.mktemp("tiny-instruct")
    tiny_model(seed=5).save_pretrained(folder)
    tiny_processor().save_pretrained(folder)
    return folder


class FakeTask:
    """What lmms-eval's tasks hand the model: documents by split, and bound doc_to_* methods."""

    def __init__(self, docs):
        self.dataset = {"test": docs}

    def doc_to_visual(self, doc):
        return doc["images"]


def test_loglikelihood_is_the_models_own_summed_log_probability(instruct_folder):
    lmm = XGenMM(pretrained=str(instruct_folder), device="cpu")
    image = synthetic_image("RGB", 60, 30, seed=4)
    task = FakeTask([{"images": [image]}])
    lmm.task_dict = {"fake": task.dataset}
    requests = [
        Instance(
            "loglikelihood",
            ("Which colour?", continuation, task.doc_to_visual, 0, "fake", "test"),
            idx=0,
            metadata={"task": "fake", "doc_id": 0, "repeats": 1},
        )
        for continuation in (" red", " a blue square")
    ]
    results = lmm.loglikelihood(requests)

    processor = lmm.processor
    chat = [
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "Which colour?"}]}
    ]
    prompt = processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    prompt_length = processor(text=prompt, images=[image], return_tensors="pt")["input_ids"].shape[1]
    for (logprob, greedy), continuation in zip(results, (" red", " a blue square")):
        whole = processor(text=prompt + continuation, images=[image], return_tensors="pt")
        labels = whole["input_ids"].clone()
        labels[:, :prompt_length] = -100
        with torch.no_grad():
            output = lmm.model(**whole, labels=labels)  # loss: the mean over the continuation's tokens
        count = int((labels != -100).sum())
        assert count >= 1
        assert logprob == pytest.approx(-output.loss.item() * count, rel=1e-5, abs=1e-5)
        predicted = output.logits[0, prompt_length - 1 : -1].argmax(-1)
        assert greedy == bool((predicted == whole["input_ids"][0, prompt_length:]).all())


# --- the base model's few-shot protocol ------------------------------------------------------------------------------


def test_few_shot_prompt_is_the_reports_format_byte_for_byte():
    # The facts sheet: "`<image>` + 127 x `<image placeholder>` + text [+ answer + `<|endofchunk|>`] per shot".
    image = "<image>" + "<image placeholder>" * 127
    shots = [
        Shot(images=[None], text="Question: what is it? Short answer:", answer=" a cat"),
        Shot(images=[None, None], text="Question: how many? Short answer:", answer=" two"),
    ]
    expected = (
        image
        + "Question: what is it? Short answer:"
        + " a cat"
        + "<|endofchunk|>"
        + image
        + image
        + "Question: how many? Short answer:"
        + " two"
        + "<|endofchunk|>"
        + image
        + "Question: which colour? Short answer:"
    )
    assert few_shot_prompt(shots, 1, "Question: which colour? Short answer:", 128) == expected
    assert few_shot_prompt([], 1, "x", 128) == image + "x"


def test_shots_are_drawn_per_query_with_a_fixed_seed():
    first = draw_shots(50, 8, seed=1234 * 1_000_003 + 7)
    assert first == draw_shots(50, 8, seed=1234 * 1_000_003 + 7) and len(set(first)) == 8
    assert draw_shots(50, 8, seed=1234 * 1_000_003 + 8) != first
    assert 3 not in draw_shots(9, 8, seed=0, exclude=3)
    with pytest.raises(ValueError, match="8 shots were asked for but the training split has only 5 examples"):
        draw_shots(5, 8, seed=0)


@pytest.fixture(scope="module")
def base_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-base")
    config = tiny_config(anyres=False)
    tiny_model(config, seed=6).save_pretrained(folder)
    build_processor(config, AutoTokenizer.from_pretrained(TINY_RANDOM)).save_pretrained(folder)
    return folder


class ShotTask:
    """A task with a training split, as lmms-eval's ConfigurableTask exposes it to the model."""

    class config:
        task = "shots"
        training_split = "train"
        fewshot_split = None
        target_delimiter = " "

    def __init__(self, images):
        self.dataset = {
            "train": [{"q": f"Q{i}?", "a": f"A{i}", "images": [images[i]]} for i in range(6)],
            "test": [{"q": "Which?", "a": "x", "images": [images[6]]}],
        }

    def doc_to_visual(self, doc):
        return doc["images"]

    def doc_to_text(self, doc):
        return doc["q"]

    def doc_to_target(self, doc):
        return doc["a"]


def test_base_model_prompts_in_lmms_eval_are_the_few_shot_protocol(base_folder):
    lmm = XGenMM(pretrained=str(base_folder), device="cpu", num_shots=4, shots_seed=11)
    assert lmm.is_simple  # base models are evaluated in lmms-eval's plain mode
    images = [synthetic_image("RGB", 40 + i, 30, seed=i) for i in range(7)]
    task = ShotTask(images)
    lmm.task_dict = {"shots": task.dataset}
    (text,), (prompt_images,) = lmm._texts_and_images([("Which?", [images[6]], 0, task.doc_to_visual)])
    chosen = draw_shots(6, 4, 11 * 1_000_003 + 0)
    markers = "<image>" + "<image placeholder>" * (lmm.processor.image_seq_length - 1)
    expected = "".join(f"{markers}Q{i}? A{i}<|endofchunk|>" for i in chosen) + markers + "Which?"
    assert text == expected
    assert prompt_images == [images[i] for i in chosen] + [images[6]]
    request = Instance(
        "generate_until",
        ("Which?", {"max_new_tokens": 2}, task.doc_to_visual, 0, "shots", "test"),
        idx=0,
        metadata={"task": "shots", "doc_id": 0, "repeats": 1},
    )
    (result,) = lmm.generate_until([request])
    inputs = lmm.processor(text=[expected], images=[prompt_images], return_tensors="pt")
    with torch.no_grad():
        ids = lmm.model.generate(**inputs, max_new_tokens=2, do_sample=False)[0, inputs["input_ids"].shape[1] :]
    assert result.text == lmm.processor.decode(ids, skip_special_tokens=True)

    with pytest.raises(ValueError, match="instruct"):
        XGenMM(pretrained=str(TINY_RANDOM), num_shots=4)


@pytest.mark.slow
def test_lmms_eval_accuracy_of_a_trained_toy_world_model_equals_the_packages(tmp_path, monkeypatch):
    accuracy = run_toy_world(tmp_path / "toy", ToyWorldSettings(pretrain_steps=150, sft_steps=500, eval_rows=300))
    overall = sum(accuracy[kind] for kind in ("color", "shape", "count", "same_shape", "same_color", "more")) / 6
    monkeypatch.setattr(os, "environ", single_thread_env())
    code = xgenmm(
        [
            "eval",
            str(tmp_path / "toy" / "model"),
            "--tasks",
            "xgenmm_toy_world",
            "--batch-size",
            "32",
            "--output-path",
            str(tmp_path / "eval"),
        ]
    )
    assert code == 0
    (results_file,) = (tmp_path / "eval").rglob("*_results.json")
    value = json.loads(results_file.read_text())["results"]["xgenmm_toy_world"]["exact_match,none"]
    # 600 held-out questions: within one question of the package's own evaluation.
    assert abs(value - overall) <= 1 / 600 + 1e-9, (value, accuracy)
