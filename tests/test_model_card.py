"""Model cards: the committed `hub_configs/*/README.md` are what the generator writes; they parse with
`huggingface_hub.ModelCard` into the metadata the Hub needs; widget examples, usage snippets and results are
right for each variant, and the examples and snippets run against a published tiny model."""

import contextlib
import io
import json
import re

import pytest
import torch
from huggingface_hub import ChatCompletionInputMessage, ModelCard
from transformers import pipeline

from hub_helpers import sample_images, tiny_instruct_model, tiny_processor, write_pngs
from modeling_xgenmm import XGenMMConfig
from modeling_xgenmm.hub.model_card import IMAGE_URLS, model_card
from modeling_xgenmm.hub.publish import prepare_hub_folder
from paths import HUB_CONFIGS


VARIANT_FOLDERS = sorted(path for path in HUB_CONFIGS.iterdir() if (path / "config.json").is_file())
BASE = "xgen-mm-phi3-mini-base-r-v1.5"
SINGLE_IMAGE = "xgen-mm-phi3-mini-instruct-singleimg-r-v1.5"
INTERLEAVE = "xgen-mm-phi3-mini-instruct-interleave-r-v1.5"
DPO = "xgen-mm-phi3-mini-instruct-dpo-r-v1.5"


def load_card(variant: str) -> ModelCard:
    return ModelCard.load(HUB_CONFIGS / variant / "README.md")


@pytest.mark.parametrize("variant", [folder.name for folder in VARIANT_FOLDERS])
def test_readme_metadata_has_what_the_hub_needs(variant):
    data = load_card(variant).data
    instruct = variant != BASE
    assert data.pipeline_tag == "image-text-to-text"
    assert data.library_name == "transformers"
    assert {"custom_code", "multimodal", "xgen-mm"} <= set(data.tags)
    assert ("conversational" in data.tags) == instruct
    if variant in ("tiny-random", "toy-world"):
        assert data.license == "apache-2.0" and data.base_model is None
    else:
        assert data.base_model == f"Salesforce/{variant}"
        assert (data.license, data.license_link) == ("other", f"https://huggingface.co/Salesforce/{variant}")
    assert data.datasets == (["MMInstruction/VLFeedback", "ys-zong/VLGuard"] if variant == DPO else None)


@pytest.mark.parametrize("variant", [folder.name for folder in VARIANT_FOLDERS])
def test_widget_examples_are_well_formed(variant):
    widget = load_card(variant).data.widget
    assert isinstance(widget, list) and widget
    for example in widget:
        assert isinstance(example["example_title"], str) and example["example_title"]
        if variant == BASE:
            assert set(example) == {"example_title", "src", "text"}
            assert example["src"] in IMAGE_URLS and example["text"].startswith("<image>")
            continue
        assert set(example) == {"example_title", "messages"}
        for message in example["messages"]:
            parsed = ChatCompletionInputMessage.parse_obj_as_instance(message)
            assert parsed.role == "user"
            kinds = [part.type for part in parsed.content]
            assert kinds[-1] == "text" and set(kinds[:-1]) == {"image_url"}
            assert all(part.image_url.url in IMAGE_URLS for part in parsed.content[:-1])
            assert parsed.content[-1].text.strip()
    image_counts = [len(example["messages"][0]["content"]) - 1 for example in widget if "messages" in example]
    assert (max(image_counts, default=0) > 1) == (variant == INTERLEAVE)


def test_results_are_the_published_ones_or_said_to_be_missing():
    base, dpo = load_card(BASE).text, load_card(DPO).text
    for row in (
        "| VQAv2 | 43.1 | 66.3 | 66.9 |",
        "| TextVQA | 34.0 | 54.2 | 55.3 |",
        "| OKVQA | 28.0 | 48.9 | 50.1 |",
        "| COCO | 67.2 | 107.6 | 109.8 |",
        "| NoCaps | 82.6 | 100.8 | 104.6 |",
        "| TextCaps | 69.5 | 89.9 | 94.0 |",
    ):
        assert row in base
    for benchmark, score in (
        ("VLGuard (lower is better)", "5.2"),
        ("HallusionBench", "56.6"),
        ("POPE", "86.8"),
        ("MMBench-dev", "76.4"),
        ("SEED-IMG", "72.1"),
        ("MMStar", "47.1"),
        ("MME (norm)", "64.4"),
    ):
        assert f"| {benchmark} | {score} |" in dpo
    for variant in (SINGLE_IMAGE, INTERLEAVE):
        results = load_card(variant).text.split("## Results")[1].split("##")[0]
        assert results.strip() == "Not published for this variant."


def test_cards_have_usage_limitations_and_safety_sections():
    for folder in VARIANT_FOLDERS:
        text = load_card(folder.name).text
        for section in ("## Usage", "## Limitations", "## Safety"):
            assert section in text, f"{folder.name}: {section}"
        assert f'"{folder.name}", trust_remote_code=True' in text


def test_cards_name_the_packages_loading_needs_timm_for_a_timm_tower():
    says = {}
    for folder in VARIANT_FOLDERS:
        text = " ".join(load_card(folder.name).text.split())
        tower = XGenMMConfig.from_pretrained(folder).vision_config.model_type
        says[folder.name] = (
            tower,
            "It loads with `transformers` alone through" in text,
            "`transformers` and `timm`" in text,
        )
    assert says["toy-world"] == ("timm_wrapper", False, True)
    assert says[DPO] == ("siglip_vision_model", True, False)
    assert all(alone != timm and timm == (tower == "timm_wrapper") for tower, alone, timm in says.values()), says


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """Hub folders of the tiny model in instruct (any-resolution) and base (fixed-size views) form, and local
    copies of the card images. The instruct model answers `<|end|>` at once, so that the snippets' 256-token
    generations end after one step."""
    root = tmp_path_factory.mktemp("published")
    folders = {}
    for mode in ("instruct", "base"):
        model, processor = tiny_instruct_model(), tiny_processor()
        if mode == "instruct":
            with torch.no_grad():
                model.lm_head.bias[processor.tokenizer.convert_tokens_to_ids("<|end|>")] = 1e4
        else:
            model.config.anyres = False
            processor.image_processor.anyres = False
        model.save_pretrained(root / f"{mode}-saved")
        processor.save_pretrained(root / f"{mode}-saved")
        folders[mode] = prepare_hub_folder(root / f"{mode}-saved", root / mode, "me/tiny")
    images = dict(zip(IMAGE_URLS, write_pngs(sample_images()[: len(IMAGE_URLS)], root)))
    return folders, images


def local(text: str, images: dict[str, str]) -> str:
    for url, path in images.items():
        text = text.replace(url, path)
    return text


@pytest.mark.parametrize("variant", [BASE, SINGLE_IMAGE, INTERLEAVE, "tiny-random"])
def test_usage_snippets_run(published, variant):
    folders, images = published
    folder = folders["base" if variant == BASE else "instruct"]
    card = model_card(XGenMMConfig.from_pretrained(folder), repo_id=str(folder), variant=variant)
    usage = card.text[card.text.index("## Usage") : card.text.index("## Serving")]  # the Serving section: test_vllm.py
    snippets = re.findall(r"```python\n(.*?)```", usage, flags=re.DOTALL)
    assert len(snippets) == 2
    for snippet in snippets:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(local(snippet, images), f"{variant} README.md", "exec"), {})
        assert printed.getvalue().endswith("\n")


def test_widget_examples_run_in_the_pipeline(published):
    folders, images = published
    for variant, mode in ((INTERLEAVE, "instruct"), (BASE, "base")):
        pipe = pipeline("image-text-to-text", model=str(folders[mode]), trust_remote_code=True, max_new_tokens=4)
        for example in load_card(variant).data.widget:
            if "messages" in example:
                messages = json.loads(local(json.dumps(example["messages"]), images))
                output = pipe(text=messages)[0]["generated_text"]
                assert output[-1]["role"] == "assistant"
            else:
                output = pipe(images=images[example["src"]], text=example["text"])[0]["generated_text"]
                assert output.startswith(example["text"])
