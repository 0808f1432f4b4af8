# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""What is known of each variant a `hub_configs/` folder describes: the released Salesforce models (facts of the
xGen-MM (BLIP-3) report and the releases, published results included) and the package's own small configurations.
Model cards (`model_card`) and their results (`card_results`) are written from these facts."""

from dataclasses import dataclass, field


# The numbers of in-context examples the report's few-shot results are given for (`VariantFacts.few_shot_results`).
REPORT_SHOTS = (0, 4, 8)


@dataclass(frozen=True)
class VariantFacts:
    """What a card says about one variant. Only facts of the xGen-MM report and the Salesforce releases go here; what
    they do not state (dataset names of most stages, results of most variants) is left empty and the card says so."""

    title: str
    summary: str
    training: str
    base_model: str | None = None
    license: str | None = None
    license_name: str | None = None
    license_link: str | None = None
    datasets: tuple[str, ...] = ()
    # Base: benchmark -> one score per number of shots of REPORT_SHOTS. DPO: (benchmark, score) pairs.
    few_shot_results: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    benchmark_results: tuple[tuple[str, str], ...] = ()
    multi_image: bool = False
    safety_tuned: bool = False
    released: bool = True
    random_weights: bool = False


def _salesforce(variant: str, **facts) -> VariantFacts:
    repo = f"Salesforce/{variant}"
    return VariantFacts(
        base_model=repo,
        # The license of the weights is the original repository's; the card links to it rather than restating it.
        license="other",
        license_name="salesforce-xgen-mm",
        license_link=f"https://huggingface.co/{repo}",
        **facts,
    )


FROZEN_VISION = "The SigLIP vision tower was frozen in all training stages."

VARIANTS: dict[str, VariantFacts] = {
    "xgen-mm-phi3-mini-base-r-v1.5": _salesforce(
        "xgen-mm-phi3-mini-base-r-v1.5",
        title="xGen-MM (BLIP-3) phi3-mini base r-v1.5",
        summary=(
            "The pretrained base model of Salesforce's xGen-MM (BLIP-3) v1.5 family (August 2024): a SigLIP vision "
            "tower, a perceiver resampler and the Phi-3-mini language model, pretrained on about 100B multimodal "
            "tokens. It is a few-shot in-context learner, not a chat model."
        ),
        training=f"Pretrained on about 100B multimodal tokens. {FROZEN_VISION}",
        few_shot_results={
            "VQAv2": (43.1, 66.3, 66.9),
            "TextVQA": (34.0, 54.2, 55.3),
            "OKVQA": (28.0, 48.9, 50.1),
            "COCO": (67.2, 107.6, 109.8),
            "NoCaps": (82.6, 100.8, 104.6),
            "TextCaps": (69.5, 89.9, 94.0),
        },
    ),
    "xgen-mm-phi3-mini-instruct-singleimg-r-v1.5": _salesforce(
        "xgen-mm-phi3-mini-instruct-singleimg-r-v1.5",
        title="xGen-MM (BLIP-3) phi3-mini instruct single-image r-v1.5",
        summary=(
            "The single-image instruction-tuned model of Salesforce's xGen-MM (BLIP-3) v1.5 family (August 2024): a "
            "SigLIP vision tower, a perceiver resampler and the Phi-3-mini language model, fine-tuned to answer "
            "questions about images in a chat, with any-resolution image input."
        ),
        training=f"Supervised fine-tuning on about 1M public instruction samples. {FROZEN_VISION}",
    ),
    "xgen-mm-phi3-mini-instruct-interleave-r-v1.5": _salesforce(
        "xgen-mm-phi3-mini-instruct-interleave-r-v1.5",
        title="xGen-MM (BLIP-3) phi3-mini instruct interleave r-v1.5",
        summary=(
            "The multi-image instruction-tuned model of Salesforce's xGen-MM (BLIP-3) v1.5 family (August 2024): a "
            "SigLIP vision tower, a perceiver resampler and the Phi-3-mini language model, fine-tuned to answer "
            "questions about one or several images interleaved with text, with any-resolution image input."
        ),
        training=(
            "Supervised fine-tuning on about 1M public instruction samples, then on interleaved multi-image "
            f"instruction data. {FROZEN_VISION}"
        ),
        multi_image=True,
    ),
    "xgen-mm-phi3-mini-instruct-dpo-r-v1.5": _salesforce(
        "xgen-mm-phi3-mini-instruct-dpo-r-v1.5",
        title="xGen-MM (BLIP-3) phi3-mini instruct DPO r-v1.5",
        summary=(
            "The preference-aligned instruct model of Salesforce's xGen-MM (BLIP-3) v1.5 family (August 2024): a "
            "SigLIP vision tower, a perceiver resampler and the Phi-3-mini language model, instruction-tuned, then "
            "aligned with DPO and safety-tuned, with any-resolution image input."
        ),
        training=(
            "Instruction-tuned, then aligned with DPO on VLFeedback (62.6k preference pairs; LoRA on about 2.5% of "
            "the language model's weights) and safety-tuned on VLGuard (2k unsafe and 5k safe samples). "
            f"{FROZEN_VISION}"
        ),
        datasets=("MMInstruction/VLFeedback", "ys-zong/VLGuard"),
        safety_tuned=True,
        benchmark_results=(
            ("VLGuard (lower is better)", "5.2"),
            ("HallusionBench", "56.6"),
            ("POPE", "86.8"),
            ("MMBench-dev", "76.4"),
            ("SEED-IMG", "72.1"),
            ("MMStar", "47.1"),
            ("MME (norm)", "64.4"),
        ),
    ),
    "tiny-random": VariantFacts(
        title="xGen-MM tiny random",
        summary=(
            "A tiny xGen-MM model with random weights and a 995-token tokenizer, for tests and examples: it has the "
            "layout of the instruct models (any-resolution views, chat template, `<|end|>` ends a turn) at a size "
            "that runs in milliseconds. Its answers are random text."
        ),
        training="None: the weights are random.",
        license="apache-2.0",
        released=False,
        random_weights=True,
    ),
    "toy-world": VariantFacts(
        title="xGen-MM toy world",
        summary=(
            "A small xGen-MM configuration (a timm ResNet tower on 32-pixel views, a 2-layer perceiver "
            "resampler and a 2-layer Phi-3 language model with the 995-token tokenizer) for the toy-world recipe: "
            "`xgenmm toy-world` pretrains it from random weights on synthetic coloured-shape scenes, fine-tunes it "
            "on single- and two-image questions and reports held-out exact-match accuracy, in minutes on a CPU. "
            "This folder holds the configuration only; the recipe writes the trained weights."
        ),
        training="None in this folder: `xgenmm toy-world --output-dir DIR` trains it (pretraining, then SFT).",
        license="apache-2.0",
        released=False,
        random_weights=True,
    ),
}


def variant_facts(variant: str | None, repo_id: str) -> VariantFacts:
    """The facts of a released variant, or those of a model this package saved that is none of them."""
    if variant is not None:
        if variant not in VARIANTS:
            raise ValueError(f"unknown xGen-MM variant {variant!r}; expected one of {sorted(VARIANTS)}")
        return VARIANTS[variant]
    return VariantFacts(
        title=repo_id.split("/")[-1],
        summary="An xGen-MM (BLIP-3) model (vision tower, perceiver resampler, language model) saved with `xgen-mm`.",
        training="Not documented.",
        released=False,
    )


__all__ = ["REPORT_SHOTS", "VARIANTS", "VariantFacts", "variant_facts"]
