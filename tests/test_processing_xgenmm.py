"""XGenMMProcessor: image-token expansion agrees with the model, chat templates render the released prompts, bad
inputs fail with clear messages, and a saved folder works where this package is not installed."""

import itertools
import json
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jinja2.exceptions import TemplateError
from transformers import AutoProcessor

from isolation import run_isolated
from library_versions import needs_assistant_masks_with_images
from modeling_xgenmm import XGenMMConfig, XGenMMModel
from modeling_xgenmm.checkpoint.contents import build_processor, chat_template
from paths import HUB_CONFIGS, TINY_RANDOM
from processing_helpers import as_base64, png_bytes, synthetic_image, tiny_processor
from xgenmm_processing import XGenMMImageProcessor, XGenMMProcessor


pytestmark = pytest.mark.core


IMAGE_ID = 992
RELEASED_VARIANTS = sorted(path.name for path in HUB_CONFIGS.iterdir() if path.name.startswith("xgen-mm-"))
INSTRUCT_VARIANTS = [name for name in RELEASED_VARIANTS if "instruct" in name]


@pytest.fixture(scope="module")
def processor():
    return tiny_processor()


@pytest.fixture(scope="module")
def images():
    # (height, width) 30x60, 100x40, 56x56: tiny grids 1x2, 2x1 and 2x1 crops -> 3 views, 24 tokens each.
    return [
        synthetic_image("RGB", 60, 30, seed=1),
        synthetic_image("RGB", 40, 100, seed=2),
        synthetic_image("P", 56, 56),
    ]


def user_turn(*blocks):
    return {"role": "user", "content": list(blocks)}


def image_block(image):
    return {"type": "image", "image": image}


def text_block(text):
    return {"type": "text", "text": text}


# --- chat templates ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", INSTRUCT_VARIANTS + ["tiny-random"])
def test_one_image_and_a_question_render_the_released_prompt_byte_for_byte(processor, variant):
    template = (HUB_CONFIGS / variant / "chat_template.jinja").read_text()
    query = "What is the color of the triangle?"
    conversation = [user_turn({"type": "image"}, text_block(query))]
    prompt = processor.apply_chat_template(conversation, chat_template=template, add_generation_prompt=True)
    assert prompt == (
        "<|system|>\nA chat between a curious user and an artificial intelligence assistant. The assistant gives "
        "helpful, detailed, and polite answers to the user's questions.<|end|>\n<|user|>\n<image>\n"
        "What is the color of the triangle?<|end|>\n<|assistant|>\n"
    )


def test_several_images_render_inline_followed_by_a_space(processor):
    conversation = [
        {"role": "system", "content": "Be brief."},
        user_turn({"type": "image"}, {"type": "image"}, text_block("Compare them.")),
        {"role": "assistant", "content": [text_block("Same shapes.")]},
        user_turn(text_block("And this one? "), {"type": "image"}),
    ]
    assert processor.apply_chat_template(conversation) == (
        "<|system|>\nBe brief.<|end|>\n<|user|>\n<image> <image> Compare them.<|end|>\n<|assistant|>\n"
        "Same shapes.<|end|>\n<|user|>\nAnd this one? <image>\n<|end|>\n"
    )


def test_string_and_list_content_render_the_same(processor):
    as_strings = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi."},
        {"role": "assistant", "content": "Hello."},
    ]
    as_lists = [{"role": message["role"], "content": [text_block(message["content"])]} for message in as_strings]
    assert processor.apply_chat_template(as_strings) == processor.apply_chat_template(as_lists)
    assert processor.apply_chat_template(as_strings).startswith("<|system|>\nBe brief.<|end|>\n<|user|>\nHi.")


MALFORMED_CHATS = [
    ([{"role": "user", "contents": "Hi"}], r"message 0 has no 'content' \(its keys: \['contents', 'role'\]\)"),
    ([{"content": "Hi"}], r"message 0 has no 'role'"),
    ([{"role": "user", "content": None}], r"message 0 has no 'content' \(its keys: \['role'\]\)"),
    ([{"role": "user", "content": [{"type": "text"}]}], r"message 0 \(user\), block 0 is a text block without"),
    ([{"role": "user", "content": [{"type": "video"}]}], r"message 0 \(user\), block 0 is \{'type': 'video'\}"),
    ([{"role": "user", "content": ["Hi"]}], r"message 0 \(user\), block 0 is 'Hi'; expected"),
    ([{"role": "tool", "content": "42"}], r"message 0 has role 'tool'; expected one of \['system', 'user'"),
]


def test_a_chat_with_image_blocks_may_not_write_image_markers_in_its_text(processor):
    """Such a marker would stand for an image that is not there. The processor names the message; the chat template
    refuses it too, for those who render it with the tokenizer alone (vLLM's server does: it answers 400)."""
    chat = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "This one."}]},
        {"role": "assistant", "content": "A cat."},
        {"role": "user", "content": "And <image>?"},
    ]
    with pytest.raises(ValueError, match=r"message 2 writes <image> in its text, but the chat gives its images"):
        processor.apply_chat_template(chat)
    with pytest.raises(TemplateError, match=r"xGen-MM chats give images as image blocks: this one also writes"):
        processor.tokenizer.apply_chat_template(chat, chat_template=processor.chat_template, tokenize=False)
    # Text-only chats keep the marker convention, their images given beside them (VLFeedback's prompts, DPO rows).
    text_only = [{"role": "user", "content": [{"type": "text", "text": "Describe <image> briefly."}]}]
    assert "Describe <image> briefly." in processor.apply_chat_template(text_only)


def test_a_chat_that_is_not_a_list_of_messages_is_refused(processor):
    with pytest.raises(ValueError, match=r"a chat is a non-empty list of messages, or a list of chats; got \[\]"):
        processor.apply_chat_template([])
    with pytest.raises(ValueError, match=r"message 1 is a str; expected a dict with 'role' and 'content'"):
        processor.apply_chat_template([{"role": "user", "content": "Hi"}, "Hi"])


@pytest.mark.parametrize("chat, error", MALFORMED_CHATS)
def test_a_malformed_chat_is_refused_naming_the_message_and_the_field(processor, chat, error):
    with pytest.raises(ValueError, match=error):
        processor.apply_chat_template(chat)
    with pytest.raises(ValueError, match=f"conversation 1, {error}"):
        processor.apply_chat_template([[{"role": "user", "content": "Fine"}], chat])


@pytest.mark.parametrize("chat", [chat for chat, _ in MALFORMED_CHATS[:7]])
def test_the_chat_template_itself_never_renders_a_malformed_message_as_a_turn(processor, chat):
    # What TRL and tokenizer-only users call: the template raises instead of rendering an empty turn.
    expected = r"xGen-MM (message 0 has no content|messages hold|roles are)|has no attribute 'role'"
    with pytest.raises(Exception, match=expected):
        processor.tokenizer.apply_chat_template(chat, chat_template=processor.chat_template, tokenize=False)


def test_prompt_is_a_prefix_of_prompt_plus_completion(processor, images):
    prompt = [user_turn(image_block(images[0]), text_block("What color is it?"))]
    completion = prompt + [{"role": "assistant", "content": [text_block("Red.")]}]
    prompt_text = processor.apply_chat_template(prompt, add_generation_prompt=True)
    full_text = processor.apply_chat_template(completion)
    assert full_text == prompt_text + "Red.<|end|>\n"
    prompt_ids = processor.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)
    full_ids = processor.apply_chat_template(completion, tokenize=True, return_dict=True)
    length = len(prompt_ids["input_ids"][0])
    assert full_ids["input_ids"][0][:length] == prompt_ids["input_ids"][0]


@needs_assistant_masks_with_images
def test_assistant_mask_covers_each_answer_and_its_end_token(processor, images):
    conversation = [
        user_turn(image_block(images[0]), text_block("Color?")),
        {"role": "assistant", "content": "Red."},
        user_turn(text_block("Shape?")),
        {"role": "assistant", "content": [text_block("A star.")]},
    ]
    out = processor.apply_chat_template(
        conversation, tokenize=True, return_dict=True, return_assistant_tokens_mask=True, return_tensors="pt"
    )
    ids, mask = out["input_ids"][0], out["assistant_masks"][0].bool()
    assert (ids == IMAGE_ID).sum() == 24
    # Each answer and its <|end|>, which takes the newline after it (rstrip), as in the released models' training.
    assert processor.decode(ids[mask]) == "Red.<|end|>A star.<|end|>"


def test_base_template_renders_the_few_shot_format(images):
    conversation = [
        user_turn(image_block(images[0]), text_block("A picture of")),
        {"role": "assistant", "content": " a red circle."},
        user_turn(image_block(images[1]), text_block("A picture of")),
        {"role": "assistant", "content": " a blue star."},
        user_turn(image_block(images[2]), text_block("A picture of")),
    ]
    processor = build_processor(XGenMMConfig.from_pretrained(TINY_RANDOM, anyres=False), tiny_processor().tokenizer)
    # The report's few-shot format: `<image>` + text + answer + `<|endofchunk|>` per shot, then the query.
    assert processor.apply_chat_template(conversation) == (
        "<image>A picture of a red circle.<|endofchunk|><image>A picture of a blue star.<|endofchunk|>"
        "<image>A picture of"
    )
    out = processor.apply_chat_template(conversation, tokenize=True, return_dict=True, return_tensors="pt")
    ids = out["input_ids"][0]
    assert out["pixel_values"].shape == (3, 1, 3, 56, 56)  # base mode: one view per image
    assert (ids == IMAGE_ID).sum() == 3 * 8 and (ids == 994).sum() == 2
    assert processor.decode(ids[ids != IMAGE_ID]).startswith("A picture of a red circle.<|endofchunk|>")


def test_image_blocks_accept_an_image_a_path_or_base64(processor, tmp_path):
    image = synthetic_image("RGB", 70, 45, seed=7)
    image.save(tmp_path / "image.png")
    blocks = [
        {"type": "image", "image": image},
        {"type": "image", "path": str(tmp_path / "image.png")},
        {"type": "image", "base64": as_base64(png_bytes(image))},
    ]
    out = processor.apply_chat_template(
        [user_turn(*blocks, text_block("Same?"))], tokenize=True, return_dict=True, return_tensors="pt"
    )
    first, second, third = out["pixel_values"]
    assert torch.equal(first, second) and torch.equal(first, third)
    assert out["image_sizes"].tolist() == [[45, 70]] * 3


# --- expansion --------------------------------------------------------------------------------------------------


def test_each_image_marker_becomes_views_times_latents_tokens(processor, images):
    out = processor(images=[images], text=["Look: <image> and <image>, then <image>."], return_tensors="pt")
    ids = out["input_ids"][0].tolist()
    image_runs = [len(list(run)) for token, run in itertools.groupby(ids) if token == IMAGE_ID]
    assert image_runs == [24, 24, 24]  # 3 views x 8 latents each
    assert processor.decode([token for token in ids if token != IMAGE_ID]) == "Look:  and , then ."
    assert out["pixel_values"].shape == (3, 5, 3, 56, 56)  # a row per image: 3 views, then zero views
    assert out["pixel_values"][:, 2].any(dim=(1, 2, 3)).all() and not out["pixel_values"][:, 3:].any()
    assert out["image_sizes"].tolist() == [[30, 60], [100, 40], [56, 56]]


def test_released_processor_gives_384_to_640_tokens_per_image():
    processor = build_processor(
        XGenMMConfig.from_pretrained(HUB_CONFIGS / INSTRUCT_VARIANTS[0]), tiny_processor().tokenizer
    )
    sizes = {(384, 384): 384, (480, 640): 640, (1000, 300): 512, (200, 1500): 512, (500, 1000): 384}
    assert {size: processor.num_image_tokens(size) for size in sizes} == sizes


def test_nested_and_flat_images_give_the_same_batch(processor, images):
    text = ["<image> first", "second <image><image>"]
    nested = processor(images=[[images[0]], images[1:]], text=text, padding=True, return_tensors="pt")
    flat = processor(images=images, text=text, padding=True, return_tensors="pt")
    for key in ("input_ids", "attention_mask", "pixel_values", "image_sizes"):
        assert torch.equal(nested[key], flat[key]), key


def test_base_demo_placeholder_run_counts_as_one_image(processor, images):
    demo = processor(
        images=images[:1], text="<image>" + "<image placeholder>" * 7 + "A picture of", return_tensors="pt"
    )
    plain = processor(images=images[:1], text="<image>A picture of", return_tensors="pt")
    assert torch.equal(demo["input_ids"], plain["input_ids"])
    assert 993 not in demo["input_ids"].tolist()[0]


def test_text_only_works_without_pixel_values(processor):
    out = processor(text=["How many stars?", "Hi"], images=None, padding=True, return_tensors="pt")
    assert set(out) == {"input_ids", "attention_mask"}
    assert out["attention_mask"].tolist()[1][0] == 0  # left padded
    empty = processor(text=["Hi"], images=[[]], return_tensors="pt")
    assert set(empty) == {"input_ids", "attention_mask"}


def test_padding_is_left_by_default_and_right_on_request(processor, images):
    text = ["<image> a short one", "<image> a somewhat longer second sample"]
    left = processor(images=[[images[0]], [images[1]]], text=text, padding=True, return_tensors="pt")
    right = processor(
        images=[[images[0]], [images[1]]], text=text, padding=True, padding_side="right", return_tensors="pt"
    )
    pad = processor.tokenizer.pad_token_id
    assert left["input_ids"][0, 0] == pad and left["attention_mask"][0, 0] == 0 and left["attention_mask"][0, -1] == 1
    assert (
        right["input_ids"][0, -1] == pad and right["attention_mask"][0, 0] == 1 and right["attention_mask"][0, -1] == 0
    )


def test_post_process_returns_only_the_answer(processor):
    tokenizer = processor.tokenizer
    prompt = processor.apply_chat_template([user_turn(text_block("Color?"))], add_generation_prompt=True)
    prompt_ids = tokenizer(prompt)["input_ids"]
    answer_ids = tokenizer("The star is red.")["input_ids"] + [987, 13]
    generated = torch.tensor([prompt_ids + answer_ids + [991, 991], [991] * 2 + prompt_ids + answer_ids])
    assert processor.post_process_image_text_to_text(generated) == ["The star is red.", "The star is red."]
    assert processor.post_process_image_text_to_text(answer_ids) == "The star is red."


# --- the model's contract -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return XGenMMModel(XGenMMConfig.from_pretrained(TINY_RANDOM)).eval()


sizes = st.tuples(st.integers(1, 400), st.integers(1, 400))
grids = st.lists(st.tuples(st.integers(1, 3), st.integers(1, 3)), min_size=1, max_size=5)


@settings(
    max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(image_sizes=st.lists(sizes, min_size=1, max_size=3), grid_shapes=grids, anyres=st.booleans())
def test_image_tokens_match_the_model_feature_rows(tiny_model, image_sizes, grid_shapes, anyres):
    config = tiny_model.config
    side = config.image_size
    config.anyres = anyres
    config.image_grid_pinpoints = [[rows * side, cols * side] for rows, cols in grid_shapes]
    processor = build_processor(config, tiny_processor().tokenizer)
    images = [synthetic_image("RGB", width, height) for height, width in image_sizes]
    out = processor(images=images, text=" ".join(["<image>"] * len(images)), return_tensors="pt")
    with torch.no_grad():
        features = tiny_model.get_image_features(out["pixel_values"], out["image_sizes"]).pooler_output
    assert [rows.shape[0] for rows in features] == [processor.num_image_tokens(size) for size in image_sizes]
    assert (out["input_ids"] == config.image_token_id).sum() == sum(rows.shape[0] for rows in features)


# --- bad inputs -------------------------------------------------------------------------------------------------


def test_image_count_must_match_markers_per_sample(processor, images):
    expected = (
        r"^The number of <image> tokens in the prompt should be the same as the number of images passed for it\. "
    )
    # The totals agree; the images are in the wrong samples.
    with pytest.raises(ValueError, match=expected + r"Found 1 <image> tokens and 2 images in sample 0\.$"):
        processor(images=[images[:2], images[2:3]], text=["<image> a", "<image> <image> b"])
    with pytest.raises(ValueError, match=expected + r"Found 1 <image> tokens and 0 images in sample 0\.$"):
        processor(images=[[], images[:2]], text=["<image> a", "<image> b"])
    # Totals that differ get the library's wording first, as for a flat list (transformers' processor mixin).
    with pytest.raises(ValueError, match=r"^The total number of <image> tokens in the prompts should be the same as "):
        processor(images=[[images[0]], images[:3]], text=["<image> a", "<image> <image> b"])
    with pytest.raises(ValueError, match=r"^images are given for 1 samples but the text has 2 samples$"):
        processor(images=[[images[0]]], text=["<image> a", "b"])


def test_flat_image_count_must_match_markers_of_the_batch(processor, images):
    expected = (
        r"^The total number of <image> tokens in the prompts should be the same as the number of images passed\. "
        r"Found total 3 <image> tokens and 2 images \(\[1, 2\] per sample\)\.$"
    )
    with pytest.raises(ValueError, match=expected):
        processor(images=images[:2], text=["<image> a", "<image><image> b"])


def test_markers_without_images_are_refused(processor):
    expected = r"^Found 2 <image> tokens in the text but no images were passed \(\[0, 2\] per sample\)\.$"
    with pytest.raises(ValueError, match=expected):
        processor(text=["a", "<image> <image> b"])


def test_truncation_may_cut_text_but_never_an_image(processor, images):
    with pytest.raises(
        ValueError, match=r"^sample 0: truncation keeps 10 of its 24 <image> tokens; truncation may only cut text"
    ):
        processor(images=images[:1], text="<image> Describe it.", truncation=True, max_length=10)
    kept = processor(images=images[:1], text="<image> Describe it in detail.", truncation=True, max_length=27)
    assert kept["input_ids"][0].count(IMAGE_ID) == 24 and len(kept["input_ids"][0]) == 27


def test_text_must_be_a_string_or_a_list_of_strings(processor):
    with pytest.raises(TypeError, match=r"^text must be a string or a list of strings, got int$"):
        processor(text=42)
    with pytest.raises(TypeError, match=r"^text must be a string or a list of strings, but sample 1 is a bytes$"):
        processor(text=["fine", b"bytes"])


# --- registration and the Hub folder ------------------------------------------------------------------------------


def test_hub_configs_carry_processing_files_consistent_with_the_model_config():
    for variant in RELEASED_VARIANTS + ["tiny-random"]:
        folder = HUB_CONFIGS / variant
        config = json.loads((folder / "config.json").read_text())
        saved = json.loads((folder / "processor_config.json").read_text())
        image = saved["image_processor"]
        # Configuration only, like config.json there: code and auto_map come with save_pretrained at release.
        assert saved["processor_class"] == "XGenMMProcessor" and "auto_map" not in saved and "auto_map" not in image
        assert saved["image_seq_length"] == config["perceiver_config"]["num_latents"], variant
        assert image["anyres"] == config["anyres"] and image["image_grid_pinpoints"] == config["image_grid_pinpoints"]
        assert image["size"] == {"height": config["image_size"], "width": config["image_size"]}
        template = (folder / "chat_template.jinja").read_text()
        assert template == chat_template(XGenMMConfig.from_pretrained(folder)), variant
        assert not (folder / "tokenizer.json").exists() or variant == "tiny-random"
    assert (
        json.loads((HUB_CONFIGS / "xgen-mm-phi3-mini-base-r-v1.5" / "processor_config.json").read_text())[
            "image_processor"
        ]["anyres"]
        is False
    )


def test_auto_processor_loads_the_registered_classes():
    processor = AutoProcessor.from_pretrained(TINY_RANDOM)
    assert type(processor) is XGenMMProcessor and type(processor.image_processor) is XGenMMImageProcessor
    assert processor.image_seq_length == 8 and processor.image_token == "<image>" and processor.image_token_id == 992
    assert sorted(processor.model_input_names) == ["attention_mask", "image_sizes", "input_ids", "pixel_values"]
    assert processor._get_num_multimodal_tokens(image_sizes=[(30, 60), (56, 56)]).num_image_tokens == [24, 24]


FRESH_PROCESS = """
import torch
from transformers import AutoProcessor
processor = AutoProcessor.from_pretrained({folder!r}, trust_remote_code=True)
assert type(processor).__module__.startswith("transformers_modules."), type(processor).__module__
conversation = [{{"role": "user", "content": [
    {{"type": "image", "path": {paths[0]!r}}}, {{"type": "image", "path": {paths[1]!r}}},
    {{"type": "text", "text": "Which one has more red?"}},
]}}]
out = processor.apply_chat_template(
    conversation, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
)
torch.save({{key: out[key] for key in ("input_ids", "pixel_values", "image_sizes")}}, {result!r})
print("{{}}")
"""


def test_saved_folder_loads_with_remote_code_in_a_fresh_process_without_this_package(processor, tmp_path):
    folder = tmp_path / "hub_folder"
    processor.save_pretrained(folder)
    assert {"processing_xgenmm.py", "image_processing_xgenmm.py", "tokenization_xgenmm.py"} <= set(os.listdir(folder))
    paths = []
    for index, (width, height) in enumerate([(90, 40), (33, 120)]):
        paths.append(str(tmp_path / f"image{index}.png"))
        synthetic_image("RGB", width, height, seed=index).save(paths[-1])
    result = tmp_path / "fresh.pt"
    run_isolated(FRESH_PROCESS.format(folder=str(folder), paths=paths, result=str(result)), cwd=tmp_path, timeout=300)
    fresh = torch.load(result)
    conversation = [
        user_turn(
            {"type": "image", "path": paths[0]},
            {"type": "image", "path": paths[1]},
            text_block("Which one has more red?"),
        )
    ]
    here = processor.apply_chat_template(
        conversation, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    assert torch.equal(fresh["input_ids"], here["input_ids"])
    assert torch.equal(fresh["pixel_values"], here["pixel_values"])
    assert fresh["image_sizes"].tolist() == [[40, 90], [120, 33]]
    assert (fresh["input_ids"] == IMAGE_ID).sum() == 24 + 32  # 40x90: 1x2 crops; 120x33: 3x1 crops
