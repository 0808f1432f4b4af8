"""Original Salesforce checkpoints: every case recorded from the original code is reproduced, through the converter
and through direct loading; the key mapping of the full-size release; saving after a direct load; clear errors."""

import json
import re
import shutil

import PIL.Image
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoImageProcessor

from modeling_xgenmm import XGenMMConfig, XGenMMForConditionalGeneration, XGenMMModel
from modeling_xgenmm.checkpoint import convert as convert_module
from modeling_xgenmm.checkpoint.convert import HUB_ALLOW_PATTERNS, convert_original_checkpoint
from modeling_xgenmm.checkpoint.folders import ModelFolderError
from modeling_xgenmm.checkpoint.key_map import OriginalCheckpointError, plan_original_weights
from original_fixtures import (
    GREEDY_RUNS,
    assert_forward_matches_recording,
    assert_layout_matches_recording,
    build_inputs,
    case_images,
    generate_like_original,
    recorded_case,
    recorded_case_names,
)
from paths import original_fixtures_dir
from xgenmm_processing import XGenMMImageProcessor


pytestmark = pytest.mark.core


VARIANTS = ("base", "instruct")
LOAD_PATHS = ("converted", "direct")


@pytest.fixture(scope="module")
def fixtures():
    return original_fixtures_dir()


@pytest.fixture(scope="module")
def converted(fixtures, tmp_path_factory):
    """Each fixture checkpoint converted once (float32, small shards so that the index is exercised)."""
    return {
        variant: convert_original_checkpoint(
            fixtures / "checkpoints" / variant,
            tmp_path_factory.mktemp("converted") / variant,
            dtype=torch.float32,
            max_shard_size="1MB",
        )
        for variant in VARIANTS
    }


@pytest.fixture(scope="module")
def load_model(fixtures, converted):
    """`load_model(variant, path)`: the model loaded from the converted folder or directly from the original one."""
    models = {}

    def load(variant: str, path: str) -> XGenMMForConditionalGeneration:
        if (variant, path) not in models:
            folder = converted[variant] if path == "converted" else fixtures / "checkpoints" / variant
            models[variant, path] = XGenMMForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
        return models[variant, path]

    return load


@pytest.fixture(scope="module")
def image_features():
    """Image features per (case, load path), shared by the forward and the generation test of a case: encoding the
    views dominates the run time, and `generate` takes them precomputed (`mm_encoder_outputs`)."""
    return {}


def case_model_and_images(fixtures, load_model, image_features, case_name, path):
    case = recorded_case(fixtures, case_name)
    model = load_model(case.variant, path)
    if (case_name, path) not in image_features:
        images = case_images(fixtures, case)
        with torch.no_grad():
            image_features[case_name, path] = (
                {"mm_encoder_outputs": {"image": model.get_image_features(**images)}} if images else {}
            )
    return case, model, image_features[case_name, path]


@pytest.mark.parametrize("path", LOAD_PATHS)
@pytest.mark.parametrize("case_name", recorded_case_names())
def test_forward_reproduces_recorded_logits_and_loss(fixtures, load_model, image_features, case_name, path):
    case, model, features = case_model_and_images(fixtures, load_model, image_features, case_name, path)
    inputs = build_inputs(case, "", model.config.image_token_id)
    assert_layout_matches_recording(inputs, case, "", model.config.image_token_id)
    labels = case.tensors["fwd_expanded_labels"].long()
    with torch.no_grad():
        output = model(**inputs, labels=labels, **features)
    assert_forward_matches_recording(output.logits, output.loss, case)


@pytest.mark.parametrize("path", LOAD_PATHS)
@pytest.mark.parametrize("case_name", recorded_case_names())
def test_greedy_generation_reproduces_recorded_ids(fixtures, load_model, image_features, case_name, path):
    case, model, features = case_model_and_images(fixtures, load_model, image_features, case_name, path)
    inputs = build_inputs(case, "gen_", model.config.image_token_id)
    assert_layout_matches_recording(inputs, case, "gen_", model.config.image_token_id)
    compared = 0
    for recorded_name, kwargs_name in GREEDY_RUNS.items():
        if recorded_name in case.tensors:
            generated = generate_like_original(model, inputs, case.info[kwargs_name], **features)
            assert generated.tolist() == case.tensors[recorded_name].tolist(), recorded_name
            compared += 1
    assert compared == sum(name in case.info for name in GREEDY_RUNS.values())


@pytest.mark.parametrize("case_name", recorded_case_names(with_images=True))
def test_the_default_image_processor_keeps_the_recorded_greedy_ids(fixtures, converted, load_model, case_name):
    """From image files: the pixels of a converted folder's default image processor (torchvision backend) instead of
    the released processor's. Greedy ids may change only at a recorded near-tie that the pixels' own logit change
    can flip (the README gives the measured changes)."""
    case = recorded_case(fixtures, case_name)
    model = load_model(case.variant, "converted")
    index = json.loads((fixtures / "image_processing" / "index.json").read_text())["images"]
    images = [PIL.Image.open(fixtures / index[key]["file"]) for key in case.image_keys]
    processed = AutoImageProcessor.from_pretrained(converted[case.variant])(images, return_tensors="pt")
    assert type(AutoImageProcessor.from_pretrained(converted[case.variant])) is XGenMMImageProcessor
    recorded = case_images(fixtures, case)
    assert torch.equal(processed["image_sizes"], recorded["image_sizes"])
    inputs = build_inputs(case, "", model.config.image_token_id)
    with torch.no_grad():
        ours = model(**inputs, **processed).logits
        reference = model(**inputs, **recorded).logits
    logit_change = (ours - reference)[inputs["attention_mask"].bool()].abs().max().item()
    generation_inputs = build_inputs(case, "gen_", model.config.image_token_id)
    for recorded_name, kwargs_name in GREEDY_RUNS.items():
        if recorded_name in case.tensors:
            generated = generate_like_original(model, generation_inputs, case.info[kwargs_name], **processed)
            identical = generated.tolist() == case.tensors[recorded_name].tolist()
            near_tie = case.info["gen_min_top1_top2_margin"] <= 2 * logit_change
            assert identical or near_tie, (recorded_name, logit_change, case.info["gen_min_top1_top2_margin"])


def test_converted_and_directly_loaded_models_are_identical(load_model):
    for variant in VARIANTS:
        converted, direct = load_model(variant, "converted"), load_model(variant, "direct")
        # Only where they were read from, and the Hub code map the converter wrote, may differ.
        provenance = ("_name_or_path", "auto_map")
        converted_config, direct_config = converted.config.to_dict(), direct.config.to_dict()
        assert {key: value for key, value in converted_config.items() if key not in provenance} == {
            key: value for key, value in direct_config.items() if key not in provenance
        }
        converted_state, direct_state = converted.state_dict(), direct.state_dict()
        assert converted_state.keys() == direct_state.keys()
        assert all(torch.equal(converted_state[name], direct_state[name]) for name in converted_state), variant


def test_base_and_instruct_are_told_apart_by_the_preprocessor_config(fixtures):
    base = XGenMMConfig.from_pretrained(fixtures / "checkpoints" / "base")
    instruct = XGenMMConfig.from_pretrained(fixtures / "checkpoints" / "instruct")
    assert base.anyres is False and instruct.anyres is True
    grids_wh = json.loads((fixtures / "checkpoints" / "instruct" / "preprocessor_config.json").read_text())["grids"]
    assert instruct.image_grid_pinpoints == [[height, width] for width, height in grids_wh]
    token_map = json.loads((fixtures / "token_map.json").read_text())
    # The merged vocabulary ends with the three added tokens.
    assert instruct.image_token_id == token_map["<image>"]
    assert instruct.text_config.vocab_size == token_map["<|endofchunk|>"] + 1


def test_converted_generation_config_ends_instruct_turns_at_end_token(fixtures, converted):
    token_map = json.loads((fixtures / "token_map.json").read_text())
    instruct = json.loads((converted["instruct"] / "generation_config.json").read_text())
    base = json.loads((converted["base"] / "generation_config.json").read_text())
    assert instruct["eos_token_id"] == token_map["<|end|>"] and base["eos_token_id"] == token_map["<|endoftext|>"]


def test_direct_load_logs_one_line_naming_the_variant(fixtures, caplog):
    # transformers loggers do not propagate to the root logger by default, where pytest's caplog listens.
    from transformers.utils import logging

    logging.enable_propagation()
    try:
        with caplog.at_level("WARNING"):
            XGenMMForConditionalGeneration.from_pretrained(fixtures / "checkpoints" / "base")
    finally:
        logging.disable_propagation()
    lines = [record.getMessage() for record in caplog.records if "original Salesforce" in record.getMessage()]
    side = XGenMMConfig.from_pretrained(fixtures / "checkpoints" / "base").image_size
    assert len(lines) == 1 and f"base (fixed {side}x{side} views)" in lines[0]


def test_save_after_direct_load_writes_this_packages_format(fixtures, converted, load_model, tmp_path):
    load_model("instruct", "direct").save_pretrained(tmp_path / "saved")
    saved = load_file(tmp_path / "saved" / "model.safetensors")
    reference = {}
    for shard in converted["instruct"].glob("model-*.safetensors"):
        reference.update(load_file(shard))
    assert saved.keys() == reference.keys()
    assert all(torch.equal(saved[name], reference[name]) for name in saved)
    config = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert "perceiver_config" in config and "vision_encoder_config" not in config


def test_backbone_loads_directly_from_an_original_checkpoint(fixtures, load_model):
    backbone = XGenMMModel.from_pretrained(fixtures / "checkpoints" / "base", dtype=torch.float32)
    full = load_model("base", "direct").model.state_dict()
    assert all(torch.equal(tensor, full[name]) for name, tensor in backbone.state_dict().items())


# The released checkpoints' 718 key names (official-xgenmm-facts.md), generated from their patterns.
SIGLIP_LAYER_KEYS = [
    f"{module}.{kind}"
    for module in (
        "layer_norm1",
        "layer_norm2",
        "mlp.fc1",
        "mlp.fc2",
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.out_proj",
    )
    for kind in ("weight", "bias")
]
SIGLIP_HEAD_KEYS = [
    "head.attention.in_proj_weight",
    "head.attention.in_proj_bias",
    "head.attention.out_proj.weight",
    "head.attention.out_proj.bias",
    "head.layernorm.weight",
    "head.layernorm.bias",
    "head.mlp.fc1.weight",
    "head.mlp.fc1.bias",
    "head.mlp.fc2.weight",
    "head.mlp.fc2.bias",
    "head.probe",
]
PERCEIVER_LAYER_KEYS = [
    "0.norm_media.weight",
    "0.norm_media.bias",
    "0.norm_latents.weight",
    "0.norm_latents.bias",
    "0.to_q.weight",
    "0.to_kv.weight",
    "0.to_out.weight",
    "1.0.weight",
    "1.0.bias",
    "1.1.weight",
    "1.3.weight",
]
PHI3_LAYER_KEYS = [
    "input_layernorm.weight",
    "post_attention_layernorm.weight",
    "self_attn.qkv_proj.weight",
    "self_attn.o_proj.weight",
    "mlp.gate_up_proj.weight",
    "mlp.down_proj.weight",
]


def released_original_keys(siglip_layers=27, perceiver_layers=6, phi3_layers=32) -> list[str]:
    vision = "vlm.vision_encoder."
    keys = [
        vision + key
        for key in (
            "embeddings.patch_embedding.weight",
            "embeddings.patch_embedding.bias",
            "embeddings.position_embedding.weight",
            "post_layernorm.weight",
            "post_layernorm.bias",
        )
    ]
    keys += [f"{vision}encoder.layers.{i}.{key}" for i in range(siglip_layers) for key in SIGLIP_LAYER_KEYS]
    keys += [vision + key for key in SIGLIP_HEAD_KEYS]
    perceiver = "vlm.vision_tokenizer."
    keys += [
        perceiver + key for key in ("latents", "norm.weight", "norm.bias", "projection.weight", "projection.bias")
    ]
    keys += [f"{perceiver}layers.{i}.{key}" for i in range(perceiver_layers) for key in PERCEIVER_LAYER_KEYS]
    language = "vlm.lang_model."
    keys += [
        language + key
        for key in (
            "model.embed_tokens.weight",
            "model.embed_tokens.additional_embedding.weight",
            "model.norm.weight",
            "lm_head.weight",
            "lm_head.bias",
            "lm_head.additional_fc.weight",
            "lm_head.additional_fc.bias",
        )
    ]
    keys += [f"{language}model.layers.{i}.{key}" for i in range(phi3_layers) for key in PHI3_LAYER_KEYS]
    return keys


def test_every_released_key_has_a_destination_and_every_parameter_a_source():
    keys = released_original_keys()
    assert len(keys) == len(set(keys)) == 718
    with torch.device("meta"):
        model = XGenMMForConditionalGeneration(XGenMMConfig())
    plan = plan_original_weights(keys, model)  # the planning the converter runs, with the registered transforms

    assert sorted(plan.dropped) == sorted(f"vlm.vision_encoder.{key}" for key in SIGLIP_HEAD_KEYS)
    assert plan.sources.keys() == model.state_dict().keys()
    used = sorted(key for name in plan.sources for key in plan.source_keys(name))
    assert used == sorted(set(keys) - set(plan.dropped))
    assert set(plan.source_keys("model.language_model.embed_tokens.weight")) == {
        "vlm.lang_model.model.embed_tokens.weight",
        "vlm.lang_model.model.embed_tokens.additional_embedding.weight",
    }
    assert set(plan.source_keys("lm_head.weight")) == {
        "vlm.lang_model.lm_head.weight",
        "vlm.lang_model.lm_head.additional_fc.weight",
    }
    assert set(plan.source_keys("lm_head.bias")) == {
        "vlm.lang_model.lm_head.bias",
        "vlm.lang_model.lm_head.additional_fc.bias",
    }
    assert plan.source_keys("model.resampler.layers.5.mlp.fc2.weight") == ["vlm.vision_tokenizer.layers.5.1.3.weight"]
    assert plan.source_keys("model.resampler.layers.0.cross_attn.to_kv.weight") == [
        "vlm.vision_tokenizer.layers.0.0.to_kv.weight"
    ]
    assert plan.source_keys("model.vision_tower.encoder.layers.26.self_attn.out_proj.bias") == [
        "vlm.vision_encoder.encoder.layers.26.self_attn.out_proj.bias"
    ]
    assert plan.source_keys("model.language_model.layers.31.mlp.gate_up_proj.weight") == [
        "vlm.lang_model.model.layers.31.mlp.gate_up_proj.weight"
    ]


@pytest.fixture
def original_copy(fixtures, tmp_path):
    """A writable copy of the tiny original base checkpoint."""
    return shutil.copytree(fixtures / "checkpoints" / "base", tmp_path / "original")


def test_converting_a_folder_of_another_model_fails_clearly(original_copy, tmp_path):
    (original_copy / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(OriginalCheckpointError, match="not an original Salesforce xGen-MM checkpoint.*'llama'"):
        convert_original_checkpoint(original_copy, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_converting_a_converted_folder_says_it_is_already_converted(converted, tmp_path):
    with pytest.raises(OriginalCheckpointError, match="already in this package's format"):
        convert_original_checkpoint(converted["base"], tmp_path / "out")


def test_converting_without_preprocessor_config_refuses_to_guess_the_variant(original_copy, tmp_path):
    (original_copy / "preprocessor_config.json").unlink()
    with pytest.raises(OriginalCheckpointError, match="no preprocessor_config.json, whose `grids` tell a base"):
        convert_original_checkpoint(original_copy, tmp_path / "out")


def test_converting_without_weights_fails_clearly(original_copy, tmp_path):
    (original_copy / "model.safetensors").unlink()
    with pytest.raises(OriginalCheckpointError, match="no model.safetensors or model.safetensors.index.json"):
        convert_original_checkpoint(original_copy, tmp_path / "out")


def test_converting_a_checkpoint_missing_a_tensor_names_it(original_copy, tmp_path):
    weights = load_file(original_copy / "model.safetensors")
    del weights["vlm.lang_model.lm_head.additional_fc.bias"], weights["vlm.vision_tokenizer.layers.2.1.1.weight"]
    save_file(weights, original_copy / "model.safetensors")
    with pytest.raises(OriginalCheckpointError, match=r"lacks the weights of 2 parameters") as error:
        convert_original_checkpoint(original_copy, tmp_path / "out")
    assert "model.resampler.layers.2.mlp.fc1.weight" in str(error.value)
    assert "lm_head.bias (merged from" in str(error.value)


def test_converting_a_checkpoint_with_unknown_tensors_names_them(original_copy, tmp_path):
    weights = load_file(original_copy / "model.safetensors")
    weights["vlm.vision_tokenizer.media_position_embedding"] = torch.zeros(3)
    save_file(weights, original_copy / "model.safetensors")
    with pytest.raises(OriginalCheckpointError, match=r"1 tensors .* match no parameter.*media_position_embedding"):
        convert_original_checkpoint(original_copy, tmp_path / "out")


def test_converting_weights_that_disagree_with_the_config_names_the_tensor(original_copy, tmp_path):
    with safe_open(original_copy / "model.safetensors", framework="pt") as reader:
        latents, width = reader.get_slice("vlm.vision_tokenizer.latents").get_shape()
    config = json.loads((original_copy / "config.json").read_text())
    config["vision_tokenizer_config"]["num_vis_tokens"] = latents // 2
    (original_copy / "config.json").write_text(json.dumps(config))
    expected = rf"model.resampler.latents is \({latents}, {width}\) .* makes it \({latents // 2}, {width}\)"
    with pytest.raises(OriginalCheckpointError, match=expected):
        convert_original_checkpoint(original_copy, tmp_path / "out", dtype=torch.float32)
    assert not (tmp_path / "out").exists()


def test_a_hub_repo_id_is_fetched_with_snapshot_download(fixtures, tmp_path, monkeypatch):
    requests = []

    def snapshot_download(repo_id, allow_patterns):
        requests.append((repo_id, allow_patterns))
        return str(fixtures / "checkpoints" / "base")

    monkeypatch.setattr(convert_module, "snapshot_download", snapshot_download)
    convert_original_checkpoint("Salesforce/xgen-mm-phi3-mini-base-r-v1.5", tmp_path / "out", dtype=torch.float32)
    assert requests == [("Salesforce/xgen-mm-phi3-mini-base-r-v1.5", HUB_ALLOW_PATTERNS)]
    assert (tmp_path / "out" / "config.json").is_file() and (tmp_path / "out" / "model.safetensors").is_file()


def test_direct_load_reports_missing_and_unknown_original_tensors(original_copy):
    weights = load_file(original_copy / "model.safetensors")
    del weights["vlm.vision_tokenizer.layers.2.1.1.weight"]
    weights["vlm.vision_tokenizer.media_position_embedding"] = torch.zeros(3)
    save_file(weights, original_copy / "model.safetensors", metadata={"format": "pt"})
    _, info = XGenMMForConditionalGeneration.from_pretrained(original_copy, output_loading_info=True)
    assert info["missing_keys"] == {"model.resampler.layers.2.mlp.fc1.weight"}
    assert info["unexpected_keys"] == {"model.resampler.media_position_embedding"}


def test_direct_load_of_half_a_decoupled_vocabulary_fails_naming_the_absent_half(original_copy, caplog):
    from transformers.utils import logging

    weights = load_file(original_copy / "model.safetensors")
    del weights["vlm.lang_model.lm_head.additional_fc.bias"]
    save_file(weights, original_copy / "model.safetensors", metadata={"format": "pt"})
    logging.enable_propagation()
    try:
        with pytest.raises(RuntimeError, match="automatic conversion of the weights"):
            XGenMMForConditionalGeneration.from_pretrained(original_copy)
    finally:
        logging.disable_propagation()
    assert re.search(r"lm_head\.bias is merged from .*, but \[.*additional_fc.*\] is absent", caplog.text)


def test_converting_into_a_non_empty_folder_is_refused(fixtures, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("keep me")
    with pytest.raises(ModelFolderError, match="exists and is not an empty folder"):
        convert_original_checkpoint(fixtures / "checkpoints" / "base", tmp_path / "out")
    assert [path.name for path in (tmp_path / "out").iterdir()] == ["notes.txt"]


def test_a_failed_conversion_leaves_no_output_folder(fixtures, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(convert_module, "save_file", fail)
    with pytest.raises(OSError, match="disk full"):
        convert_original_checkpoint(fixtures / "checkpoints" / "base", tmp_path / "out")
    assert list(tmp_path.iterdir()) == []  # neither the output folder nor a staging folder is left
    monkeypatch.undo()
    convert_original_checkpoint(fixtures / "checkpoints" / "base", tmp_path / "out", dtype=torch.float32)
    assert (tmp_path / "out" / "model.safetensors").is_file()
