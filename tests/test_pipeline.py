"""`pipeline("image-text-to-text")` on xGen-MM: chat messages with image blocks, batches of conversations, the plain
`images=`/`text=` form, generation arguments and streaming. Every answer is checked against the reference path,
`model.generate` + `processor.post_process_image_text_to_text` (greedy unless said otherwise)."""

import base64
import threading

import pytest
import torch
from transformers import TextIteratorStreamer, pipeline

from hub_helpers import (
    answers_to_chats,
    chat,
    generate_answers,
    sample_images,
    tiny_instruct_model,
    tiny_processor,
    write_pngs,
)
from isolation import run_isolated


pytestmark = pytest.mark.core


GREEDY = {"max_new_tokens": 8, "min_new_tokens": 4, "do_sample": False}


@pytest.fixture(scope="module")
def tiny():
    model, processor = tiny_instruct_model(), tiny_processor()
    # Generation parameters given when the pipeline is built apply to every call.
    return model, processor, pipeline("image-text-to-text", model=model, processor=processor, **GREEDY)


def image_blocks(images) -> list[dict]:
    return [{"type": "image", "image": image} for image in images]


def test_pipeline_from_a_saved_folder_in_a_process_without_the_package_answers_like_generate(tmp_path):
    model, processor = tiny_instruct_model(), tiny_processor()
    folder = tmp_path / "tiny-xgenmm"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    images = sample_images()
    paths = write_pngs(images, tmp_path)
    two_images = chat("What do these two images have in common?", *image_blocks(images[:2]))
    batch = [
        chat("Describe the image.", *image_blocks(images[2:3])),
        chat("Which one is larger?", *image_blocks([images[3], images[0]])),
        chat("What color is the circle?", *image_blocks(images[1:2])),
    ]
    expected_single = answers_to_chats(model, processor, [two_images], **GREEDY)[0]
    expected_batch = answers_to_chats(model, processor, batch, **GREEDY)

    result = run_isolated(
        f"""
        import json
        from PIL import Image
        from transformers import pipeline

        images = [Image.open(path).convert("RGB") for path in {paths!r}]

        def chat(text, *indices):
            blocks = [{{"type": "image", "image": images[index]}} for index in indices]
            return [{{"role": "user", "content": [*blocks, {{"type": "text", "text": text}}]}}]

        pipe = pipeline("image-text-to-text", model={str(folder)!r}, trust_remote_code=True, **{GREEDY!r})
        single = pipe(text=chat("What do these two images have in common?", 0, 1), return_full_text=False)
        chats = [chat("Describe the image.", 2), chat("Which one is larger?", 3, 0)]
        chats.append(chat("What color is the circle?", 1))
        batch = pipe(text=chats, batch_size=3, return_full_text=False)
        print(json.dumps({{
            "model_class": type(pipe.model).__module__,
            "single": single[0]["generated_text"],
            "batch": [answer[0]["generated_text"] for answer in batch],
        }}))
        """,
        cwd=tmp_path,
    )
    assert result["model_class"].startswith("transformers_modules.")
    assert result["single"] and result["single"] == expected_single
    assert result["batch"] == expected_batch
    # The answers differ from one another: the comparison above can tell inputs apart.
    assert len({expected_single, *expected_batch}) == 4


def test_chat_output_appends_the_answer_as_an_assistant_message(tiny):
    model, processor, pipe = tiny
    conversation = chat("Describe the image.", *image_blocks(sample_images()[:1]))
    expected = answers_to_chats(model, processor, [conversation], **GREEDY)[0]
    output = pipe(text=conversation)[0]["generated_text"]
    assert output[:-1] == conversation
    assert output[-1] == {"role": "assistant", "content": expected}


def test_images_and_text_form_with_image_markers_answers_like_generate(tiny):
    model, processor, pipe = tiny
    images = sample_images()
    prompt = "<|user|>\n<image> <image> Compare the two images.<|end|>\n<|assistant|>\n"
    inputs = processor(images=images[:2], text=prompt, return_tensors="pt")
    expected = generate_answers(model, processor, inputs, **GREEDY)[0]
    full = pipe(images=images[:2], text=prompt)
    assert full == [{"input_text": prompt, "generated_text": prompt + expected}]

    prompts = ["<image>A picture of", "<image><image>Two pictures of"]
    nested = [images[2:3], images[0:2]]
    inputs = processor(images=nested, text=prompts, padding=True, return_tensors="pt")
    expected_batch = generate_answers(model, processor, inputs, **GREEDY)
    answers = pipe(images=nested, text=prompts, return_full_text=False)
    # A continuation of plain text keeps the space that separates it from the prompt; the processor strips it.
    assert [answer["generated_text"].lstrip() for answer in answers] == expected_batch


def test_path_and_base64_image_blocks_answer_like_pil_images(tiny, tmp_path):
    model, processor, pipe = tiny
    images = sample_images()[:2]
    first_path, second_path = write_pngs(images, tmp_path)
    with open(second_path, "rb") as file:
        encoded = base64.b64encode(file.read()).decode()
    expected = answers_to_chats(model, processor, [chat("Compare.", *image_blocks(images))], **GREEDY)[0]
    blocks = [{"type": "image", "path": first_path}, {"type": "image", "base64": encoded}]
    answer = pipe(text=chat("Compare.", *blocks), return_full_text=False)[0]["generated_text"]
    assert answer == expected


def test_generation_arguments_reach_generate(tiny):
    model, processor, pipe = tiny
    conversation = chat("Describe the image.", *image_blocks(sample_images()[:1]))
    sampling = {"do_sample": True, "top_k": 5, "temperature": 0.7, "max_new_tokens": 6, "min_new_tokens": 6}
    torch.manual_seed(7)
    expected = answers_to_chats(model, processor, [conversation], **sampling)[0]
    torch.manual_seed(7)
    answer = pipe(text=conversation, generate_kwargs=sampling, return_full_text=False)[0]["generated_text"]
    assert answer == expected != answers_to_chats(model, processor, [conversation], **GREEDY)[0]

    prompt = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True, return_dict=True)
    output = pipe(text=conversation, max_new_tokens=3, generate_kwargs={"min_new_tokens": 3}, return_tensors=True)
    assert len(output[0]["generated_token_ids"]) == len(prompt["input_ids"][0]) + 3


def test_text_iterator_streamer_streams_the_final_answer(tiny):
    model, processor, pipe = tiny
    conversation = chat("Describe the image.", *image_blocks(sample_images()[2:3]))
    streamer = TextIteratorStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=60)
    outputs = []
    worker = threading.Thread(
        target=lambda: outputs.append(
            pipe(text=conversation, generate_kwargs={**GREEDY, "streamer": streamer}, return_full_text=False)
        )
    )
    worker.start()
    chunks = list(streamer)
    worker.join()
    answer = outputs[0][0]["generated_text"]
    assert len([chunk for chunk in chunks if chunk]) > 1
    assert "".join(chunks) == answer == answers_to_chats(model, processor, [conversation], **GREEDY)[0]
