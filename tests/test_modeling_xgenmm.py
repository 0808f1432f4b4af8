"""The model: architecture of the release, numerics across backends and padding, generation, Hub packaging."""

import json

import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText, TimmWrapperConfig
from transformers.generation.configuration_utils import CompileConfig
from transformers.integrations.accelerate import infer_auto_device_map

from isolation import run_isolated
from library_versions import enable_activation_checkpointing
from modeling_helpers import collate, make_sample, tiny_config, tiny_model
from modeling_xgenmm import XGenMMConfig, XGenMMForConditionalGeneration, XGenMMModel
from modeling_xgenmm.modeling_xgenmm import stitched_raster_index, unpad_mask


pytestmark = pytest.mark.core


# Image sizes (height, width) that pick different grids of the tiny config (view size 56): 1x2, 2x1, 3x1, 2x2.
TALL, WIDE, VERY_WIDE, LARGE = (100, 40), (40, 100), (50, 160), (110, 120)


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_default_config_builds_the_released_parameter_counts_on_meta_device():
    with torch.device("meta"):
        model = XGenMMForConditionalGeneration(XGenMMConfig())
    # Perceiver: 6 x (2 LayerNorms + to_q + to_kv + to_out + LayerNorm + 1152->4608->1152) + latents, norm, projection.
    assert count_params(model.model.resampler) == 109_901_568
    # SigLIP so400m-patch14-384 vision transformer WITHOUT the unused attention-pooling head (428,225,600 with it).
    assert count_params(model.model.vision_tower) == 412_987_248
    # Phi-3-mini with the merged 32015-row vocabulary: 32015*3072 embeddings + 32 x 113,252,352 + final norm.
    assert count_params(model.model.language_model) == 3_722_428_416
    assert tuple(model.lm_head.weight.shape) == (32015, 3072)
    assert tuple(model.lm_head.bias.shape) == (32015,)


def test_vision_tower_with_pooling_head_matches_siglip_so400m_release():
    config = XGenMMConfig()
    config.vision_config.vision_use_head = True
    with torch.device("meta"):
        tower = AutoModel.from_config(config.vision_config)
    assert count_params(tower) == 428_225_600


def test_default_config_matches_release_constants():
    config = XGenMMConfig()
    assert (config.vision_config.image_size, config.vision_config.patch_size) == (384, 14)
    assert config.perceiver_config.hidden_size == 1152 and config.perceiver_config.output_size == 3072
    assert config.text_config.model_type == "phi3" and config.text_config.vocab_size == 32015
    assert config.text_config.rope_parameters["rope_theta"] == 10000.0
    assert config.image_token_id == 32012 and config.lm_head_bias
    # (height, width); the original lists (width, height) [[384,768],[768,384],[768,768],[1152,384],[384,1152]].
    assert config.image_grid_pinpoints == [[768, 384], [384, 768], [768, 768], [384, 1152], [1152, 384]]


def test_config_rejects_grids_that_do_not_tile_into_views():
    # @strict configs wrap validator errors in huggingface_hub's StrictDataclassClassValidationError.
    with pytest.raises(StrictDataclassClassValidationError, match=r"image_grid_pinpoints entry \[100, 384\]"):
        XGenMMConfig(image_grid_pinpoints=[[100, 384]])


def test_auto_classes_resolve_to_xgenmm_classes():
    config = tiny_config()
    assert isinstance(AutoConfig.for_model("xgenmm"), XGenMMConfig)
    assert type(AutoModelForImageTextToText.from_config(config)) is XGenMMForConditionalGeneration
    assert type(AutoModelForCausalLM.from_config(config)) is XGenMMForConditionalGeneration
    assert type(AutoModel.from_config(config)) is XGenMMModel


def test_stitched_raster_groups_are_stripes_across_crops():
    # 2 crops side by side, 2x2 features each: the first group of 4 is the stitched map's first two rows,
    # i.e. row 0 of crop 0, row 0 of crop 1, row 1 of crop 0, row 1 of crop 1.
    assert stitched_raster_index(1, 2, 2).tolist() == [0, 1, 4, 5, 2, 3, 6, 7]
    # One column of crops: groups are the crops themselves.
    assert stitched_raster_index(2, 1, 2).tolist() == list(range(8))


def test_unpad_mask_marks_letterbox_rows_and_columns():
    wide = unpad_mask((40, 100), map_height=8, map_width=8)  # fitted into a square: rows are padded
    assert wide[:, 0].tolist() == [0, 0, 1, 1, 1, 1, 0, 0] and bool(wide[3].all())
    # 100x20 in a 8x4 map: the image spans int(20 * 8 / 100) = 1 column, so (4 - 1) // 2 = 1 column each side.
    tall = unpad_mask((100, 20), map_height=8, map_width=4)
    assert tall[0].tolist() == [0, 1, 1, 0] and bool(tall[:, 1].all())
    # Truncation, not rounding: 100x40 spans int(3.2) = 3 columns, and (4 - 3) // 2 = 0 padding columns.
    assert bool(unpad_mask((100, 40), map_height=8, map_width=4).all())


def test_mismatch_between_image_tokens_and_features_names_both_counts():
    model = tiny_model()
    sample = make_sample(model.config, [TALL])
    first_image_token = sample["input_ids"].index(992)
    del sample["input_ids"][first_image_token : first_image_token + 2]
    batch = collate(model.config, [sample])
    with pytest.raises(ValueError, match=r"holds 22 image tokens \(id 992\) but the images produce 24 features"):
        model(**batch)


def test_generate_refuses_image_tokens_without_images_and_forward_reads_them_as_text(caplog):
    model = tiny_model()
    batch = collate(model.config, [make_sample(model.config, [TALL])])
    with pytest.raises(ValueError, match="input_ids hold 24 image tokens but no pixel_values were given to generate"):
        model.generate(input_ids=batch["input_ids"], max_new_tokens=2)
    # The forward, as in-library VLMs: the assistant of assisted decoding gets the prompt without its images.
    text_only = model(input_ids=batch["input_ids"]).logits
    embedded = model(inputs_embeds=model.get_input_embeddings()(batch["input_ids"])).logits
    assert torch.equal(text_only, embedded)


@pytest.mark.parametrize("assistance", ["assistant_model", "prompt_lookup"])
def test_assisted_decoding_with_images_gives_the_greedy_ids(assistance):
    model = tiny_model().eval()
    batch = collate(model.config, [make_sample(model.config, [TALL, WIDE], num_text=6, seed=3)])
    greedy = model.generate(**batch, max_new_tokens=8, min_new_tokens=8, do_sample=False)
    helper = {"assistant_model": tiny_model(seed=1).eval()} if assistance == "assistant_model" else {}
    if assistance == "prompt_lookup":
        helper["prompt_lookup_num_tokens"] = 3
    assisted = model.generate(**batch, max_new_tokens=8, min_new_tokens=8, do_sample=False, **helper)
    assert torch.equal(assisted, greedy)


def test_get_image_features_returns_the_towers_hidden_states_and_attentions_when_asked():
    model = tiny_model()
    batch = collate(model.config, [make_sample(model.config, [TALL])])
    outputs = model.get_image_features(
        batch["pixel_values"], batch["image_sizes"], output_hidden_states=True, output_attentions=True
    )
    tower = model.config.vision_config
    assert len(outputs.hidden_states) == tower.num_hidden_layers + 1
    assert len(outputs.attentions) == tower.num_hidden_layers
    assert outputs.attentions[0].shape[:2] == (batch["pixel_values"].shape[0], tower.num_attention_heads)
    plain = model.get_image_features(batch["pixel_values"], batch["image_sizes"])
    assert plain.hidden_states is None and plain.attentions is None
    assert all(torch.equal(a, b) for a, b in zip(plain.pooler_output, outputs.pooler_output))


def test_a_model_saves_in_this_packages_layout_and_still_reads_original_checkpoints(tmp_path):
    # The original-checkpoint key map is a load-only conversion: saving never writes original names.
    from safetensors.torch import load_file
    from transformers.conversion_mapping import get_model_conversion_mapping

    from modeling_xgenmm.checkpoint.key_map import original_checkpoint_conversion

    def original(transforms) -> list:
        return [transform for transform in transforms if transform.source_patterns[0].startswith("^vlm")]

    model = tiny_model()
    assert original(get_model_conversion_mapping(model, add_legacy=False)) == []  # what saving reverses
    model.save_pretrained(tmp_path)
    assert sorted(load_file(tmp_path / "model.safetensors")) == sorted(model.state_dict())
    assert len(original(get_model_conversion_mapping(model))) == len(original_checkpoint_conversion())  # on load


def test_views_and_image_sizes_that_disagree_raise():
    model = tiny_model()
    batch = collate(model.config, [make_sample(model.config, [TALL])])
    batch["image_sizes"] = torch.tensor([LARGE])
    with pytest.raises(ValueError, match=r"pixel_values holds 3 views but image_sizes describes 1 images that need 5"):
        model(**batch)


def test_eager_and_sdpa_agree_with_images():
    samples = [make_sample(tiny_config(), [WIDE, LARGE], seed=3), make_sample(tiny_config(), [TALL], seed=4)]
    batch = collate(tiny_config(), samples, padding_side="right")
    logits = {}
    for implementation in ("eager", "sdpa"):
        model = tiny_model(attn_implementation=implementation)
        with torch.no_grad():
            logits[implementation] = model(**batch).logits
    mask = batch["attention_mask"].bool()
    assert (logits["eager"][mask] - logits["sdpa"][mask]).abs().max() <= 1e-4


def test_attn_implementation_reaches_vision_tower_resampler_and_language_model():
    model = XGenMMForConditionalGeneration._from_config(tiny_config(), attn_implementation="sdpa")
    model.set_attn_implementation("eager")
    for sub in (model.model.vision_tower, model.model.resampler, model.model.language_model):
        assert sub.config._attn_implementation == "eager"
    model.set_attn_implementation("sdpa")
    for sub in (model.model.vision_tower, model.model.resampler, model.model.language_model):
        assert sub.config._attn_implementation == "sdpa"


def test_left_padded_batched_greedy_generation_equals_one_by_one():
    model = tiny_model(seed=1)
    config = model.config
    samples = [
        make_sample(config, [], num_text=12, seed=10),
        make_sample(config, [LARGE], num_text=4, seed=11),
        make_sample(config, [TALL, VERY_WIDE, WIDE], num_text=3, seed=12),
    ]
    batch = collate(config, samples, padding_side="left")
    batched = model.generate(**batch, max_new_tokens=8, do_sample=False)[:, batch["input_ids"].shape[1] :]
    for row, sample in enumerate(samples):
        alone = collate(config, [sample])
        expected = model.generate(**alone, max_new_tokens=8, do_sample=False)[:, alone["input_ids"].shape[1] :]
        assert batched[row].tolist() == expected[0].tolist(), f"row {row}"


@pytest.mark.parametrize("per_image", [True, False], ids=["per-image rows", "flat views"])
def test_several_sequences_per_prompt_each_keep_their_prompts_images(per_image):
    # generate repeats every prompt num_return_sequences times; each copy must see its own prompt's images in
    # order (not image A twice for a prompt with images A, B). Top-1 sampling is greedy decoding.
    model = tiny_model(seed=1)
    samples = [make_sample(model.config, [TALL, WIDE], num_text=4, seed=3), make_sample(model.config, [LARGE], seed=4)]
    batch = collate(model.config, samples, per_image=per_image)
    greedy = model.generate(**batch, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    sampled = model.generate(
        **batch, max_new_tokens=6, min_new_tokens=6, do_sample=True, top_k=1, num_return_sequences=2
    )
    assert torch.equal(sampled[0::2], greedy) and torch.equal(sampled[1::2], greedy)


def test_per_image_rows_and_flat_views_give_the_same_logits():
    model = tiny_model(seed=2)
    samples = [make_sample(model.config, [TALL, VERY_WIDE], seed=5), make_sample(model.config, [LARGE], seed=6)]
    flat_batch = collate(model.config, samples)
    flat = model(**flat_batch).logits
    rows = collate(model.config, samples, per_image=True)
    assert rows["pixel_values"].shape[:2] == (3, 5)  # three images, padded to the most views (5)
    encoded = []
    model.model.vision_tower.register_forward_pre_hook(
        lambda module, args, kwargs: encoded.append(kwargs["pixel_values"].shape[0]), with_kwargs=True
    )
    torch.testing.assert_close(model(**rows).logits, flat, rtol=0, atol=0)
    assert encoded == [flat_batch["pixel_values"].shape[0]] and encoded[0] < 3 * 5  # the real views only, once


def test_generate_encodes_images_once_and_decodes_from_the_cache():
    model = tiny_model()
    calls = {"tower": 0, "resampler": 0}
    model.model.vision_tower.register_forward_hook(lambda *_: calls.__setitem__("tower", calls["tower"] + 1))
    model.model.resampler.register_forward_hook(lambda *_: calls.__setitem__("resampler", calls["resampler"] + 1))
    batch = collate(model.config, [make_sample(model.config, [LARGE, TALL])])
    out = model.generate(**batch, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    assert out.shape[1] == batch["input_ids"].shape[1] + 6
    assert calls == {"tower": 1, "resampler": 1}


def test_static_cache_generation_compiles_full_graph_and_matches_dynamic_cache():
    model = tiny_model()
    batch = collate(model.config, [make_sample(model.config, [WIDE], seed=5), make_sample(model.config, [], seed=6)])
    expected = model.generate(**batch, max_new_tokens=6, do_sample=False)

    graphs = []

    def recording_backend(graph_module, example_inputs, **options):
        graphs.append(graph_module)
        return graph_module.forward

    compile_config = CompileConfig(fullgraph=True, backend=recording_backend)
    compile_config._compile_all_devices = True  # auto-compilation is GPU-only by default
    out = model.generate(
        **batch, max_new_tokens=6, do_sample=False, cache_implementation="static", compile_config=compile_config
    )
    assert graphs, "the decoding forward was not compiled"
    assert torch.equal(out, expected)


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    batch = collate(tiny_config(), [make_sample(tiny_config(), [LARGE], seed=7)], padding_side="right")
    batch["labels"] = batch["input_ids"].masked_fill(batch["input_ids"] == 992, -100)
    results = []
    for checkpointing in (False, True):
        model = tiny_model(seed=2).train()
        if checkpointing:
            enable_activation_checkpointing(model)
        loss = model(**batch).loss
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert torch.equal(loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys() and any("resampler" in name for name in grads_a)
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-5, atol=1e-6, msg=name)


def loss_and_gradients(model, batch: dict, **kwargs) -> tuple:
    model.zero_grad(set_to_none=True)
    outputs = model(**batch, **kwargs)
    outputs.loss.backward()
    grads = {name: param.grad.clone() for name, param in model.named_parameters() if param.grad is not None}
    return outputs, grads


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize("num_items_in_batch", [None, 11])
def test_training_runs_the_head_on_labelled_positions_only_with_the_full_heads_loss_and_gradients(
    attention, num_items_in_batch
):
    config = tiny_config()
    samples = [make_sample(config, [LARGE], num_text=9, seed=7), make_sample(config, [TALL, WIDE], num_text=4, seed=8)]
    batch = collate(config, samples, padding_side="right")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    labels[:, : labels.shape[1] - 6] = -100  # targets on the last tokens only, as an answer after image + prompt
    batch["labels"] = labels
    labelled_rows = []
    model = tiny_model(seed=2, attn_implementation=attention).train()
    model.lm_head.register_forward_hook(lambda head, args, output: labelled_rows.append(args[0].shape[:-1]))
    full, full_grads = loss_and_gradients(model, batch, skip_logits=False, num_items_in_batch=num_items_in_batch)
    fused, fused_grads = loss_and_gradients(model, batch, num_items_in_batch=num_items_in_batch)

    assert full.logits.shape[:2] == batch["input_ids"].shape and fused.logits is None
    targets = int((labels[:, 1:] != -100).sum())
    assert labelled_rows == [batch["input_ids"].shape, torch.Size([targets])]
    torch.testing.assert_close(fused.loss, full.loss, rtol=1e-6, atol=1e-6)
    assert fused_grads.keys() == full_grads.keys() and "lm_head.weight" in fused_grads
    for name in full_grads:
        torch.testing.assert_close(fused_grads[name], full_grads[name], rtol=1e-5, atol=1e-6, msg=name)


def test_labelled_positions_head_takes_shift_labels_and_gives_zero_loss_without_targets():
    config = tiny_config()
    batch = collate(config, [make_sample(config, [LARGE], num_text=6, seed=3)], padding_side="right")
    model = tiny_model(seed=2).train()
    labels = batch["input_ids"].clone()
    labels[:, :-4] = -100
    shifted = torch.nn.functional.pad(labels, (0, 1), value=-100)[:, 1:]
    full, _ = loss_and_gradients(model, batch, labels=labels, skip_logits=False)
    from_shifted, _ = loss_and_gradients(model, batch, labels=labels, shift_labels=shifted)
    torch.testing.assert_close(from_shifted.loss, full.loss, rtol=1e-6, atol=1e-6)

    nothing, grads = loss_and_gradients(model, batch, labels=torch.full_like(labels, -100))
    assert nothing.loss.item() == 0.0 and grads and all(not grad.any() for grad in grads.values())
    with pytest.raises(ValueError, match="skip_logits=True computes the loss without logits, so it needs labels"):
        model(**batch, skip_logits=True)
    assert model.eval()(**batch, labels=labels).logits is not None  # evaluation keeps the logits


def test_auto_device_map_never_splits_a_block():
    model = tiny_model()
    no_split = model._no_split_modules
    assert {"XGenMMPerceiverLayer", "SiglipEncoderLayer", "Phi3DecoderLayer"} <= set(no_split)
    budget = dict.fromkeys(range(8), 250000) | {"cpu": 10**9}
    device_map = infer_auto_device_map(model, max_memory=budget, no_split_module_classes=no_split)
    assert len(set(device_map.values())) > 2  # the budget forces the model over several devices

    def device_of(param_name):
        owners = [key for key in device_map if key == "" or param_name == key or param_name.startswith(key + ".")]
        return device_map[max(owners, key=len)]

    for name, module in model.named_modules():
        if type(module).__name__ in no_split:
            devices = {device_of(f"{name}.{param}") for param, _ in module.named_parameters()}
            assert len(devices) == 1, f"{name} split over {devices}"


def test_save_pretrained_round_trip_and_trust_remote_code_in_a_process_without_the_package(tmp_path):
    model = tiny_model(seed=3)
    batch = collate(model.config, [make_sample(model.config, [WIDE, TALL], seed=8)])
    with torch.no_grad():
        expected = model(**batch).logits

    folder = tmp_path / "tiny-xgenmm"
    model.save_pretrained(folder)
    assert {"config.json", "model.safetensors", "configuration_xgenmm.py", "modeling_xgenmm.py"} <= {
        p.name for p in folder.iterdir()
    }
    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    assert auto_map == {
        "AutoConfig": "configuration_xgenmm.XGenMMConfig",
        "AutoModel": "modeling_xgenmm.XGenMMModel",
        "AutoModelForCausalLM": "modeling_xgenmm.XGenMMForConditionalGeneration",
        "AutoModelForImageTextToText": "modeling_xgenmm.XGenMMForConditionalGeneration",
    }

    reloaded = XGenMMForConditionalGeneration.from_pretrained(folder, attn_implementation="eager").eval()
    with torch.no_grad():
        assert torch.equal(reloaded(**batch).logits, expected)

    torch.save(batch, tmp_path / "batch.pt")
    result = run_isolated(
        f"""
        import json, torch
        from transformers import AutoModel, AutoModelForImageTextToText
        model = AutoModelForImageTextToText.from_pretrained(
            {str(folder)!r}, trust_remote_code=True, attn_implementation="eager"
        ).eval()
        backbone = AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True)
        batch = torch.load("batch.pt")
        with torch.no_grad():
            torch.save(model(**batch).logits, "logits.pt")
        print(json.dumps({{"class": type(model).__module__ + "." + type(model).__name__,
                          "backbone": type(backbone).__name__}}))
        """,
        cwd=tmp_path,
    )
    assert result["class"].startswith("transformers_modules.") and result["class"].endswith(
        "modeling_xgenmm.XGenMMForConditionalGeneration"
    )
    assert result["backbone"] == "XGenMMModel"
    assert torch.equal(torch.load(tmp_path / "logits.pt"), expected)


def test_timm_backbone_trains_one_step_and_round_trips(tmp_path):
    config = tiny_config(
        vision_config=TimmWrapperConfig(architecture="test_vit", model_args={"img_size": 64}),
        image_size=64,
        image_grid_pinpoints=[[128, 64], [64, 128], [128, 128]],
    )
    model = tiny_model(config).train()
    assert model.config.perceiver_config.hidden_size == model.model.vision_tower.timm_model.num_features
    batch = collate(model.config, [make_sample(model.config, [(90, 120)], seed=9)], padding_side="right")
    batch["labels"] = batch["input_ids"].masked_fill(batch["input_ids"] == 992, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    before = model.model.resampler.projection.weight.detach().clone()
    loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and not torch.equal(before, model.model.resampler.projection.weight)

    model.eval()
    model.save_pretrained(tmp_path / "timm-xgenmm")
    reloaded = XGenMMForConditionalGeneration.from_pretrained(tmp_path / "timm-xgenmm", attn_implementation="eager")
    reloaded.eval()
    assert reloaded.config.vision_config.model_type == "timm_wrapper"
    with torch.no_grad():
        assert torch.equal(reloaded(**batch).logits, model(**batch).logits)
