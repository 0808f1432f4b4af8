"""DPO with TRL's `DPOTrainer`: the model and processor train unchanged (LoRA with the adapters-disabled reference, and
full DPO with an explicit reference), the preference collator tokenizes completions as generation sees them and
refuses bad rows, shared image features give TRL's loss and gradients, and trained models load without the package."""

import copy

import pytest
import torch
from trl import DPOConfig, DPOTrainer
from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

from hub_helpers import chat, sample_images, tiny_instruct_model, tiny_processor, write_pngs
from isolation import run_isolated
from modeling_xgenmm.toy_world.data import ToyWorldRows, preference_row
from modeling_xgenmm.train.arguments import XGenMMDPOConfig
from modeling_xgenmm.train.collators import XGenMMPreferenceCollator
from modeling_xgenmm.train.dpo import build_dpo_trainer, completion_log_probs, preference_dataset
from modeling_xgenmm.train.loading import load_model_and_processor
from modeling_xgenmm.train.lora import lora_config
from modeling_xgenmm.train.rows import fill_image_blocks, normalize_preference_row
from modeling_xgenmm.train.saving import save_trained_model
from paths import HUB_CONFIGS
from training_helpers import tiny_run_settings


def toy_rows(count: int = 8, seed: int = 5) -> list[dict]:
    return [ToyWorldRows(preference_row, count, seed=seed)[index] for index in range(count)]


def dpo_config(output_dir, **overrides) -> XGenMMDPOConfig:
    return XGenMMDPOConfig(**{**tiny_run_settings(output_dir), "activation_checkpointing": False, **overrides})


def vision_views_encoded(model) -> list[int]:
    """Records how many views each vision-tower call encodes."""
    calls = []
    model.model.vision_tower.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append(kwargs["pixel_values"].shape[0]), with_kwargs=True
    )
    return calls


def real_views(model, batch) -> int:
    """The views a batch's images have (its `pixel_values` rows are padded with zero views)."""
    return sum(model.model.views_per_image(batch["image_sizes"], batch["pixel_values"]))


# --- configuration ------------------------------------------------------------------------------------------------


def test_policy_defaults_of_the_dpo_config(tmp_path):
    config = XGenMMDPOConfig(output_dir=str(tmp_path), report_to="none")
    assert config.bf16 is False and config.use_cpu is True  # TRL would turn bf16 on; here there is no CUDA
    assert config.max_length == 2048 and config.truncation_mode == "keep_start"
    assert config.remove_unused_columns is False and config.share_image_features is None
    assert config.activation_checkpointing is True and config.gradient_checkpointing is True


# --- the collator -------------------------------------------------------------------------------------------------


def test_collator_completions_are_the_tokens_generation_sees():
    processor = tiny_processor()
    rows = toy_rows(3)
    batch = XGenMMPreferenceCollator(processor=processor)(rows)
    assert batch["input_ids"].shape[0] == 6 and batch["image_sizes"].shape[0] == 6
    for index, row in enumerate(rows * 2):
        completion = row["chosen"] if index < 3 else row["rejected"]
        # The reference: the whole conversation through the chat template, whose generation markers span the answer.
        expected = processor.apply_chat_template(
            fill_image_blocks(row["prompt"], row["images"]) + completion,
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
            return_tensors="pt",
        )
        length = int(batch["attention_mask"][index].sum())
        assert torch.equal(batch["input_ids"][index, :length], expected["input_ids"][0])
        assert torch.equal(batch["completion_mask"][index, :length], expected["assistant_masks"][0])
        assert batch["completion_mask"][index, length:].sum() == 0
    answer = processor.decode(batch["input_ids"][0][batch["completion_mask"][0].bool()])
    assert answer == rows[0]["answer"] + "<|end|>"  # <|end|> takes its newline (rstrip)


def test_a_prompt_with_earlier_answers_leaves_them_out_of_the_completion():
    processor = tiny_processor()
    row = toy_rows(1)[0]
    earlier = [{"role": "assistant", "content": [{"type": "text", "text": "Shapes."}]}]
    row["prompt"] = row["prompt"] + earlier + [{"role": "user", "content": [{"type": "text", "text": "Which?"}]}]
    batch = XGenMMPreferenceCollator(processor=processor)([row])
    prompt = processor.apply_chat_template(
        fill_image_blocks(row["prompt"], row["images"]), add_generation_prompt=True, tokenize=True, return_dict=True
    )
    prompt_length = len(prompt["input_ids"][0])
    for index, completion in enumerate((row["chosen"], row["rejected"])):
        length = int(batch["attention_mask"][index].sum())
        assert batch["completion_mask"][index, :prompt_length].sum() == 0
        assert batch["completion_mask"][index, prompt_length:length].all()
        answer = processor.decode(batch["input_ids"][index][batch["completion_mask"][index].bool()])
        assert answer == completion[0]["content"][0]["text"] + "<|end|>"


def test_trl_collator_tokenizes_completions_apart_from_their_prompt():
    # Why XGenMMPreferenceCollator exists: alone, a completion starts with a word-start token ("▁blue") where the
    # model, after "<|assistant|>\n", reads and writes the in-context tokens ("b", "l", ...).
    processor = tiny_processor()
    rows = toy_rows(1)
    trl_batch = DataCollatorForVisionPreference(processor=processor)(copy.deepcopy(rows))
    ours = XGenMMPreferenceCollator(processor=processor)(rows)
    trl_first = trl_batch["input_ids"][0][trl_batch["completion_mask"][0].bool()][0]
    our_first = ours["input_ids"][0][ours["completion_mask"][0].bool()][0]
    assert processor.tokenizer.convert_ids_to_tokens(int(trl_first)) == "▁" + rows[0]["answer"]
    assert processor.tokenizer.convert_ids_to_tokens(int(our_first)) == rows[0]["answer"][0]


def test_rows_without_images_are_refused_where_images_are_expected():
    processor = tiny_processor()
    row = {**toy_rows(1)[0], "images": [], "id": "no-image"}
    row["prompt"] = [{"role": "user", "content": [{"type": "text", "text": "What color?"}]}]
    with pytest.raises(ValueError, match=r"preference row id 'no-image' has no images, but this run expects an image"):
        XGenMMPreferenceCollator(processor=processor)([row])
    text_only = XGenMMPreferenceCollator(processor=processor, require_images=False)([row])
    assert "pixel_values" not in text_only and text_only["completion_mask"].sum() > 0


def test_image_and_placeholder_counts_must_match():
    processor = tiny_processor()
    row = {**toy_rows(1)[0], "id": "two-images"}
    row["images"] = row["images"] * 2
    with pytest.raises(ValueError, match=r"preference row id 'two-images': 2 images but 1 image blocks"):
        XGenMMPreferenceCollator(processor=processor)([row])
    marker_row = {**toy_rows(1)[0], "id": "markers", "prompt": "<image><image>What color?"}
    with pytest.raises(ValueError, match=r"row id 'markers': 1 images but 2 image blocks or <image> markers"):
        normalize_preference_row(marker_row)
    completion_row = {**toy_rows(1)[0], "id": "answer-image", "chosen": "Look: <image>"}
    with pytest.raises(ValueError, match=r"id 'answer-image': the chosen completion holds an image"):
        normalize_preference_row(completion_row)


def test_a_prompt_longer_than_max_length_raises_instead_of_cutting_the_image():
    processor = tiny_processor()
    rows = toy_rows(2)
    batch = XGenMMPreferenceCollator(processor=processor)(rows)
    prompt_length = int((batch["completion_mask"][0] == 0).long().argmin())  # first completion position
    expected = rf"prompt alone is {prompt_length} tokens \(\d+ of them image tokens\) but max_length={prompt_length}"
    with pytest.raises(ValueError, match=expected):
        XGenMMPreferenceCollator(processor=processor, max_length=prompt_length)(rows)


def test_truncation_shortens_completions_and_keeps_every_image_token():
    processor = tiny_processor()
    rows = toy_rows(3)
    full = XGenMMPreferenceCollator(processor=processor)(rows)
    prompt_lengths = (full["completion_mask"] == 0).long().argmin(dim=1)  # the first completion position
    completion_lengths = full["completion_mask"].sum(dim=1)
    max_length = int(prompt_lengths.max()) + 1
    cut = XGenMMPreferenceCollator(processor=processor, max_length=max_length)(rows)
    assert cut["input_ids"].shape[1] == max_length
    assert torch.equal(cut["input_ids"], full["input_ids"][:, :max_length])
    image_tokens = processor.image_token_id
    assert torch.equal((cut["input_ids"] == image_tokens).sum(1), (full["input_ids"] == image_tokens).sum(1))
    kept = torch.minimum(completion_lengths, max_length - prompt_lengths)
    assert torch.equal(cut["completion_mask"].sum(dim=1), kept) and (kept < completion_lengths).any()


def test_trl_truncation_inside_an_image_is_reported_by_the_trainer(tmp_path):
    # TRL's own collator cuts at max_length wherever it falls; the model's feature/token check catches the cut image.
    model, processor = tiny_instruct_model(), tiny_processor()
    dataset = preference_dataset(toy_rows(4), processor.image_token)
    args = DPOConfig(output_dir=str(tmp_path), max_length=20, bf16=False, use_cpu=True, report_to="none", max_steps=1)
    trainer = DPOTrainer(
        model, args=args, train_dataset=dataset, processing_class=processor, peft_config=lora_config(model)
    )
    batch = trainer.data_collator([dataset[index] for index in range(2)])
    with pytest.raises(ValueError, match=r"The current `max_length` \(20\) is too short and causes image placeholder"):
        trainer.compute_loss(trainer.model, batch)


# --- DPOTrainer as it is ------------------------------------------------------------------------------------------


def test_trl_dpo_trainer_trains_lora_with_the_adapters_disabled_reference(tmp_path):
    model, processor = tiny_instruct_model(), tiny_processor()
    dataset = preference_dataset(toy_rows(8), processor.image_token)
    trainer = DPOTrainer(
        model,
        args=dpo_config(tmp_path),
        train_dataset=dataset,
        processing_class=processor,
        peft_config=lora_config(model),
    )
    assert trainer.ref_model is None and type(trainer.data_collator) is DataCollatorForVisionPreference
    before = {name: param.detach().clone() for name, param in trainer.model.named_parameters()}
    trainer.train()
    changed = {name for name, param in trainer.model.named_parameters() if not torch.equal(param, before[name])}
    assert changed and all(".lora_" in name for name in changed)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 2 and losses[0] == pytest.approx(0.6931, abs=1e-4)  # policy == reference at step 1


def test_trl_dpo_trainer_trains_full_dpo_against_an_explicit_reference(tmp_path):
    model, processor = tiny_instruct_model(), tiny_processor()
    reference = tiny_instruct_model()
    dataset = preference_dataset(toy_rows(8), processor.image_token)
    trainer = DPOTrainer(
        model, ref_model=reference, args=dpo_config(tmp_path), train_dataset=dataset, processing_class=processor
    )
    trainer.train()
    language_model = "model.language_model.layers.0.self_attn.qkv_proj.weight"
    assert not torch.equal(model.get_parameter(language_model), reference.get_parameter(language_model))
    assert torch.equal(reference.get_parameter(language_model), tiny_instruct_model().get_parameter(language_model))


# --- shared image features ----------------------------------------------------------------------------------------


def loss_and_gradients(share: bool, lora: bool, tmp_path, rows):
    model, processor = tiny_instruct_model(), tiny_processor()
    trainer = build_dpo_trainer(
        model,
        processor,
        rows,
        dpo_config(tmp_path, share_image_features=share),
        peft_config=lora_config(model) if lora else None,
    )
    generator = torch.Generator().manual_seed(0)
    for name, param in trainer.model.named_parameters():
        if "lora_B" in name:  # zero at init: move the policy away from the reference
            param.data.normal_(0, 0.05, generator=generator)
    views = vision_views_encoded(model)
    batch = trainer.data_collator(rows[:4])
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    gradients = {name: param.grad for name, param in trainer.model.named_parameters() if param.requires_grad}
    return loss.detach(), gradients, views, real_views(model, batch)


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_shared_image_features_give_trl_loss_and_gradients(lora, tmp_path):
    rows = toy_rows(4)
    reference_loss, reference_gradients, trl_views, batch_views = loss_and_gradients(False, lora, tmp_path, rows)
    loss, gradients, shared_views, _ = loss_and_gradients(True, lora, tmp_path, rows)
    torch.testing.assert_close(loss, reference_loss, rtol=1e-6, atol=1e-7)
    assert gradients.keys() == reference_gradients.keys() and len(gradients) > 0
    for name, gradient in gradients.items():
        torch.testing.assert_close(gradient, reference_gradients[name], rtol=1e-5, atol=1e-7, msg=name)
    assert any(gradient.abs().sum() > 0 for gradient in gradients.values())
    # TRL: policy and (with LoRA, same model) reference each encode every image twice; shared: each image once.
    assert sum(trl_views) == (2 if lora else 1) * batch_views
    assert shared_views == [batch_views // 2]


def test_a_frozen_batch_norm_tower_shares_image_features_and_keeps_its_statistics(tmp_path):
    # The toy world's ResNet tower has batch norm; frozen (LoRA), it runs in eval mode, so one encoding serves the
    # four forwards of a step.
    model, processor = load_model_and_processor(HUB_CONFIGS / "toy-world", seed=0)
    rows = toy_rows(4)
    trainer = build_dpo_trainer(
        model, processor, rows, dpo_config(tmp_path, share_image_features=True), peft_config=lora_config(model)
    )
    norms = [m for m in model.model.vision_tower.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [norm.running_mean.clone() for norm in norms]
    views = vision_views_encoded(model)
    trainer.model.train()
    batch = trainer.data_collator(rows)
    trainer.compute_loss(trainer.model, batch).backward()
    assert trainer._sharing_refused is None and views == [real_views(model, batch) // 2]
    assert norms and all(torch.equal(norm.running_mean, old) for norm, old in zip(norms, before))


def test_image_features_are_not_shared_when_the_resampler_trains(tmp_path):
    rows = toy_rows(4)
    model, processor = tiny_instruct_model(), tiny_processor()
    trainer = build_dpo_trainer(model, processor, rows, dpo_config(tmp_path, freeze_resampler=False))
    assert trainer._sharing_refused.startswith("the resampler trains")
    views = vision_views_encoded(model)
    trainer.model.train()
    trainer.compute_loss(trainer.model, trainer.data_collator(rows[:2]))
    assert len(views) == 1  # TRL's path: the policy encodes its images (the reference model has its own tower)

    model = tiny_instruct_model()
    refusal = r"share_image_features=True, but image features cannot be shared: the resampler trains"
    with pytest.raises(ValueError, match=refusal):
        build_dpo_trainer(
            model, processor, rows, dpo_config(tmp_path, share_image_features=True, freeze_resampler=False)
        )


def test_a_tower_unfrozen_during_training_falls_back_and_a_different_reference_is_refused(tmp_path):
    rows = toy_rows(4)
    model, processor = tiny_instruct_model(), tiny_processor()
    trainer = build_dpo_trainer(model, processor, rows, dpo_config(tmp_path))
    assert trainer._sharing_refused is None
    model.model.vision_tower.requires_grad_(True)
    views = vision_views_encoded(model)
    trainer.model.train()
    trainer.compute_loss(trainer.model, trainer.data_collator(rows[:2]))
    assert views == [real_views(model, trainer.data_collator(rows[:2]))]

    reference = tiny_instruct_model(seed=1)
    trainer = build_dpo_trainer(tiny_instruct_model(), processor, rows, dpo_config(tmp_path), ref_model=reference)
    assert trainer._sharing_refused == "the reference model's vision_tower differs from the policy's"


# --- saved results ------------------------------------------------------------------------------------------------


def test_lora_and_full_dpo_results_load_and_answer_through_the_pipeline_without_the_package(tmp_path):
    processor = tiny_processor()
    images = sample_images()[:2]
    paths = write_pngs(images, tmp_path)
    conversation = chat("What color are the shapes?", {"type": "image", "image": images[0]})
    greedy = {"max_new_tokens": 6, "min_new_tokens": 6, "do_sample": False}
    expected, folders = {}, {}
    for lora in (True, False):
        name = "lora" if lora else "full"
        start, model = tiny_instruct_model(), tiny_instruct_model()
        peft_config = lora_config(model) if lora else None
        trainer = build_dpo_trainer(
            model, processor, toy_rows(8), dpo_config(tmp_path / name), peft_config=peft_config
        )
        trainer.train()
        folders[name] = tmp_path / f"{name}-model"
        model = save_trained_model(trainer, folders[name])
        assert not (folders[name] / "adapter_config.json").exists()
        weight = "model.language_model.layers.1.mlp.down_proj.weight"
        assert not torch.equal(model.get_parameter(weight), start.get_parameter(weight))
        with torch.no_grad():
            batch = XGenMMPreferenceCollator(processor=processor)(toy_rows(2))
            inputs = processor.apply_chat_template(
                conversation, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
            )
            expected[name] = {
                "token_ids": model.eval().generate(**inputs, **greedy)[0].tolist(),
                "chosen_log_prob": completion_log_probs(model, batch)[0][0].item(),
            }
        torch.save(dict(batch), tmp_path / "batch.pt")

    result = run_isolated(
        f"""
        import json, torch
        from PIL import Image
        from transformers import AutoModelForImageTextToText, pipeline

        image = Image.open({paths[0]!r}).convert("RGB")
        chat = [{{"role": "user", "content": [{{"type": "image", "image": image}},
                                               {{"type": "text", "text": "What color are the shapes?"}}]}}]
        batch = torch.load("batch.pt")
        out = {{}}
        for name, folder in { ({k: str(v) for k, v in folders.items()})!r}.items():
            pipe = pipeline("image-text-to-text", model=folder, trust_remote_code=True, **{greedy!r})
            token_ids = pipe(text=chat, return_tensors=True)[0]["generated_token_ids"]
            with torch.no_grad():
                logits = pipe.model(**{{k: v for k, v in batch.items() if k != "completion_mask"}}).logits[:, :-1]
            log_probs = logits.log_softmax(-1).gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
            chosen = (log_probs * batch["completion_mask"][:, 1:]).sum(1)[0].item()
            out[name] = {{
                "module": type(pipe.model).__module__,
                "token_ids": [int(token) for token in token_ids],
                "chosen_log_prob": chosen,
            }}
        print(json.dumps(out))
        """,
        cwd=tmp_path,
    )
    for name in ("lora", "full"):
        assert result[name]["module"].startswith("transformers_modules.")
        assert result[name]["token_ids"] == expected[name]["token_ids"]
        assert result[name]["chosen_log_prob"] == pytest.approx(expected[name]["chosen_log_prob"], rel=1e-5)
