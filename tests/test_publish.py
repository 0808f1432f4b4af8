"""Publishing: the Hub folder `xgenmm publish` writes is self-contained and reproduces the model without this package;
uploads reach a local stand-in for the Hub byte for byte, through the endpoints `create_repo` and `upload_folder` use
and no others; bad inputs are refused before anything is written."""

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import pytest
import torch
from huggingface_hub import EvalResult, ModelCard
from transformers import AutoProcessor, GenerationConfig

from fake_hub import FakeHub
from hub_helpers import chat, sample_images, tiny_instruct_model, tiny_processor, write_pngs
from isolation import run_isolated
from modeling_xgenmm import XGenMMForConditionalGeneration
from modeling_xgenmm.cli import main
from modeling_xgenmm.hub.card_results import add_card_results
from modeling_xgenmm.hub.model_card import folder_card
from modeling_xgenmm.hub.publish import PublishError, prepare_hub_folder, publish
from paths import HUB_CONFIGS, TINY_RANDOM


REPO_ID = "me/tiny-xgenmm"
CODE_FILES = {
    "compat_xgenmm.py",
    "configuration_xgenmm.py",
    "modeling_xgenmm.py",
    "processing_xgenmm.py",
    "image_processing_xgenmm.py",
    "tokenization_xgenmm.py",
}
HUB_FOLDER_FILES = CODE_FILES | {
    "README.md",
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The tiny instruct model and its processor, saved with save_pretrained."""
    model, processor = tiny_instruct_model(seed=1), tiny_processor()
    folder = tmp_path_factory.mktemp("saved") / "tiny-xgenmm"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model, processor, folder


def folder_files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.iterdir()}


def xgenmm_command() -> list[str]:
    script = shutil.which("xgenmm", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "modeling_xgenmm.cli"]


def imported_modules(source: str) -> list[tuple[int, str]]:
    """(level, module) of every import of a Python file; level > 0 for relative imports."""
    imports = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            imports.append((node.level, node.module or ""))
        elif isinstance(node, ast.Import):
            imports.extend((0, alias.name) for alias in node.names)
    return imports


def defined_classes(source: str) -> set[str]:
    return {node.name for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ClassDef)}


def auto_map_targets(auto_map: dict) -> list[str]:
    """The "module.Class" references of an auto_map (values are strings, or lists of them for tokenizers and image
    processors with several backends)."""
    targets = []
    for value in auto_map.values():
        values = value.values() if isinstance(value, dict) else value if isinstance(value, list) else [value]
        targets.extend(target for target in values if target)
    return targets


def test_dry_run_writes_a_self_contained_folder_that_reproduces_logits_without_the_package(saved, tmp_path, capsys):
    model, processor, source = saved
    output_dir = tmp_path / "hub-folder"
    assert main(["publish", str(source), REPO_ID, "--dry-run", "--output-dir", str(output_dir)]) == 0
    assert f"wrote the Hub folder for {REPO_ID} to {output_dir}; nothing was uploaded" in capsys.readouterr().out

    files = folder_files(output_dir)
    assert set(files) == HUB_FOLDER_FILES
    assert files["model.safetensors"] == (source / "model.safetensors").read_bytes()
    for name in CODE_FILES:
        for level, module in imported_modules(files[name].decode()):
            if level:
                assert level == 1 and f"{module}.py" in CODE_FILES, f"{name} imports .{module}, not a sibling file"
            else:
                assert module.split(".")[0] not in {"modeling_xgenmm", "xgenmm_processing"}, f"{name} imports {module}"
    config = json.loads(files["config.json"])
    assert set(config["auto_map"]) == {
        "AutoConfig",
        "AutoModel",
        "AutoModelForCausalLM",
        "AutoModelForImageTextToText",
    }
    processor_config = json.loads(files["processor_config.json"])
    assert processor_config["auto_map"] == {"AutoProcessor": "processing_xgenmm.XGenMMProcessor"}
    tokenizer_config = json.loads(files["tokenizer_config.json"])
    for auto_map in (
        config["auto_map"],
        processor_config["image_processor"]["auto_map"],
        tokenizer_config["auto_map"],
    ):
        for target in auto_map_targets(auto_map):
            module, class_name = target.split(".")
            assert class_name in defined_classes(files[f"{module}.py"].decode()), target
    tokenizer = processor.tokenizer
    assert json.loads(files["generation_config.json"])["eos_token_id"] == [
        tokenizer.convert_tokens_to_ids("<|end|>"),
        tokenizer.eos_token_id,
    ]
    card = ModelCard.load(output_dir / "README.md")
    assert card.data.pipeline_tag == "image-text-to-text" and card.data.library_name == "transformers"
    assert f'pipeline("image-text-to-text", model="{REPO_ID}", trust_remote_code=True)' in card.text

    images = write_pngs(sample_images()[:2], tmp_path)
    conversation = chat("Compare the images.", *({"type": "image", "path": path} for path in images))
    inputs = processor.apply_chat_template(
        conversation, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    with torch.no_grad():
        expected = model(**inputs).logits
    result = run_isolated(
        f"""
        import json, torch
        from transformers import AutoModelForImageTextToText, AutoProcessor
        folder = {str(output_dir)!r}
        model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
        inputs = processor.apply_chat_template(
            {conversation!r}, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )
        with torch.no_grad():
            torch.save(model(**inputs).logits, "logits.pt")
        print(json.dumps({{"model": type(model).__module__, "processor": type(processor).__module__}}))
        """,
        cwd=tmp_path,
    )
    assert result["model"].startswith("transformers_modules.") and result["processor"].startswith(
        "transformers_modules."
    )
    assert torch.equal(torch.load(tmp_path / "logits.pt"), expected)


@pytest.mark.parametrize("tokenizer_apart", [False, True], ids=["tokenizer in the variant folder", "tokenizer apart"])
def test_a_hub_configs_variant_with_separate_weights_gives_the_same_model(saved, tmp_path, tokenizer_apart):
    """A variant folder of hub_configs holds configuration and processing files; the weights (and for the released
    variants the tokenizer) come from elsewhere."""
    model, processor, weights = saved
    variant, tokenizer = TINY_RANDOM, None
    if tokenizer_apart:
        variant = shutil.copytree(TINY_RANDOM, tmp_path / "variant", ignore=shutil.ignore_patterns("tokenizer*"))
        tokenizer = TINY_RANDOM
    output_dir = prepare_hub_folder(
        variant, tmp_path / "hub-folder", REPO_ID, weights=weights, tokenizer=tokenizer, variant="tiny-random"
    )
    assert set(folder_files(output_dir)) == HUB_FOLDER_FILES
    generation_config = json.loads((output_dir / "generation_config.json").read_text())
    assert generation_config.pop("transformers_version")
    assert generation_config == json.loads((TINY_RANDOM / "generation_config.json").read_text())
    assert "# xGen-MM tiny random" in (output_dir / "README.md").read_text()

    images, text = sample_images()[:2], "<|user|>\n<image> <image> Compare.<|end|>\n<|assistant|>\n"
    batch = processor(images=images, text=text, return_tensors="pt")
    republished = AutoProcessor.from_pretrained(output_dir)(images=images, text=text, return_tensors="pt")
    assert republished.keys() == batch.keys() and all(torch.equal(republished[key], batch[key]) for key in batch)
    reloaded = XGenMMForConditionalGeneration.from_pretrained(output_dir).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(**batch).logits, model(**batch).logits)


def test_an_instruct_model_saved_without_end_of_turn_eos_is_published_to_stop_there(tmp_path):
    model, processor = tiny_instruct_model(seed=2), tiny_processor()
    end_id = processor.tokenizer.convert_tokens_to_ids("<|end|>")
    with torch.no_grad():
        model.lm_head.bias[end_id] = 1e4  # every step's greedy token is <|end|>
    model.generation_config = GenerationConfig.from_model_config(model.config)  # eos <|endoftext|>, not <|end|>
    model.save_pretrained(tmp_path / "saved")
    processor.save_pretrained(tmp_path / "saved")
    prepare_hub_folder(tmp_path / "saved", tmp_path / "hub-folder", REPO_ID)

    inputs = processor.apply_chat_template(
        chat("Hello"), add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    new_tokens = {}
    for name in ("saved", "hub-folder"):
        reloaded = XGenMMForConditionalGeneration.from_pretrained(tmp_path / name).eval()
        output = reloaded.generate(**inputs, max_new_tokens=5, do_sample=False)
        new_tokens[name] = output[0, inputs["input_ids"].shape[1] :].tolist()
    assert new_tokens == {"saved": [end_id] * 5, "hub-folder": [end_id]}


def remove(folder: Path, *names: str) -> Path:
    for name in names:
        (folder / name).unlink()
    return folder


@pytest.mark.parametrize(
    "case, message",
    [
        ("no weights", "has no model.safetensors or model.safetensors.index.json: the weights are missing"),
        ("no processor", "has no processor_config.json: save the processor there too"),
        ("no tokenizer", "no tokenizer files (tokenizer_config.json with tokenizer.json or tokenizer.model) in"),
        ("invalid repo id", "'me/not a repo!' is not a valid Hub repo id"),
        ("weights of another config", "-base-r-v1.5: missing (624): model.language_model.layers.10."),
        ("original checkpoint", "is an original Salesforce checkpoint; convert it first"),
        ("output folder in use", "exists and is not an empty folder"),
    ],
)
def test_bad_inputs_are_refused_before_anything_is_written(saved, tmp_path, case, message):
    source, repo_id, weights, output_dir = tmp_path / "source", REPO_ID, None, tmp_path / "out"
    shutil.copytree(saved[2], source)
    if case == "no weights":
        remove(source, "model.safetensors")
    elif case == "no processor":
        remove(source, "processor_config.json")
    elif case == "no tokenizer":
        remove(source, "tokenizer_config.json", "tokenizer.json")
    elif case == "invalid repo id":
        repo_id = "me/not a repo!"
    elif case == "weights of another config":
        source, weights = HUB_CONFIGS / "xgen-mm-phi3-mini-base-r-v1.5", tmp_path / "source"
    elif case == "original checkpoint":
        (source / "config.json").write_text(json.dumps({"model_type": "xgenmm", "vision_encoder_config": {}}))
    elif case == "output folder in use":
        output_dir.mkdir()
        (output_dir / "notes.txt").write_text("keep me")
    with pytest.raises(PublishError) as error:
        prepare_hub_folder(source, output_dir, repo_id, weights=weights)
    assert message in str(error.value)
    assert not output_dir.exists() or [path.name for path in output_dir.iterdir()] == ["notes.txt"]


def test_cli_reports_errors_with_the_subcommand_and_exit_status_1(saved, tmp_path, capsys):
    source = shutil.copytree(saved[2], tmp_path / "source")
    remove(source, "model.safetensors")
    with pytest.raises(SystemExit) as exit_info:
        main(["publish", str(source), REPO_ID, "--dry-run"])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.startswith("xgenmm publish: error: ")


def test_cli_uploads_exactly_the_folder_through_create_repo_and_upload_folder(saved, tmp_path):
    output_dir = tmp_path / "hub-folder"
    with FakeHub() as hub:
        environment = {
            **os.environ,
            "HF_ENDPOINT": hub.endpoint,
            "HF_HOME": str(tmp_path / "hf_home"),
            # Telemetry would also fetch the agent-harness registry from the endpoint for its user-agent header.
            "HF_HUB_DISABLE_TELEMETRY": "1",
        }
        environment.pop("HF_TOKEN", None)
        result = subprocess.run(
            [*xgenmm_command(), "publish", str(saved[2]), REPO_ID, "--output-dir", str(output_dir)],
            capture_output=True,
            text=True,
            env=environment,
            timeout=300,
        )
    assert result.returncode == 0, result.stderr
    assert f"Published {saved[2]} to {hub.endpoint}/{REPO_ID}" in result.stdout
    assert hub.repos[REPO_ID] == folder_files(output_dir)
    assert set(hub.repos[REPO_ID]) == HUB_FOLDER_FILES
    commit_path = f"/api/models/{REPO_ID}"
    # upload_folder validates README.md, then (hf_xet installed) its pipelined upload asks for upload modes, and,
    # every file being "regular", commits them inline: no LFS or xet storage request.
    assert hub.requests == [
        ("POST", "/api/repos/create"),
        ("POST", "/api/validate-yaml"),
        ("POST", f"{commit_path}/preupload/main"),
        ("POST", f"{commit_path}/commit/main"),
    ]
    assert hub.unexpected == []


def test_publish_to_an_existing_repo_without_hf_xet(saved, tmp_path, monkeypatch):
    """The upload path of huggingface_hub without `hf_xet` (one `create_commit`, which validates README.md again),
    into a repo that exists already (`create_repo` answers 409)."""
    with FakeHub() as hub:
        hub.repos[REPO_ID] = {"old.txt": b"old"}
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.endpoint)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_TELEMETRY", True)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
        monkeypatch.delenv("HF_TOKEN", raising=False)
        commit = publish(saved[2], REPO_ID, output_dir=tmp_path / "hub-folder", commit_message="First release")
    assert commit.commit_url.startswith(f"{hub.endpoint}/{REPO_ID}/commit/")
    assert hub.repos[REPO_ID] == {"old.txt": b"old", **folder_files(tmp_path / "hub-folder")}
    assert [commit["summary"] for commit in hub.commits] == ["First release"]
    commit_path = f"/api/models/{REPO_ID}"
    assert hub.requests == [
        ("POST", "/api/repos/create"),
        ("POST", "/api/validate-yaml"),
        ("POST", "/api/validate-yaml"),
        ("POST", f"{commit_path}/preupload/main"),
        ("POST", f"{commit_path}/commit/main"),
    ]
    assert hub.unexpected == []


def test_cli_reports_a_refused_upload_with_exit_status_1(saved, tmp_path, monkeypatch, capsys):
    with FakeHub() as hub:
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.endpoint)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_TELEMETRY", True)
        with pytest.raises(SystemExit) as exit_info:
            main(["publish", str(saved[2]), "someone-else/tiny-xgenmm"])
    assert exit_info.value.code == 1
    error = capsys.readouterr().err  # after the progress bar of the weights copy
    assert (
        "xgenmm publish: error: creating the Hub repo someone-else/tiny-xgenmm failed: the Hub answered HTTP 403"
        in error
    )
    assert "You don't have the rights to create a model under the namespace someone-else" in error
    assert hub.repos == {}


def test_publish_help_describes_arguments(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["publish", "--help"])
    assert exit_info.value.code == 0
    usage = capsys.readouterr().out
    assert "FOLDER REPO_ID" in usage and "--dry-run" in usage and "xgen-mm-phi3-mini-base-r-v1.5" in usage


def test_results_in_the_folders_card_are_published_with_it(saved, tmp_path):
    folder = shutil.copytree(saved[2], tmp_path / "evaluated")
    measured = EvalResult(
        task_type="image-text-to-text", task_name="pope", dataset_type="pope", dataset_name="pope",
        metric_type="pope_f1_score", metric_value=0.861,
    )  # fmt: skip
    add_card_results(folder_card(folder), [measured], "evaluated").save(folder / "README.md")
    published = prepare_hub_folder(folder, tmp_path / "hub", "me/evaluated")
    card = ModelCard.load(published / "README.md")
    assert [(result.task_name, result.metric_value) for result in card.data.eval_results] == [("pope", 0.861)]
    assert card.data.model_name == "evaluated"
    assert 'pipeline("image-text-to-text", model="me/evaluated", trust_remote_code=True)' in card.text


def test_written_folders_are_readable_by_other_users(saved, tmp_path):
    umask = os.umask(0o022)
    try:
        folder = prepare_hub_folder(saved[2], tmp_path / "hub", "me/tiny")
    finally:
        os.umask(umask)
    # What any folder made by the user gets (mkdtemp's 0700 kept other users and services out).
    assert folder.stat().st_mode & 0o777 == 0o755


def test_command_help_shows_defaults_in_full_sentences(capsys):
    helps = {}
    for command in ("convert", "toy-world", "eval"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        helps[command] = " ".join(capsys.readouterr().out.split())
    assert "e.g. 5GB or 500MB (default: 5GB); the conversion's peak memory is about one such file" in helps["convert"]
    assert "(default: bfloat16)" in helps["convert"]
    assert "OUTPUT_DIR/model (default: runs/toy-world)" in helps["toy-world"]
    assert "where lmms-eval writes its results (default: runs/eval)" in helps["eval"]
