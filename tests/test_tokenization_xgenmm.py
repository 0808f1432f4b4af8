"""XGenMMTokenizer: the tiny tokenizer mirrors the released id layout; Phi-3 behaviour; original-format folders load
and gain the three image tokens."""

import json

import pytest
from transformers import AutoTokenizer

import modeling_xgenmm  # noqa: F401  (registers the Auto classes)
from modeling_xgenmm.hub.write_configs import PHI3_ADDED_TOKENS, build_tiny_tokenizer
from paths import PHI3_TOKENIZER, TINY_RANDOM
from processing_helpers import write_original_phi3_folder
from xgenmm_processing import XGenMMTokenizer


pytestmark = pytest.mark.core


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(TINY_RANDOM)


def test_tiny_tokenizer_has_the_layout_and_flags_of_the_released_one(tokenizer):
    # The released tokenizer files: Phi-3's added tokens end its vocabulary of L ids, xGen-MM's three follow at L.
    released = XGenMMTokenizer.from_pretrained(PHI3_TOKENIZER)
    tiny_length, released_length = (len(tok) - 3 for tok in (tokenizer, released))

    def layout(tok, length):
        return {
            id_ - length: (token.content, token.rstrip, token.lstrip, token.content in tok.all_special_tokens)
            for id_, token in tok.added_tokens_decoder.items()
            if id_ >= length - len(PHI3_ADDED_TOKENS)
        }

    assert layout(tokenizer, tiny_length) == layout(released, released_length)
    assert tokenizer.convert_tokens_to_ids(["<unk>", "<s>", "</s>", "<0x00>", "<0x0A>"]) == [0, 1, 2, 3, 13]
    assert released.convert_tokens_to_ids(["<unk>", "<s>", "</s>", "<0x00>", "<0x0A>"]) == [0, 1, 2, 3, 13]


def test_layout_of_the_byte_and_learned_ranges(tokenizer):
    assert tokenizer.convert_ids_to_tokens([0, 1, 2, 3, 13, 258]) == [
        "<unk>",
        "<s>",
        "</s>",
        "<0x00>",
        "<0x0A>",
        "<0xFF>",
    ]
    assert tokenizer.convert_ids_to_tokens(list(range(980, 992))) == PHI3_ADDED_TOKENS
    learned = tokenizer.convert_ids_to_tokens(list(range(259, 980)))
    assert not any(token.startswith("<0x") for token in learned)
    # The corpus is about coloured shapes: whole words of it are single pieces.
    assert {"▁red", "▁circle", "▁triangle", "▁image", "▁assistant", "▁yellow"} <= set(learned)


def test_builder_reproduces_the_committed_tokenizer(tmp_path):
    build_tiny_tokenizer().save_pretrained(tmp_path)
    built, committed = (json.loads((folder / "tokenizer.json").read_text()) for folder in (tmp_path, TINY_RANDOM))
    assert built["model"]["vocab"] == committed["model"]["vocab"]
    assert built["model"]["merges"] == committed["model"]["merges"]
    assert built["added_tokens"] == committed["added_tokens"]


def test_special_tokens_and_released_settings(tokenizer):
    assert (tokenizer.bos_token, tokenizer.bos_token_id) == ("<s>", 1)
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == ("<|endoftext|>", 980)
    assert (tokenizer.pad_token, tokenizer.pad_token_id) == ("<pad>", 991)
    assert (tokenizer.unk_token, tokenizer.unk_token_id) == ("<unk>", 0)
    assert (tokenizer.image_token, tokenizer.image_token_id) == ("<image>", 992)
    assert (tokenizer.image_placeholder_token, tokenizer.image_placeholder_token_id) == ("<image placeholder>", 993)
    assert (tokenizer.end_of_chunk_token, tokenizer.end_of_chunk_token_id) == ("<|endofchunk|>", 994)
    assert tokenizer.padding_side == "left" and tokenizer.model_max_length == 4096
    assert tokenizer.add_bos_token is False and tokenizer.add_eos_token is False


def test_encodes_chat_layout_as_the_original_without_bos(tokenizer):
    # The original tokenizer's layout: a leading "▁" before the role token, the newline after a role token or <|end|>
    # taken by that token (rstrip), the one after <image> kept.
    ids = tokenizer("<|user|>\n<image>\nWhat color is the star?<|end|>\n<|assistant|>\n")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids[:5]) == ["▁", "<|user|>", "<image>", "<0x0A>", "W"]
    assert tokenizer.convert_ids_to_tokens(ids[-2:]) == ["<|end|>", "<|assistant|>"]
    assert tokenizer.convert_ids_to_tokens(ids[6:9]) == ["▁color", "▁is", "▁the"]
    assert tokenizer.bos_token_id not in ids


def test_byte_fallback_round_trips_text_outside_the_vocabulary(tokenizer):
    text = "Zebra émoji 🙂 naïve\ttab"
    ids = tokenizer(text)["input_ids"]
    byte_tokens = ["<0xC3>", "<0xA9>", "<0xF0>", "<0x9F>", "<0x99>", "<0x82>", "<0xAF>", "<0x09>"]
    assert set(tokenizer.convert_tokens_to_ids(byte_tokens)) <= set(ids)
    assert 0 not in ids  # never <unk>: every byte has a token
    assert tokenizer.decode(ids) == text


def test_decode_skips_special_tokens(tokenizer):
    ids = tokenizer("<|assistant|>\nA red star.<|end|>\n<image><|endofchunk|><pad>")["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "A red star."


def test_save_and_reload_keeps_everything(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["auto_map"]["AutoTokenizer"][0] == "tokenization_xgenmm.XGenMMTokenizer"
    assert (tmp_path / "tokenization_xgenmm.py").is_file()
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "<|user|>\n<image> <image> Compare them.<|end|>\n"
    assert reloaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert reloaded.image_token_id == 992 and reloaded.padding_side == "left" and len(reloaded) == 995


def test_saving_after_a_truncating_call_does_not_save_the_truncation(tokenizer, tmp_path):
    text = "There is a red circle and a blue star in the image."
    assert len(tokenizer(text, truncation=True, max_length=4, padding="max_length")["input_ids"]) == 4
    tokenizer.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "tokenizer.json").read_text())
    assert saved["truncation"] is None and saved["padding"] is None
    assert AutoTokenizer.from_pretrained(tmp_path)(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert len(tokenizer(text)["input_ids"]) > 4


def test_loads_an_original_phi3_folder_and_appends_the_image_tokens(tokenizer, tmp_path):
    folder = tmp_path / "phi3"
    write_original_phi3_folder(folder, tokenizer)
    original = AutoTokenizer.from_pretrained(folder)
    assert type(original).__name__ == "LlamaTokenizer" and len(original) == 992
    assert original.convert_tokens_to_ids("<image>") == 0  # unknown there

    loaded = XGenMMTokenizer.from_pretrained(folder)
    assert len(loaded) == 995
    assert loaded.convert_tokens_to_ids(["<image>", "<image placeholder>", "<|endofchunk|>"]) == [992, 993, 994]
    assert (loaded.image_token_id, loaded.end_of_chunk_token_id) == (992, 994)
    assert loaded.convert_tokens_to_ids(["<|end|>", "<|user|>", "<pad>"]) == [987, 990, 991]
    text = "<|user|>\n<image>\nHow many red circles are there?<|end|>\n<|assistant|>\n"
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]  # no BOS, same pieces
