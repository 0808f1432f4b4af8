# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""QLoRA (`--load_in_4bit --use_peft`): bitsandbytes quantizes the language model's linear layers only, LoRA adapters
train on top and nothing else changes, the example script runs end to end, and the adapter merged into the
full-precision base loads and gives the base + adapter logits."""

import json
import math

import bitsandbytes as bnb
import pytest
import torch
from bitsandbytes.functional import dequantize_4bit
from peft import PeftModel
from torch import nn

from modeling_xgenmm import XGenMMForConditionalGeneration
from modeling_xgenmm.train import XGenMMModelConfig, load_model_and_processor, lora_config, train_stage
from modeling_xgenmm.train.arguments import bf16_available
from modeling_xgenmm.train.collators import XGenMMDataCollator
from modeling_xgenmm.train.qlora import QUANTIZATION_SKIP_MODULES, quantization_config_from_args
from modeling_xgenmm.train.saving import merge_qlora_adapter
from paths import TINY_RANDOM
from training_helpers import LANGUAGE_MODEL_LINEAR_LAYERS, run_example, sft_rows, tiny_args, write_images, write_jsonl


QLORA_ARGS = XGenMMModelConfig(load_in_4bit=True, use_peft=True)


@pytest.fixture(scope="module")
def base_folder(tmp_path_factory):
    """The tiny model (random, seed 0) saved with weights and processor: what QLoRA quantizes and merges into."""
    folder = tmp_path_factory.mktemp("base")
    model, processor = load_model_and_processor(TINY_RANDOM, seed=0)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def load_4bit(path, seed: int = 0):
    return load_model_and_processor(path, seed=seed, quantization_config=quantization_config_from_args(QLORA_ARGS))


def quantized_layers(model: nn.Module) -> set[str]:
    """Names of the `Linear4bit` layers as in the bare model (a LoRA wrapper's `base_layer` by its own name)."""
    return {
        name.removeprefix("base_model.model.").removesuffix(".base_layer")
        for name, module in model.named_modules()
        if isinstance(module, bnb.nn.Linear4bit)
    }


def logits(model: nn.Module, batch: dict) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**{key: value for key, value in batch.items() if key != "labels"}).logits


# --- arguments ---------------------------------------------------------------------------------------------------


def test_quantization_config_quantizes_the_language_model_only_and_needs_peft():
    assert quantization_config_from_args(XGenMMModelConfig()) is None
    config = quantization_config_from_args(
        XGenMMModelConfig(load_in_4bit=True, use_peft=True, use_bnb_nested_quant=True)
    )
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant
    assert config.bnb_4bit_compute_dtype == (torch.bfloat16 if bf16_available() else torch.float32)
    assert (
        config.llm_int8_skip_modules
        == QUANTIZATION_SKIP_MODULES
        == ["model.vision_tower", "model.resampler", "lm_head"]
    )
    assert quantization_config_from_args(XGenMMModelConfig(load_in_8bit=True, use_peft=True)).llm_int8_skip_modules
    for flag in ("load_in_4bit", "load_in_8bit"):
        with pytest.raises(ValueError, match=rf"--{flag} needs --use_peft: quantized weights cannot be trained"):
            quantization_config_from_args(XGenMMModelConfig(**{flag: True}))


def test_example_script_refuses_load_in_4bit_without_use_peft(tmp_path):
    argv = ["--model_name_or_path", str(TINY_RANDOM), "--data", "unused.jsonl", "--output_dir", str(tmp_path)]
    with pytest.raises(ValueError, match=r"--load_in_4bit needs --use_peft"):
        run_example("train", ["--stage", "sft", *argv, "--load_in_4bit", "--report_to", "none"])


@pytest.mark.parametrize("example", ["dpo_vlfeedback", "safety_vlguard"])
def test_dpo_scripts_refuse_quantization_instead_of_ignoring_it(example, tmp_path):
    argv = ["--model_name_or_path", str(TINY_RANDOM), "--data", "unused.json", "--output_dir", str(tmp_path)]
    with pytest.raises(ValueError, match=r"DPO does not train on a quantized model: leave out --load_in_4bit"):
        run_example(example, [*argv, "--load_in_4bit", "--use_peft", "--report_to", "none"])


def test_the_trl_sft_script_trains_qlora_too(base_folder, tmp_path):
    write_images(tmp_path)
    data = write_jsonl(tmp_path / "data.jsonl", sft_rows([f"img/{index}.png" for index in range(4)], 4))
    trainer = run_example(
        "sft_trl",
        [
            *("--model_name_or_path", str(base_folder), "--data", str(data), "--output_dir", str(tmp_path / "out")),
            *("--load_in_4bit", "--use_peft", "--lora_r", "4", "--max_steps", "2", "--per_device_train_batch_size"),
            *("2", "--report_to", "none", "--disable_tqdm", "1"),
        ],
    )
    assert quantized_layers(trainer.model) == LANGUAGE_MODEL_LINEAR_LAYERS and trainer.state.global_step == 2
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()


# --- what is quantized -------------------------------------------------------------------------------------------


def test_only_the_language_model_linear_layers_are_4bit_and_the_rest_is_the_fp32_checkpoint(base_folder):
    model, _ = load_4bit(base_folder)
    reference = XGenMMForConditionalGeneration.from_pretrained(base_folder)
    assert quantized_layers(model) == LANGUAGE_MODEL_LINEAR_LAYERS
    full_precision = {name for name, m in model.named_modules() if type(m) is nn.Linear}
    assert "lm_head" in full_precision
    assert any(name.startswith("model.vision_tower.") for name in full_precision)
    assert any(name.startswith("model.resampler.") for name in full_precision)
    expected = dict(reference.named_parameters())
    for name, parameter in model.named_parameters():
        assert not parameter.requires_grad, name  # frozen: only adapters train
        if name.removesuffix(".weight") in LANGUAGE_MODEL_LINEAR_LAYERS:
            # NF4 of the checkpoint's weights: close to them, not random.
            weight = dequantize_4bit(parameter.data, parameter.quant_state).float()
            error = (weight - expected[name]).norm() / expected[name].norm()
            assert parameter.dtype == torch.uint8 and error < 0.15, (name, error)
        else:
            assert parameter.dtype == torch.float32 and torch.equal(parameter, expected[name]), name


def test_a_folder_without_weights_is_initialised_at_random_then_quantized(base_folder):
    from_config, _ = load_4bit(TINY_RANDOM, seed=0)
    from_weights, _ = load_4bit(base_folder)
    assert quantized_layers(from_config) == LANGUAGE_MODEL_LINEAR_LAYERS
    saved = from_weights.state_dict()
    assert all(torch.equal(tensor, saved[name]) for name, tensor in from_config.state_dict().items())


# --- training, the example script, merging -----------------------------------------------------------------------


def test_qlora_training_changes_only_the_adapters(base_folder, image_paths, tmp_path):
    model, processor = load_4bit(base_folder)
    trainer, _ = train_stage(
        model,
        processor,
        sft_rows(image_paths, 8),
        "sft",
        tiny_args(tmp_path, max_steps=3),
        peft_config=lora_config(model, r=4),
    )
    peft_model = trainer.model
    assert quantized_layers(peft_model) == LANGUAGE_MODEL_LINEAR_LAYERS
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses)
    before = {name: tensor.clone() for name, tensor in peft_model.state_dict().items()}
    trainer.args.max_steps = 5
    trainer.train()
    changed = {name for name, tensor in peft_model.state_dict().items() if not torch.equal(tensor, before[name])}
    assert changed and all(".lora_A." in name or ".lora_B." in name for name in changed)
    assert any(".lora_B." in name for name in changed)


def test_example_script_trains_qlora_and_the_merged_model_matches_base_plus_adapter(base_folder, tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", sft_rows([f"img/{index}.png" for index in range(4)], 8))
    images = [str(tmp_path / path) for path in write_images(tmp_path)]
    output_dir, merged_dir = tmp_path / "out", tmp_path / "merged"
    trainer = run_example(
        "train",
        [
            *("--stage", "sft", "--model_name_or_path", str(base_folder)),
            *("--data", str(data), "--output_dir", str(output_dir)),
            *("--load_in_4bit", "--use_peft", "--lora_r", "4", "--learning_rate", "1e-2"),
            *("--max_steps", "2", "--per_device_train_batch_size", "2", "--report_to", "none", "--disable_tqdm", "1"),
        ],
    )
    assert quantized_layers(trainer.model) == LANGUAGE_MODEL_LINEAR_LAYERS and trainer.state.global_step == 2
    saved = {path.name for path in output_dir.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= saved and "model.safetensors" not in saved
    assert json.loads((output_dir / "adapter_config.json").read_text())["r"] == 4

    merge_qlora_adapter(base_folder, output_dir, merged_dir)
    merged = XGenMMForConditionalGeneration.from_pretrained(merged_dir)
    assert not any(isinstance(m, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)) for m in merged.modules())
    assert merged.dtype == torch.float32 and (merged_dir / "processor_config.json").is_file()
    batch = XGenMMDataCollator(trainer.processing_class)(sft_rows(images, 2))
    base = XGenMMForConditionalGeneration.from_pretrained(base_folder)
    base_logits = logits(base, batch)
    adapted = logits(PeftModel.from_pretrained(base, output_dir), batch)
    torch.testing.assert_close(logits(merged, batch), adapted, rtol=1e-4, atol=1e-4)
    assert (adapted - base_logits).abs().max() > 1e-3  # the adapter trained: merging changed the model
