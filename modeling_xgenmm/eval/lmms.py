# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""xGen-MM models in lmms-eval, registered through its `lmms_eval.models` entry point (setup.cfg), so that after
`pip install -e ".[eval]"`:

    lmms-eval --model xgenmm --model_args pretrained=PATH --tasks mme,pope --batch_size 8
    lmms-eval --model xgenmm --model_args pretrained=PATH,num_shots=4 --tasks textvqa_val   # base, few-shot
    lmms-eval --model xgenmm --force_simple --model_args pretrained=PATH --tasks ...        # likelihood tasks

`xgenmm` resolves to the chat model (lmms-eval builds the prompts as messages with images); `--force_simple` picks
the same model in lmms-eval's plain mode, which multiple-choice tasks scored by likelihood need. Both take either
request layout; a base model runs in plain mode with the report's few-shot protocol (`modeling_xgenmm.eval.fewshot`).

Model arguments: `pretrained` (folder or Hub id; folders of this package and `trust_remote_code` folders alike),
`device` (default: cuda when available), `dtype` (`auto`, `float32`, `bfloat16`, `float16`), `batch_size`,
`trust_remote_code`, `attn_implementation`, `max_new_tokens` (default for tasks that set none), `num_shots` and
`shots_seed` (base models).
"""

import torch
from lmms_eval.api.instance import GenerationResult, TokenCounts
from lmms_eval.api.model import lmms
from lmms_eval.models.registry_v2 import ModelManifest
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

from ..checkpoint.contents import is_instruct
from .fewshot import Shot, draw_shots, few_shot_prompt, image_markers


GENERATION_KWARGS = {"max_new_tokens", "temperature", "top_p", "top_k", "num_beams", "do_sample", "repetition_penalty"}
DTYPES = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _flag(value) -> bool:
    return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")


class XGenMM(lmms):
    """lmms-eval's chat model for xGen-MM (`lmms-eval --model xgenmm`)."""

    is_simple = False

    def __init__(
        self,
        pretrained: str,
        device: str | None = None,
        dtype: str = "auto",
        batch_size: int | str = 1,
        trust_remote_code: bool | str = False,
        attn_implementation: str | None = None,
        max_new_tokens: int | str = 128,
        num_shots: int | str = 0,
        shots_seed: int | str = 1234,
        max_batch_size: int | str | None = None,  # lmms-eval passes it; batches are `batch_size` prompts
        **unused,
    ) -> None:
        super().__init__()
        if unused:
            raise ValueError(f"unknown model_args for xgenmm: {sorted(unused)} (see modeling_xgenmm.eval.lmms)")
        if dtype not in DTYPES:
            raise ValueError(f"dtype is one of {sorted(DTYPES)}, got {dtype!r}")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        remote = _flag(trust_remote_code)
        self.batch_size = int(batch_size)
        self.max_new_tokens = int(max_new_tokens)
        self.num_shots = int(num_shots)
        self.shots_seed = int(shots_seed)
        config = AutoConfig.from_pretrained(pretrained, trust_remote_code=remote)
        self.instruct = is_instruct(config)
        if self.num_shots and self.instruct:
            raise ValueError(
                "num_shots is the base model's in-context protocol; this is an instruct (chat) model: evaluate it "
                "zero-shot or use a base checkpoint"
            )
        self.model = AutoModelForImageTextToText.from_pretrained(
            pretrained,
            config=config,
            dtype=DTYPES[dtype],
            trust_remote_code=remote,
            attn_implementation=attn_implementation,
        ).to(self.device)
        self.model.eval()
        self.processor = AutoProcessor.from_pretrained(pretrained, trust_remote_code=remote)
        self.tokenizer = self.processor.tokenizer
        if not self.instruct:
            self.is_simple = True  # tasks are built as plain text; lmms-eval reads this from the instance

    # --- prompts ----------------------------------------------------------------------------------------------------

    def _conversation(self, text: str, visuals: list) -> list[dict]:
        """A plain-mode prompt as one user turn: its images first (as lmms-eval's chat tasks place them), the text
        after, with any `<image>` the text holds kept where it is."""
        pieces = text.split(self.processor.image_token)
        content = [{"type": "image", "image": image} for image in visuals[: max(len(visuals) - len(pieces) + 1, 0)]]
        inline = iter(visuals[len(content) :])
        for index, piece in enumerate(pieces):
            if index:
                content.append({"type": "image", "image": next(inline)})
            if piece:
                content.append({"type": "text", "text": piece})
        return [{"role": "user", "content": content}]

    def _base_prompt(self, text: str, visuals: list, doc_id: int, doc_to_visual) -> tuple[str, list]:
        """The base model's prompt text and its images in order: `num_shots` shots of the task's training split
        (drawn per query with `shots_seed`), then the query."""
        shots = []
        if self.num_shots:
            task = getattr(doc_to_visual, "__self__", None)
            config = getattr(task, "config", None)
            split = getattr(config, "fewshot_split", None) or getattr(config, "training_split", None)
            if split is None:
                raise ValueError(
                    f"num_shots={self.num_shots} draws shots from the task's training split, but task "
                    f"{getattr(config, 'task', task)!r} declares no training_split or fewshot_split"
                )
            pool = task.dataset[split]
            for index in draw_shots(len(pool), self.num_shots, self.shots_seed * 1_000_003 + doc_id):
                doc = pool[index]
                target = task.doc_to_target(doc)
                target = target[0] if isinstance(target, (list, tuple)) else target
                answer = f"{config.target_delimiter}{target}"
                shots.append(
                    Shot(images=list(task.doc_to_visual(doc) or []), text=task.doc_to_text(doc), answer=answer)
                )
        if self.processor.image_token in text:  # images placed in the text: each becomes the released marker run
            text = text.replace(self.processor.image_token, image_markers(1, self.processor.image_seq_length))
            prompt = few_shot_prompt(shots, 0, text, self.processor.image_seq_length)
        else:
            prompt = few_shot_prompt(shots, len(visuals), text, self.processor.image_seq_length)
        return prompt, [image for shot in shots for image in shot.images] + list(visuals)

    def _texts_and_images(self, requests: list[tuple], add_generation_prompt: bool = True):
        """Prompt texts (chat template applied) and their images of (text or messages, visuals, doc_id,
        doc_to_visual) requests."""
        texts, images = [], []
        for prompt, visuals, doc_id, doc_to_visual in requests:
            if self.instruct:
                conversation = prompt if isinstance(prompt, list) else self._conversation(prompt, list(visuals))
                texts.append(
                    self.processor.apply_chat_template(
                        conversation, add_generation_prompt=add_generation_prompt, tokenize=False
                    )
                )
                images.append(
                    [block["image"] for m in conversation for block in m["content"] if block["type"] == "image"]
                )
            else:
                if isinstance(prompt, list):  # messages of a chat task: the base template renders them
                    visuals = [block["image"] for m in prompt for block in m["content"] if block["type"] == "image"]
                    prompt = self.processor.apply_chat_template(prompt, tokenize=False)
                text, prompt_images = self._base_prompt(prompt, list(visuals), doc_id, doc_to_visual)
                texts.append(text)
                images.append(prompt_images)
        return texts, images

    def _encode(self, texts: list[str], images: list[list]):
        inputs = self.processor(
            text=texts,
            images=images if any(images) else None,
            padding=True,
            padding_side="left",
            return_tensors="pt",
        ).to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        return inputs

    # --- lmms-eval interface ----------------------------------------------------------------------------------------

    def _prompt_of(self, args: tuple) -> tuple:
        """(prompt, visuals, gen_kwargs, doc_id, doc_to_visual) of a generate_until request in either layout."""
        if callable(args[1]):  # chat: (ctx, doc_to_messages, gen_kwargs, doc_id, task, split)
            ctx, doc_to_messages, gen_kwargs, doc_id, task, split = args
            messages = doc_to_messages(self.task_dict[task][split][doc_id])
            return self._normal_messages(messages), [], gen_kwargs, doc_id, doc_to_messages
        ctx, gen_kwargs, doc_to_visual, doc_id, task, split = args  # plain
        visuals = doc_to_visual(self.task_dict[task][split][doc_id]) if doc_to_visual is not None else []
        return ctx, [visual for visual in visuals or [] if visual is not None], gen_kwargs, doc_id, doc_to_visual

    @staticmethod
    def _normal_messages(messages: list[dict]) -> list[dict]:
        """lmms-eval's messages (`{"type": "image", "url": PIL or path}` blocks) in the processor's form."""
        normal = []
        for message in messages:
            content = message["content"]
            if isinstance(content, str):
                content = [{"type": "text", "text": content}]
            blocks = []
            for block in content:
                if block.get("type") == "image":
                    blocks.append({"type": "image", "image": block.get("url", block.get("image", block.get("path")))})
                elif block.get("type") == "text":
                    blocks.append({"type": "text", "text": block["text"]})
                else:
                    raise ValueError(
                        f"xGen-MM takes text and image blocks; lmms-eval gave a {block.get('type')!r} block"
                    )
            normal.append({"role": message["role"], "content": blocks})
        return normal

    def _generation_kwargs(self, gen_kwargs: dict) -> tuple[dict, list[str]]:
        kwargs = {key: value for key, value in gen_kwargs.items() if key in GENERATION_KWARGS}
        kwargs.setdefault("max_new_tokens", self.max_new_tokens)
        temperature = kwargs.pop("temperature", 0) or 0
        kwargs.setdefault("do_sample", temperature > 0)
        if kwargs["do_sample"]:
            kwargs["temperature"] = temperature
        until = gen_kwargs.get("until") or []
        return kwargs, [until] if isinstance(until, str) else list(until)

    @torch.no_grad()
    def generate_until(self, requests) -> list[GenerationResult]:
        results: list[GenerationResult | None] = [None] * len(requests)
        prompts = [self._prompt_of(request.args) for request in requests]  # decodes each document's images once
        groups: dict[str, list[int]] = {}
        for index, prompt in enumerate(prompts):
            groups.setdefault(repr(sorted(prompt[2].items())), []).append(index)
        for indices in groups.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                batch = [prompts[index] for index in chunk]
                kwargs, until = self._generation_kwargs(batch[0][2])
                inputs = self._encode(*self._texts_and_images([(p[0], p[1], p[3], p[4]) for p in batch]))
                generated = self.model.generate(**inputs, **kwargs)[:, inputs["input_ids"].shape[1] :]
                for index, ids in zip(chunk, generated):
                    text = self.processor.decode(ids, skip_special_tokens=True)
                    for stop in until:
                        if stop and stop in text:
                            text = text.split(stop)[0]
                    kept = (
                        int((ids != self.tokenizer.pad_token_id).sum())
                        if self.tokenizer.pad_token_id is not None
                        else len(ids)
                    )
                    results[index] = GenerationResult(text=text, token_counts=TokenCounts(output_tokens=kept))
        return results

    @torch.no_grad()
    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        """log P(continuation | context) summed over the continuation's tokens, and whether greedy decoding would
        have produced exactly those tokens; the context is prompted as in `generate_until`."""
        results = []
        for request in requests:
            ctx, continuation, doc_to_visual, doc_id, task, split = request.args
            doc = self.task_dict[task][split][doc_id]
            if callable(continuation):
                continuation = continuation(doc)
                continuation = continuation[0] if isinstance(continuation, (list, tuple)) else continuation
            visuals = [v for v in (doc_to_visual(doc) if doc_to_visual is not None else []) or [] if v is not None]
            results.append(self.continuation_logprob(ctx, str(continuation), visuals, doc_id, doc_to_visual))
        return results

    def continuation_logprob(self, ctx, continuation: str, visuals: list, doc_id: int = 0, doc_to_visual=None):
        """(log-probability, is_greedy) of `continuation` after the prompt of `ctx` (text or messages) and `visuals`.
        The continuation's tokens are those of the whole text after the prompt's (lm-eval's convention where the
        two meet)."""
        (text,), (images,) = self._texts_and_images([(ctx, visuals, doc_id, doc_to_visual)])
        prompt_length = self._encode([text], [images])["input_ids"].shape[1]
        inputs = self._encode([text + continuation], [images])
        target = inputs["input_ids"][0, prompt_length:]
        if target.numel() == 0:
            raise ValueError(f"the continuation {continuation!r} adds no token to the prompt")
        logits = self.model(**inputs).logits[0, prompt_length - 1 : -1].float()
        scores = logits.log_softmax(-1)
        logprob = scores.gather(-1, target[:, None]).sum().item()
        return logprob, bool((scores.argmax(-1) == target).all())

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("xgenmm does not implement lmms-eval's multi-round generation")


class XGenMMSimple(XGenMM):
    """The same model in lmms-eval's plain mode (`--force_simple`), for tasks scored by likelihood."""

    is_simple = True


def manifests() -> ModelManifest:
    """The payload of the `lmms_eval.models` entry point."""
    return ModelManifest(
        model_id="xgenmm",
        chat_class_path="modeling_xgenmm.eval.lmms.XGenMM",
        simple_class_path="modeling_xgenmm.eval.lmms.XGenMMSimple",
        aliases=("xgen_mm",),
    )


__all__ = ["XGenMM", "XGenMMSimple", "manifests"]
