# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Peak memory of `xgenmm convert` relative to the size of what it writes.

Builds mid-size RANDOM checkpoints in the original Salesforce format (full SigLIP so400m with its pooling head, the
full perceiver resampler, Phi-3 with the full 32064-row vocabulary but few layers), sharded with an index like the
released repositories, converts each in a fresh process through the `xgenmm` command line, and prints a table: input
and output weight sizes, the converting process's peak RSS increase over its baseline after imports, and that peak
relative to the output size (target: <= 1.3, i.e. never a second full copy of the weights).

    python -m benchmarks.convert_memory [--workdir DIR] [--phi3-layers 1]
"""

import argparse
import json
import tempfile
from pathlib import Path

import torch
from huggingface_hub import split_torch_state_dict_into_shards
from safetensors.torch import save_file
from transformers import Phi3Config, Phi3ForCausalLM, SiglipVisionConfig, SiglipVisionModel

from modeling_xgenmm.configuration_xgenmm import SIGLIP_SO400M_PATCH14_384, XGENMM_V1_5_GRID_PINPOINTS

from .peak_memory import peak_rss_in_fresh_process


GB = 1024**3
# The released config's SigLIP settings (its checkpoints keep the attention-pooling head, see `original_shapes`); their
# preprocessor lists the grids as (width, height).
SIGLIP_SO400M = {key: value for key, value in SIGLIP_SO400M_PATCH14_384.items() if key != "vision_use_head"}
INITIAL_TOKENIZER_LEN = 32012
GRIDS_WH = [[width, height] for height, width in XGENMM_V1_5_GRID_PINPOINTS]


def original_shapes(phi3_layers: int, siglip_layers: int) -> dict[str, torch.Size]:
    """Key -> shape of an original checkpoint, from the transformers modules the original code built."""
    with torch.device("meta"):
        siglip = SiglipVisionModel(
            SiglipVisionConfig(**{**SIGLIP_SO400M, "num_hidden_layers": siglip_layers}, vision_use_head=True)
        )
        phi3 = Phi3ForCausalLM(Phi3Config(num_hidden_layers=phi3_layers))
    shapes = {f"vlm.vision_encoder.{key}": value.shape for key, value in siglip.state_dict().items()}
    width, inner, text_width = SIGLIP_SO400M["hidden_size"], 16 * 96, phi3.config.hidden_size
    perceiver = {
        "latents": (128, width),
        "norm.weight": (width,),
        "norm.bias": (width,),
        "projection.weight": (text_width, width),
        "projection.bias": (text_width,),
    }
    for layer in range(6):
        perceiver |= {
            f"layers.{layer}.0.norm_media.weight": (width,),
            f"layers.{layer}.0.norm_media.bias": (width,),
            f"layers.{layer}.0.norm_latents.weight": (width,),
            f"layers.{layer}.0.norm_latents.bias": (width,),
            f"layers.{layer}.0.to_q.weight": (inner, width),
            f"layers.{layer}.0.to_kv.weight": (2 * inner, width),
            f"layers.{layer}.0.to_out.weight": (width, inner),
            f"layers.{layer}.1.0.weight": (width,),
            f"layers.{layer}.1.0.bias": (width,),
            f"layers.{layer}.1.1.weight": (4 * width, width),
            f"layers.{layer}.1.3.weight": (width, 4 * width),
        }
    shapes |= {f"vlm.vision_tokenizer.{key}": torch.Size(shape) for key, shape in perceiver.items()}
    shapes |= {f"vlm.lang_model.{key}": value.shape for key, value in phi3.state_dict().items()}
    vocab = phi3.config.vocab_size
    shapes |= {
        "vlm.lang_model.lm_head.bias": torch.Size([vocab]),
        "vlm.lang_model.model.embed_tokens.additional_embedding.weight": torch.Size([3, text_width]),
        "vlm.lang_model.lm_head.additional_fc.weight": torch.Size([3, text_width]),
        "vlm.lang_model.lm_head.additional_fc.bias": torch.Size([3]),
    }
    return shapes


def write_random_original(folder: Path, phi3_layers: int, siglip_layers: int, dtype: torch.dtype) -> int:
    """Writes config.json, preprocessor_config.json and random weights in 500MB shards; returns the weight bytes."""
    folder.mkdir(parents=True)
    config = {
        "model_type": "xgenmm",
        "architectures": ["XGenMMModelForConditionalGeneration"],
        "vision_encoder_config": {
            "model_name": "google/siglip-so400m-patch14-384",
            "image_aspect_ratio": "anyres",
            "anyres_patch_sampling": True,
            "anyres_grids": GRIDS_WH,
            "siglip_vision_config": {**SIGLIP_SO400M, "num_hidden_layers": siglip_layers},
        },
        "vision_tokenizer_config": {"vis_feature_dim": 1152, "lang_embedding_dim": 3072, "num_vis_tokens": 128},
        "text_config": {
            "model_type": "phi3",
            "initial_tokenizer_len": INITIAL_TOKENIZER_LEN,
            "num_hidden_layers": phi3_layers,
            "sliding_window": 2047,
        },
        "torch_dtype": str(dtype).removeprefix("torch."),
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / "preprocessor_config.json").write_text(json.dumps({"grids": GRIDS_WH, "size": [384, 384]}))
    shapes = original_shapes(phi3_layers, siglip_layers)
    with torch.device("meta"):
        meta = {key: torch.empty(shape, dtype=dtype) for key, shape in shapes.items()}
    split = split_torch_state_dict_into_shards(meta, max_shard_size="500MB")
    generator = torch.Generator().manual_seed(0)
    for filename, keys in split.filename_to_tensors.items():
        shard = {key: torch.randn(meta[key].shape, generator=generator).to(dtype) for key in keys}
        save_file(shard, folder / filename, metadata={"format": "pt"})
    index = {"metadata": split.metadata, "weight_map": split.tensor_to_filename}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return split.metadata["total_size"]


def convert_and_measure(original: Path, output: Path, dtype: str, max_shard_size: str) -> dict:
    """Converts in a fresh process through the `xgenmm` command line; baseline and peak RSS, and the output size."""
    measured = peak_rss_in_fresh_process(
        "from modeling_xgenmm.cli import main",
        "result = {'code': main(sys.argv[1:])}",
        ["convert", str(original), str(output), "--dtype", dtype, "--max-shard-size", max_shard_size],
    )
    measured["output"] = sum(path.stat().st_size for path in output.glob("*.safetensors"))
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, help="where to write the checkpoints (default: a temporary folder)")
    parser.add_argument("--phi3-layers", type=int, default=1)
    args = parser.parse_args()

    # (input dtype, SigLIP layers, output dtype, output shard limit)
    scenarios = [
        ("bfloat16", 27, "bfloat16", "5GB"),
        ("bfloat16", 27, "bfloat16", "500MB"),
        ("float32", 4, "bfloat16", "5GB"),
        ("float32", 4, "float32", "5GB"),
    ]
    rows, input_sizes = [], {}
    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        for index, (input_dtype, siglip_layers, output_dtype, shard_size) in enumerate(scenarios):
            original = Path(workdir) / f"original-{input_dtype}-{siglip_layers}"
            if original not in input_sizes:
                dtype = getattr(torch, input_dtype)
                input_sizes[original] = write_random_original(original, args.phi3_layers, siglip_layers, dtype)
            measured = convert_and_measure(original, Path(workdir) / f"converted-{index}", output_dtype, shard_size)
            increase = measured["peak"] - measured["baseline"]
            rows.append(
                (
                    f"{input_dtype}->{output_dtype}",
                    f"{siglip_layers}",
                    shard_size,
                    input_sizes[original] / GB,
                    measured["output"] / GB,
                    increase / GB,
                    increase / measured["output"],
                )
            )

    header = (
        "conversion",
        "SigLIP layers",
        "max shard",
        "input GB",
        "output GB",
        "peak RSS increase GB",
        "peak/output",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(f"{value:.2f}" if isinstance(value, float) else value for value in row) + " |")


if __name__ == "__main__":
    main()
