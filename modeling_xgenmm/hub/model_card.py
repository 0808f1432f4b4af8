# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Model cards (README.md) of xGen-MM Hub folders, built with `huggingface_hub.ModelCard` from the model's config and
what is known of each variant (`variants`; `python -m modeling_xgenmm.hub.write_configs` rewrites the cards of
`hub_configs/`)."""

from pathlib import Path

import torch
from huggingface_hub import ModelCard, ModelCardData

from ..checkpoint.contents import is_instruct
from ..configuration_xgenmm import XGenMMConfig
from ..modeling_xgenmm import XGenMMForConditionalGeneration
from .card_results import report_results
from .variants import REPORT_SHOTS, VariantFacts, variant_facts


TEMPLATE_PATH = Path(__file__).with_name("model_card_template.md")

# Images the transformers documentation uses, for the widget examples and the usage snippets.
TRANSFORMERS_ASSETS = "https://huggingface.co/datasets/hf-internal-testing/transformers-synthetic-assets/resolve/main"
IMAGE_URLS = (
    f"{TRANSFORMERS_ASSETS}/images/statue_of_liberty.jpg",
    f"{TRANSFORMERS_ASSETS}/images/skyline_chicago.jpg",
    "https://huggingface.co/datasets/Narsil/image_dummy/raw/main/parrots.png",
)

SALESFORCE_WEIGHTS_NOTE = (
    "The weights are Salesforce's release, converted into this format without change (numerically identical outputs); "
    "they are under the terms of the original repository, [{repo}](https://huggingface.co/{repo})."
)

COMMON_LIMITATIONS = (
    "Like other vision-language models it can describe things that are not in the image, misread text and "
    "miscount objects; check answers that matter.",
    "`trust_remote_code=True` runs this repository's Python files; pin a `revision` to run code you have read.",
)


def model_card(config: XGenMMConfig, repo_id: str, variant: str | None = None) -> ModelCard:
    """The model card of a Hub folder holding a model with `config`, published as `repo_id`.

    Args:
        config: the model's configuration; it decides the architecture table and instruct (any-resolution) vs
            base (fixed-size views, few-shot) usage.
        repo_id: the Hub repo id the usage snippets load.
        variant: a key of `VARIANTS` (a folder of `hub_configs/`), or `None` for another model.
    """
    facts = variant_facts(variant, repo_id)
    instruct = is_instruct(config)
    card_data = ModelCardData(
        language=["en"],
        license=facts.license,
        license_name=facts.license_name,
        license_link=facts.license_link,
        library_name="transformers",
        pipeline_tag="image-text-to-text",
        # `vllm`: the engine that serves the folder (its Transformers modeling backend; the card's Serving section)
        tags=["xgen-mm", "blip-3", "multimodal", "vision-language", "custom_code", "vllm"]
        + (["conversational"] if instruct else []),
        base_model=facts.base_model,
        datasets=list(facts.datasets) or None,
        widget=widget_examples(instruct, facts.multi_image),
    )
    published = report_results(facts.few_shot_results, facts.benchmark_results)
    if published:  # the report's numbers as structured results (model-index), with their source
        card_data.eval_results = published
        card_data.model_name = facts.title
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE_PATH),
        repo_id=repo_id,
        title=facts.title,
        summary=facts.summary,
        weights_note=SALESFORCE_WEIGHTS_NOTE.format(repo=facts.base_model) if facts.base_model else "",
        requirements=requirements(config),
        instruct=instruct,
        image_urls=IMAGE_URLS,
        multi_image=facts.multi_image,
        view_size=config.image_size,
        image_tokens=image_token_range(config),
        training=facts.training,
        results=results_markdown(facts),
        limitations=limitations(config, facts),
        safety=safety(facts),
        parameters=parameter_counts(config),
        vision_tower=describe_vision_tower(config),
        language_model=describe_language_model(config),
        latents=config.perceiver_config.num_latents,
    )


def widget_examples(instruct: bool, multi_image: bool) -> list[dict]:
    """Hub widget examples: chat `messages` (OpenAI-style `image_url` and `text` parts) for instruct models, an image
    `src` with a few-shot style `text` prompt for the base model."""
    if not instruct:
        return [{"example_title": "Caption", "src": IMAGE_URLS[2], "text": "<image>A picture of"}]

    def user_turn(text: str, *urls: str) -> list[dict]:
        parts = [{"type": "image_url", "image_url": {"url": url}} for url in urls]
        return [{"role": "user", "content": [*parts, {"type": "text", "text": text}]}]

    examples = [
        {"example_title": "Describe", "messages": user_turn("Describe this image in detail.", IMAGE_URLS[0])},
        {"example_title": "Question", "messages": user_turn("Which city is this?", IMAGE_URLS[1])},
    ]
    if multi_image:
        examples.append(
            {
                "example_title": "Compare two images",
                "messages": user_turn("What do these two images have in common?", IMAGE_URLS[0], IMAGE_URLS[1]),
            }
        )
    return examples


def results_markdown(facts: VariantFacts) -> str:
    if facts.few_shot_results:
        rows = [f"| {name} | {' | '.join(map(str, scores))} |" for name, scores in facts.few_shot_results.items()]
        *fewer, most = map(str, REPORT_SHOTS)
        return "\n".join(
            [
                f"Published few-shot results of the release ({', '.join(fewer)} and {most} in-context examples):",
                "",
                "| benchmark | " + " | ".join(f"{shots}-shot" for shots in REPORT_SHOTS) + " |",
                "|---|" + "---|" * len(REPORT_SHOTS),
                *rows,
            ]
        )
    if facts.benchmark_results:
        rows = [f"| {name} | {score} |" for name, score in facts.benchmark_results]
        return "\n".join(["Published results of the release:", "", "| benchmark | score |", "|---|---|", *rows])
    if facts.released:
        return "Not published for this variant."
    return "Not published."


def image_token_range(config: XGenMMConfig) -> str:
    """Tokens one image takes: `num_latents` per view, views = the global view plus the crops of its grid."""
    latents = config.perceiver_config.num_latents
    if not config.anyres:
        return str(latents)
    counts = [
        (1 + (height // config.image_size) * (width // config.image_size)) * latents
        for height, width in config.image_grid_pinpoints
    ]
    return f"{min(counts)} to {max(counts)}" if min(counts) != max(counts) else str(counts[0])


def limitations(config: XGenMMConfig, facts: VariantFacts) -> list[str]:
    specific = []
    if facts.random_weights:
        specific.append("The weights are random: the answers mean nothing. Use it to test code, not to use a model.")
    if not is_instruct(config):
        specific.append("Not instruction-tuned: it continues few-shot prompts and does not follow chat instructions.")
    specific.append(
        f"Every image takes {image_token_range(config)} tokens of the {config.text_config.max_position_embeddings}-"
        "token context, which bounds the number of images in one prompt."
    )
    sliding_window = getattr(config.text_config, "sliding_window", None)
    if sliding_window and facts.released:
        specific.append(
            f"Attention uses the language model's sliding window of {sliding_window} tokens; the original "
            f"implementation attended over the whole context, so the two agree on prompts of up to {sliding_window} "
            "tokens."
        )
    return [*specific, *COMMON_LIMITATIONS]


def safety(facts: VariantFacts) -> str:
    if facts.safety_tuned:
        tuning = (
            "This variant was safety-tuned on VLGuard, which lowers but does not remove harmful answers to unsafe "
            "image-text requests (see the VLGuard score above)."
        )
    elif facts.released:
        tuning = "The release describes safety tuning for the DPO variant only; this variant had none."
    elif facts.random_weights:
        tuning = "This model had no safety tuning."
    else:
        tuning = "No safety tuning is documented for this model."
    return (
        f"{tuning} The model can produce offensive, biased or false statements, including about people in images. "
        "Do not use it to identify people or for decisions about them, and evaluate it on your own data and "
        "policies before deploying it."
    )


def parameter_counts(config: XGenMMConfig) -> dict[str, str]:
    """Parameters of each part, counted on a meta-device model built from `config` (no weights are allocated)."""
    with torch.device("meta"):
        model = XGenMMForConditionalGeneration(config)
    return {name: f"{value:,}" for name, value in model.num_parameters_by_part().items()}


# Vision towers whose transformers class needs a package of its own, by the vision config's model type.
TOWER_PACKAGES = {"timm_wrapper": "timm"}


def requirements(config: XGenMMConfig) -> str:
    """What loading the folder needs, in the card's words: `transformers`, and the package its vision tower's class
    needs where there is one (a timm backbone: `timm`)."""
    package = TOWER_PACKAGES.get(config.vision_config.model_type)
    if package is None:
        return "`transformers` alone"
    return f"`transformers` and `{package}` (its vision tower is a {package} model; `pip install {package}`)"


def describe_vision_tower(config: XGenMMConfig) -> str:
    vision = config.vision_config
    if vision.model_type == "siglip_vision_model":
        return (
            f"SigLIP vision transformer: {vision.num_hidden_layers} layers, width {vision.hidden_size}, "
            f"{vision.image_size}-px views in {vision.patch_size}-px patches"
        )
    return f"`{vision.model_type}` backbone, {config.image_size}-px views"


def describe_language_model(config: XGenMMConfig) -> str:
    text = config.text_config
    name = "Phi-3" if text.model_type == "phi3" else f"`{text.model_type}`"
    head = "biased output head" if config.lm_head_bias else "output head"
    return (
        f"{name} decoder: {text.num_hidden_layers} layers, width {text.hidden_size}, {text.vocab_size}-token "
        f"vocabulary, {head}"
    )


def folder_card(folder: str | Path) -> ModelCard:
    """The model card of a model folder: its README.md when it has one, else the card of a model with its config,
    named after the folder (`model_card`)."""
    folder = Path(folder)
    if (folder / "README.md").is_file():
        return ModelCard.load(folder / "README.md")
    return model_card(XGenMMConfig.from_pretrained(folder), repo_id=folder.resolve().name)


def hub_config_card(folder: Path) -> ModelCard:
    """The card of a `hub_configs/<variant>` folder; its snippets load the repo id `<variant>`."""
    return model_card(XGenMMConfig.from_pretrained(folder), repo_id=folder.name, variant=folder.name)


__all__ = ["folder_card", "hub_config_card", "model_card"]
