"""Training policy and stages on `transformers.Trainer`: what trains (vision tower frozen, LoRA on the language model
only), precision and checkpointing policy, checkpoint/resume with an identical loss curve, checkpoints that load
without this package, bad-input errors, and the example scripts."""

import json
import logging
import math
import sys
from pathlib import Path

import pytest
import torch
from peft import get_peft_model
from peft.tuners.lora import LoraLayer

from isolation import run_isolated
from library_versions import activation_checkpointing_on
from modeling_xgenmm import XGenMMForConditionalGeneration
from modeling_xgenmm.train import (
    XGenMMTrainingArguments,
    build_trainer,
    load_model_and_processor,
    load_rows,
    lora_config,
    train_stage,
)
from modeling_xgenmm.train.arguments import bf16_available
from modeling_xgenmm.train.collators import ASSISTANT_MASKS_WITH_IMAGES, BadSampleError, XGenMMDataCollator
from paths import HUB_CONFIGS, REPO_ROOT, TINY_RANDOM
from training_helpers import (
    LANGUAGE_MODEL_LINEAR_LAYERS,
    LossRecorder,
    StopAt,
    multi_image_rows,
    noisy_lines,
    pretraining_rows,
    run_example,
    run_fresh,
    sft_rows,
    tiny_args,
    weights_sha256,
    write_images,
    write_jsonl,
)


@pytest.fixture
def tiny():
    return load_model_and_processor(TINY_RANDOM, seed=0)


def parameters(model) -> dict[str, torch.Tensor]:
    return {name: parameter.detach().clone() for name, parameter in model.named_parameters()}


# --- what trains ------------------------------------------------------------------------------------------------


def test_vision_tower_is_frozen_and_everything_else_trains(tiny, image_paths, tmp_path):
    model, processor = tiny
    before = parameters(model)
    train_stage(model, processor, sft_rows(image_paths, 8), "sft", tiny_args(tmp_path))
    vision = {name for name in before if name.startswith("model.vision_tower.")}
    assert vision and all(not p.requires_grad for n, p in model.named_parameters() if n in vision)
    changed = {name for name, parameter in model.named_parameters() if not torch.equal(parameter, before[name])}
    assert changed == set(before) - vision
    assert any(name.startswith("model.resampler.") for name in changed) and "lm_head.weight" in changed


@pytest.mark.parametrize("freeze", [True, False], ids=["frozen", "trained"])
def test_batch_norm_statistics_of_the_vision_tower_change_only_when_it_trains(freeze, image_paths, tmp_path):
    # The toy world's ResNet tower has batch norm: frozen, it must run in eval mode (fixed statistics) under the
    # Trainer's model.train(); trained (pretraining from scratch), its statistics follow the data.
    model, processor = load_model_and_processor(HUB_CONFIGS / "toy-world", seed=0)
    norms = {name: m for name, m in model.model.vision_tower.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    before = {name: norm.running_mean.clone() for name, norm in norms.items()}
    train_stage(model, processor, sft_rows(image_paths, 8), "sft", tiny_args(tmp_path), freeze_vision=freeze)
    changed = {name for name, norm in norms.items() if not torch.equal(norm.running_mean, before[name])}
    assert norms and changed == (set() if freeze else set(norms))
    model.train()
    assert model.training and model.model.resampler.training and model.model.language_model.training
    assert model.model.vision_tower.training is not freeze
    assert all(norm.training is not freeze for norm in norms.values())


def test_a_tower_unfrozen_after_freezing_trains_in_training_mode(tiny):
    model, _ = tiny
    model.model.vision_tower.requires_grad_(False)
    model.train()
    assert not model.model.vision_tower.training
    model.model.vision_tower.requires_grad_(True)
    model.train()
    assert model.model.vision_tower.training
    model.eval()
    assert not any(module.training for module in model.modules())


def test_lora_adapts_every_language_model_linear_layer_and_nothing_else(tiny):
    model, _ = tiny
    peft_model = get_peft_model(model, lora_config(model))
    adapted = {
        name.removeprefix("base_model.model.")
        for name, module in peft_model.named_modules()
        if isinstance(module, LoraLayer)
    }
    assert adapted == LANGUAGE_MODEL_LINEAR_LAYERS
    trainable = {name for name, parameter in peft_model.named_parameters() if parameter.requires_grad}
    assert trainable and all(".lora_A." in name or ".lora_B." in name for name in trainable)


def test_lora_modules_to_save_trains_the_resampler_next_to_the_adapters(tiny):
    model, _ = tiny
    peft_model = get_peft_model(model, lora_config(model, modules_to_save=["resampler"]))
    trainable = {name for name, parameter in peft_model.named_parameters() if parameter.requires_grad}
    assert any(".resampler.modules_to_save." in name for name in trainable)
    assert not any("vision_tower" in name or "lm_head" in name for name in trainable)


def test_lora_training_changes_only_the_adapters(tiny, image_paths, tmp_path):
    model, processor = tiny
    trainer, _ = train_stage(
        model, processor, sft_rows(image_paths, 8), "sft", tiny_args(tmp_path), peft_config=lora_config(model)
    )
    peft_model = trainer.model
    before = {name: tensor.clone() for name, tensor in peft_model.state_dict().items()}
    trainer.args.max_steps = 4
    trainer.train()
    changed = {name for name, tensor in peft_model.state_dict().items() if not torch.equal(tensor, before[name])}
    assert changed and all(".lora_A." in name or ".lora_B." in name for name in changed)
    assert any(".lora_B." in name for name in changed)


# --- precision and checkpointing policy ---------------------------------------------------------------------------


def test_bf16_only_where_cuda_has_it(monkeypatch):
    assert not torch.cuda.is_available() and not bf16_available()
    arguments = XGenMMTrainingArguments(output_dir="unused", report_to="none")
    assert arguments.bf16 is False and arguments.use_cpu is True
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert bf16_available()
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    assert not bf16_available()


@pytest.mark.core
def test_activation_checkpointing_is_on_by_default_and_does_not_change_the_result(image_paths, tmp_path):
    """Also one training step on every transformers of the range (the older Trainers read `gradient_checkpointing`)."""
    runs = {}
    for checkpointing in (True, False):
        model, processor = load_model_and_processor(TINY_RANDOM, seed=0)
        recorder = LossRecorder()
        arguments = tiny_args(tmp_path / str(checkpointing), max_steps=3, activation_checkpointing=checkpointing)
        rows = pretraining_rows(image_paths, 12)
        trainer = build_trainer(model, processor, rows, "pretrain", arguments, callbacks=[recorder])
        trainer.train()
        assert activation_checkpointing_on(model) is checkpointing
        runs[checkpointing] = recorder.losses, parameters(model)
    assert XGenMMTrainingArguments(output_dir="unused", report_to="none").activation_checkpointing is True
    assert runs[True][0].keys() == {1, 2, 3}
    for step, loss in runs[True][0].items():
        assert loss == pytest.approx(runs[False][0][step], rel=1e-6)
    for name, value in runs[True][1].items():
        torch.testing.assert_close(value, runs[False][1][name], rtol=1e-5, atol=1e-6)


# --- checkpoint and resume ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resume_runs(image_paths, tmp_path_factory):
    """Three runs of 6 steps over 16 rows (4 steps per epoch, so the run crosses an epoch boundary): uninterrupted;
    stopped after the checkpoint of step 3; resumed from that checkpoint in a new trainer and model."""
    torch.set_num_threads(1)
    rows = sft_rows(image_paths, 16)
    folder = tmp_path_factory.mktemp("resume")
    runs = {}
    for name, stop, resume in (("full", None, None), ("stopped", 3, None), ("resumed", None, "checkpoint-3")):
        model, processor = load_model_and_processor(TINY_RANDOM, seed=0)
        output_dir = folder / ("full" if name == "full" else "interrupted")
        arguments = tiny_args(output_dir, max_steps=6, save_strategy="steps", save_steps=3)
        recorder = LossRecorder()
        callbacks = [recorder] + ([StopAt(stop)] if stop else [])
        trainer, _ = train_stage(
            model,
            processor,
            rows,
            "sft",
            arguments,
            callbacks=callbacks,
            resume_from_checkpoint=str(output_dir / resume) if resume else None,
        )
        runs[name] = {"losses": recorder.losses, "sha256": weights_sha256(model), "trainer": trainer}
    runs["checkpoint"] = folder / "interrupted" / "checkpoint-3"
    return runs


def test_resumed_run_continues_with_the_identical_loss_curve_and_weights(resume_runs):
    full, stopped, resumed = resume_runs["full"], resume_runs["stopped"], resume_runs["resumed"]
    assert list(full["losses"]) == [1, 2, 3, 4, 5, 6]
    assert list(stopped["losses"]) == [1, 2, 3] and list(resumed["losses"]) == [4, 5, 6]
    assert {**stopped["losses"], **resumed["losses"]} == full["losses"]  # exact float equality, step by step
    assert resumed["sha256"] == full["sha256"] != stopped["sha256"]


def test_checkpoint_loads_with_remote_code_in_a_process_without_this_package(resume_runs, image_paths, tmp_path):
    checkpoint = resume_runs["checkpoint"]
    assert {"model.safetensors", "modeling_xgenmm.py", "processing_xgenmm.py", "processor_config.json"} <= {
        path.name for path in checkpoint.iterdir()
    }
    model = XGenMMForConditionalGeneration.from_pretrained(checkpoint)
    processor = resume_runs["full"]["trainer"].processing_class
    batch = XGenMMDataCollator(processor)(sft_rows(image_paths, 2))
    with torch.no_grad():
        expected_loss = model(**batch).loss
    torch.save(dict(batch), tmp_path / "batch.pt")
    conversation = [
        {
            "role": "user",
            "content": [{"type": "image", "path": image_paths[1]}, {"type": "text", "text": "What color?"}],
        },
        {"role": "assistant", "content": "It is green."},
    ]
    result = run_isolated(
        f"""
        import json, torch
        from transformers import AutoModelForImageTextToText, AutoProcessor
        model = AutoModelForImageTextToText.from_pretrained({str(checkpoint)!r}, trust_remote_code=True)
        processor = AutoProcessor.from_pretrained({str(checkpoint)!r}, trust_remote_code=True)
        ids = processor.apply_chat_template({conversation!r}, tokenize=True, return_dict=True)["input_ids"][0]
        with torch.no_grad():
            loss = model(**torch.load("batch.pt")).loss.item()
        print(json.dumps({{"class": type(model).__module__, "loss": loss, "ids": list(ids)}}))
        """,
        cwd=tmp_path,
    )
    assert result["class"].startswith("transformers_modules.")
    assert result["loss"] == pytest.approx(expected_loss.item(), rel=1e-5)
    assert result["ids"] == batch["input_ids"][1][batch["attention_mask"][1].bool()].tolist()


# --- stages and bad input -----------------------------------------------------------------------------------------


def test_each_stage_trains_on_its_rows(image_paths, tmp_path):
    for stage, rows in (
        ("pretrain", pretraining_rows(image_paths)),
        ("sft", sft_rows(image_paths, 8)),
        ("interleaved_sft", multi_image_rows(image_paths)),
    ):
        model, processor = load_model_and_processor(TINY_RANDOM, seed=0)
        recorder = LossRecorder()
        train_stage(model, processor, rows, stage, tiny_args(tmp_path / stage, max_steps=4), callbacks=[recorder])
        losses = list(recorder.losses.values())
        assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses))), stage
        assert losses[-1] < losses[0], (stage, losses)


@pytest.mark.core
@pytest.mark.skipif(ASSISTANT_MASKS_WITH_IMAGES, reason="transformers >= 5.18 trains on conversations with images")
def test_below_5_18_conversations_with_images_are_refused_naming_the_version(tiny, image_paths, tmp_path):
    model, processor = tiny
    with pytest.raises(RuntimeError, match=r"assistant masks, which follow the image tokens from transformers 5\.18"):
        train_stage(model, processor, sft_rows(image_paths, 4), "sft", tiny_args(tmp_path, max_steps=1))


def test_a_stage_refuses_rows_of_another_stage(tiny, image_paths, tmp_path):
    model, processor = tiny
    with pytest.raises(BadSampleError, match=r"a document row, but this collator takes conversation rows"):
        train_stage(model, processor, pretraining_rows(image_paths), "sft", tiny_args(tmp_path))


BAD_ROWS = [{"id": "bad", "messages": []}, {"id": "worse", "image": "no.png", "caption": "c"}]


def test_bad_rows_are_found_before_training_starts(tiny, image_paths, tmp_path):
    model, processor = tiny
    rows = sft_rows(image_paths, 6) + BAD_ROWS
    expected = (
        r"2 of 8 training rows are bad, found before training: row 6 \(id 'bad'\): the conversation is empty; "
        r"row 7 \(id 'worse'\): a caption row, but this collator takes conversation rows\. Fix them, or pass "
        r"on_bad_sample='skip'"
    )
    with pytest.raises(BadSampleError, match=expected):
        build_trainer(model, processor, rows, "sft", tiny_args(tmp_path))


def test_skipped_rows_are_left_out_before_training_and_counted(tiny, image_paths, tmp_path, caplog):
    model, processor = tiny
    rows = sft_rows(image_paths, 6) + BAD_ROWS
    arguments = tiny_args(tmp_path, max_steps=2, per_device_train_batch_size=8, on_bad_sample="skip")
    with caplog.at_level(logging.WARNING, logger="modeling_xgenmm.train.validation"):
        trainer, metrics = train_stage(model, processor, rows, "sft", arguments)
    assert "skipping 2 of 8 training rows found bad before training" in caplog.text
    assert len(trainer.train_dataset) == 6 and metrics["skipped_rows"] == 0 and metrics["empty_batches"] == 0


def test_rows_that_turn_out_bad_while_training_are_skipped_and_the_run_goes_on(tiny, image_paths, tmp_path):
    # A PNG whose header reads but whose pixel data is cut: only decoding finds it, during training.
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(Path(image_paths[0]).read_bytes()[:120])
    model, processor = tiny
    rows = sft_rows(image_paths, 4) + sft_rows([str(truncated)], 4)
    arguments = tiny_args(tmp_path, max_steps=2, per_device_train_batch_size=4, on_bad_sample="skip")
    arguments.data_seed, arguments.seed = 0, 0
    trainer = build_trainer(model, processor, rows, "sft", arguments)
    trainer.get_train_dataloader = lambda: torch.utils.data.DataLoader(
        rows,
        batch_size=4,
        collate_fn=trainer.data_collator,  # in order: the bad rows form the second batch
    )
    trainer.train()
    assert trainer.state.global_step == 2
    assert trainer.data_collator.num_skipped == 4 and trainer.data_collator.num_empty_batches == 1
    assert all(math.isfinite(entry["loss"]) for entry in trainer.state.log_history if "loss" in entry)


def test_build_trainer_checks_its_arguments(tiny, image_paths, tmp_path):
    model, processor = tiny
    rows = sft_rows(image_paths, 2)
    with pytest.raises(ValueError, match=r"stage is one of \['interleaved_sft', 'pretrain', 'sft'\], got 'dpo'"):
        build_trainer(model, processor, rows, "dpo", tiny_args(tmp_path))
    with pytest.raises(ValueError, match=r"remove_unused_columns=True would strip the rows' keys"):
        build_trainer(model, processor, rows, "sft", tiny_args(tmp_path, remove_unused_columns=True))
    with pytest.raises(ValueError, match=r"no training rows for the 'sft' stage"):
        build_trainer(model, processor, [], "sft", tiny_args(tmp_path))


def test_random_init_is_seeded_and_a_saved_folder_loads_its_weights(tmp_path):
    first, processor = load_model_and_processor(TINY_RANDOM, seed=3)
    assert weights_sha256(load_model_and_processor(TINY_RANDOM, seed=3)[0]) == weights_sha256(first)
    assert weights_sha256(load_model_and_processor(TINY_RANDOM, seed=4)[0]) != weights_sha256(first)
    first.save_pretrained(tmp_path / "saved")
    processor.save_pretrained(tmp_path / "saved")
    loaded, _ = load_model_and_processor(tmp_path / "saved", seed=5)
    assert weights_sha256(loaded) == weights_sha256(first) and loaded.dtype == torch.float32


def test_load_rows_reads_json_and_jsonl_and_resolves_image_paths(tmp_path):
    write_images(tmp_path)
    rows = sft_rows(["img/0.png", "img/1.png"], 2)
    write_jsonl(tmp_path / "rows.jsonl", rows)
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    for name in ("rows.jsonl", "rows.json"):
        loaded = load_rows(tmp_path / name)
        assert loaded[0]["image"] == str(tmp_path / "img/0.png")
        assert loaded[1]["images"] == [str(tmp_path / "img/1.png")]
        assert loaded[1]["messages"] == rows[1]["messages"]
    (tmp_path / "broken.jsonl").write_text(json.dumps(rows[0]) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"broken.jsonl, line 2: not valid JSON"):
        load_rows(tmp_path / "broken.jsonl")
    with pytest.raises(FileNotFoundError, match=r"dataset file not found: .*missing.json"):
        load_rows(tmp_path / "missing.json")
    (tmp_path / "object.json").write_text("{}")
    with pytest.raises(ValueError, match=r"object.json: a JSON dataset is a list of rows, got a dict"):
        load_rows(tmp_path / "object.json")


# --- example scripts ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "example, rows",
    [
        pytest.param(["train", "--stage", "pretrain"], pretraining_rows, marks=pytest.mark.core, id="pretrain"),
        pytest.param(["train", "--stage", "sft"], sft_rows, id="sft"),
        pytest.param(["train", "--stage", "interleaved_sft"], multi_image_rows, id="interleaved_sft"),
        pytest.param(["sft_trl"], sft_rows, id="sft_trl"),
    ],
)
def test_example_script_trains_and_saves_a_hub_folder(example, rows, tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", rows([f"img/{index}.png" for index in range(4)], 8))
    write_images(tmp_path)
    output_dir = tmp_path / "out"
    common = ["--max_steps", "2", "--per_device_train_batch_size", "2", "--report_to", "none", "--disable_tqdm", "1"]
    script, *stage = example
    paths = ["--model_name_or_path", str(TINY_RANDOM), "--data", str(data), "--output_dir", str(output_dir)]
    trainer = run_example(script, [*stage, *paths, *common])
    saved = {path.name for path in output_dir.iterdir()}
    assert {"model.safetensors", "config.json", "modeling_xgenmm.py", "processor_config.json"} <= saved
    assert trainer.state.global_step == 2 and "train_loss" in trainer.state.log_history[-1]


def test_the_sample_sft_data_trains_and_logs_a_loss_curve(tmp_path):
    # The README's training command on the rows shipped in examples/data (their images beside them).
    data = REPO_ROOT / "examples" / "data" / "sft.jsonl"
    argv = ["--stage", "sft", "--model_name_or_path", str(TINY_RANDOM), "--data", str(data),
            "--output_dir", str(tmp_path / "out"), "--max_steps", "20", "--per_device_train_batch_size", "2",
            "--report_to", "none", "--disable_tqdm", "true"]  # fmt: skip
    trainer = run_example("train", argv)
    assert len(load_rows(data)) == 10 and trainer.data_collator.num_skipped == 0  # every row checked, none bad
    # A short run logs its loss: every 10 steps by default (TrainingArguments' 500 showed nothing here).
    assert [entry["step"] for entry in trainer.state.log_history if "loss" in entry] == [10, 20]


def test_a_training_example_prints_no_line_that_reads_as_an_error(tmp_path):
    data = REPO_ROOT / "examples" / "data" / "sft.jsonl"
    completed = run_fresh(
        [sys.executable, REPO_ROOT / "examples" / "train.py", "--stage", "sft", "--model_name_or_path", TINY_RANDOM,
         "--data", data, "--output_dir", tmp_path / "out", "--max_steps", "2", "--per_device_train_batch_size", "2",
         "--use_peft", "--lora_r", "4", "--report_to", "none"],
        cwd=tmp_path,
    )  # fmt: skip
    assert noisy_lines(completed.stdout + completed.stderr) == []


def test_example_script_with_lora_saves_an_adapter(tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", sft_rows([f"img/{index}.png" for index in range(4)], 4))
    write_images(tmp_path)
    run_example(
        "train",
        [
            "--stage",
            "sft",
            "--model_name_or_path",
            str(TINY_RANDOM),
            "--data",
            str(data),
            "--output_dir",
            str(tmp_path / "out"),
            "--use_peft",
            "--lora_r",
            "4",
            "--max_steps",
            "1",
            "--report_to",
            "none",
            "--disable_tqdm",
            "true",
        ],
    )
    adapter = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and adapter["target_modules"].startswith(r"model\.language_model\.")
