# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Chat templates of the xGen-MM variants. `build_hub_processing.py` writes them as `chat_template.jinja` into each
folder of `hub_configs/`; the processor reads them from there (they are not needed at import time).

Instruct variants (Phi-3 layout, no BOS)::

    <|system|>\\n{system}<|end|>\\n<|user|>\\n{user}<|end|>\\n<|assistant|>\\n{assistant}<|end|>\\n

- Without a system message the released default system prompt is used.
- Message content is a string, or a list of `{"type": "text", "text": ...}` / `{"type": "image", ...}` blocks
  rendered in order with nothing between them. An image block renders as `<image>` followed by a newline when its
  message holds exactly one image, and by a space when it holds several, so one image plus a question gives the
  released prompt `<|user|>\\n<image>\\n{question}<|end|>\\n` and several images give `<image> <image> {question}`.
- Each assistant turn's content and its `<|end|>\\n` sit inside `{% generation %}` (assistant-only loss masks);
  `add_generation_prompt=True` appends `<|assistant|>\\n`, so a prompt is a byte prefix of prompt + completion.

Base variant (few-shot, no roles in the text): each user turn renders its images as bare `<image>` and its text as
is; each assistant turn renders its text followed by `<|endofchunk|>` (inside `{% generation %}`). A 2-shot prompt::

    <image>A picture of a red circle.<|endofchunk|><image>A picture of a blue star.<|endofchunk|><image>A picture of

which is `BASE_FEW_SHOT_EXAMPLE` below. The processor expands every `<image>` to the image's feature tokens; the
original base demo's `<image>` + 127 `<image placeholder>` form is accepted too and counts as one image.
"""

XGENMM_DEFAULT_SYSTEM_PROMPT = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, "
    "and polite answers to the user's questions."
)

INSTRUCT_CHAT_TEMPLATE = (
    "{#- xGen-MM instruct (Phi-3 layout, no BOS). An image renders as '<image>' + newline when its message has"
    " exactly one image, as '<image>' + space when it has several; text blocks render as is. -#}\n"
    "{%- macro render_content(content) -%}\n"
    "{%- if content is string -%}{{- content -}}\n"
    "{%- else -%}\n"
    "{%- set image_separator = '\\n' if (content | selectattr('type', 'equalto', 'image') | list | length) == 1"
    " else ' ' -%}\n"
    "{%- for block in content -%}\n"
    "{%- if block['type'] == 'image' -%}{{- '<image>' + image_separator -}}\n"
    "{%- elif block['type'] == 'text' -%}{{- block['text'] -}}\n"
    "{%- else -%}{{- raise_exception('xGen-MM messages hold text and image blocks, got a ' + block['type']"
    " + ' block') -}}\n"
    "{%- endif -%}\n"
    "{%- endfor -%}\n"
    "{%- endif -%}\n"
    "{%- endmacro -%}\n"
    "{%- if messages[0]['role'] != 'system' -%}\n"
    "{{- '<|system|>\\n" + XGENMM_DEFAULT_SYSTEM_PROMPT.replace("'", "\\'") + "<|end|>\\n' -}}\n"
    "{%- endif -%}\n"
    "{%- for message in messages -%}\n"
    "{%- if message['role'] == 'assistant' -%}\n"
    "{{- '<|assistant|>\\n' -}}\n"
    "{%- generation -%}{{- render_content(message['content']) + '<|end|>\\n' -}}{%- endgeneration -%}\n"
    "{%- elif message['role'] in ['system', 'user'] -%}\n"
    "{{- '<|' + message['role'] + '|>\\n' + render_content(message['content']) + '<|end|>\\n' -}}\n"
    "{%- else -%}\n"
    "{{- raise_exception('xGen-MM roles are system, user and assistant, got ' + message['role']) -}}\n"
    "{%- endif -%}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}{{- '<|assistant|>\\n' -}}{%- endif -%}\n"
)

BASE_CHAT_TEMPLATE = (
    "{#- xGen-MM base (few-shot): user turns render images as '<image>' and text as is; assistant turns render"
    " their text + '<|endofchunk|>'. -#}\n"
    "{%- macro render_content(content) -%}\n"
    "{%- if content is string -%}{{- content -}}\n"
    "{%- else -%}\n"
    "{%- for block in content -%}\n"
    "{%- if block['type'] == 'image' -%}{{- '<image>' -}}\n"
    "{%- elif block['type'] == 'text' -%}{{- block['text'] -}}\n"
    "{%- else -%}{{- raise_exception('xGen-MM messages hold text and image blocks, got a ' + block['type']"
    " + ' block') -}}\n"
    "{%- endif -%}\n"
    "{%- endfor -%}\n"
    "{%- endif -%}\n"
    "{%- endmacro -%}\n"
    "{%- for message in messages -%}\n"
    "{%- if message['role'] == 'assistant' -%}\n"
    "{%- generation -%}{{- render_content(message['content']) + '<|endofchunk|>' -}}{%- endgeneration -%}\n"
    "{%- elif message['role'] == 'user' -%}{{- render_content(message['content']) -}}\n"
    "{%- else -%}\n"
    "{{- raise_exception('the xGen-MM base model takes user and assistant turns, got ' + message['role']) -}}\n"
    "{%- endif -%}\n"
    "{%- endfor -%}\n"
)

# A 2-shot captioning prompt for the base model: one `<image>` per shot, each answer closed by `<|endofchunk|>`.
BASE_FEW_SHOT_EXAMPLE = (
    "<image>A picture of a red circle.<|endofchunk|><image>A picture of a blue star.<|endofchunk|><image>A picture of"
)
