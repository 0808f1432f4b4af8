"""Runs in the vLLM venv (not this project's): serves one Hub folder with `vllm.LLM` through vLLM's Transformers
modeling backend and writes the greedy token ids of a batch of requests to a JSON file.

    python vllm_worker.py REQUESTS.json

REQUESTS.json: {"folder": ..., "engine": {LLM keyword arguments}, "max_tokens": N, "output": "ids.json",
                "requests": [{"prompt": "...", "images": ["a.png", ...]}, ...]}

Imports only vLLM and Pillow: this project's packages are not installed there.
"""

import json
import sys
from pathlib import Path


def main() -> None:
    from PIL import Image
    from vllm import LLM, SamplingParams

    with open(sys.argv[1], encoding="utf-8") as reader:
        spec = json.load(reader)
    llm = LLM(model=spec["folder"], trust_remote_code=True, model_impl="transformers", **spec["engine"])
    prompts = []
    for request in spec["requests"]:
        prompt = {"prompt": request["prompt"]}
        if request["images"]:
            images = [Image.open(Path(path)) for path in request["images"]]
            prompt["multi_modal_data"] = {"image": images if len(images) > 1 else images[0]}
        prompts.append(prompt)
    params = SamplingParams(temperature=0.0, max_tokens=spec["max_tokens"])
    outputs = llm.generate(prompts, params, use_tqdm=False)
    Path(spec["output"]).write_text(json.dumps([list(output.outputs[0].token_ids) for output in outputs]))


if __name__ == "__main__":  # vLLM's engine starts worker processes that import this file again
    main()
