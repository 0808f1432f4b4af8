"""The converter's processing files: the image processor with the released grids and, given the original Phi-3
tokenizer, a processor that reproduces the original processor's recorded outputs."""

import json
import shutil

import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoProcessor, GenerationConfig

from modeling_xgenmm import XGenMMConfig, XGenMMForConditionalGeneration
from modeling_xgenmm.checkpoint.convert import convert_original_checkpoint
from modeling_xgenmm.hub.publish import prepare_hub_folder
from original_fixtures import fixture_tokenizer
from paths import original_fixtures_dir
from processing_helpers import fixture_float, fixture_pixels, write_original_phi3_folder


pytestmark = pytest.mark.core


@pytest.mark.parametrize("variant", ["instruct", "base"])
def test_converted_image_processor_carries_the_released_grids(variant, tmp_path):
    fixtures = original_fixtures_dir()
    original = fixtures / "checkpoints" / variant
    output = convert_original_checkpoint(original, tmp_path / "converted", dtype=torch.float32)
    grids_wh = json.loads((original / "preprocessor_config.json").read_text())["grids"]
    image_processor = AutoImageProcessor.from_pretrained(output, backend="pil")
    assert image_processor.anyres == (grids_wh is not None)
    if grids_wh is not None:
        assert image_processor.image_grid_pinpoints == [[height, width] for width, height in grids_wh]
    assert not (output / "tokenizer.json").exists()


def test_converted_processor_reproduces_the_original_processor_and_token_ids(tmp_path):
    fixtures = original_fixtures_dir()
    original = tmp_path / "original"
    shutil.copytree(fixtures / "checkpoints" / "instruct", original)
    write_original_phi3_folder(tmp_path / "phi3", fixture_tokenizer(fixtures))
    for tokenizer_file in (tmp_path / "phi3").iterdir():
        shutil.copyfile(tokenizer_file, original / tokenizer_file.name)

    output = convert_original_checkpoint(original, tmp_path / "converted", dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(output, backend="pil")
    token_map = json.loads((fixtures / "token_map.json").read_text())
    added = ["<image>", "<image placeholder>", "<|endofchunk|>"]
    assert processor.tokenizer.convert_tokens_to_ids(added) == [token_map[token] for token in added]

    index = json.loads((fixtures / "image_processing" / "index.json").read_text())["images"]
    pixels = fixture_pixels(fixtures)
    latents = XGenMMConfig.from_pretrained(original).perceiver_config.num_latents
    for key in sorted(index)[:3]:
        inputs = processor(images=[Image.open(fixtures / index[key]["file"])], text="<image>", return_tensors="pt")
        expected = fixture_float(pixels[index[key]["anyres"]["tensor"]])
        assert torch.equal(inputs["pixel_values"][0, : len(expected)], expected), key
        assert not inputs["pixel_values"][0, len(expected) :].any(), key
        assert int((inputs["input_ids"] == token_map["<image>"]).sum()) == expected.shape[0] * latents


def test_the_converter_and_the_publisher_stop_an_instruct_model_at_the_same_eos_ids(tmp_path):
    fixtures = original_fixtures_dir()
    original = shutil.copytree(fixtures / "checkpoints" / "instruct", tmp_path / "original")
    write_original_phi3_folder(tmp_path / "phi3", fixture_tokenizer(fixtures))
    for tokenizer_file in (tmp_path / "phi3").iterdir():
        shutil.copyfile(tokenizer_file, original / tokenizer_file.name)
    # A generation config that stops at <|endoftext|> only, as the released one once did.
    text_eos = json.loads((original / "config.json").read_text())["text_config"]["eos_token_id"]
    generation = json.loads((original / "generation_config.json").read_text())
    (original / "generation_config.json").write_text(json.dumps({**generation, "eos_token_id": text_eos}))

    converted = convert_original_checkpoint(original, tmp_path / "converted", dtype=torch.float32)
    # The same model saved by save_pretrained (read from the original folder directly), then published.
    saved = tmp_path / "saved"
    model = XGenMMForConditionalGeneration.from_pretrained(original)
    model.generation_config = GenerationConfig.from_pretrained(original)
    model.save_pretrained(saved)
    AutoProcessor.from_pretrained(converted).save_pretrained(saved)
    published = prepare_hub_folder(saved, tmp_path / "published", "me/tiny")

    end_id = json.loads((fixtures / "token_map.json").read_text())["<|end|>"]
    eos = {folder.name: GenerationConfig.from_pretrained(folder).eos_token_id for folder in (converted, published)}
    assert eos == {"converted": [end_id, text_eos], "published": [end_id, text_eos]}
