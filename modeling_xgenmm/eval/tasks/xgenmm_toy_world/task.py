# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""The toy-world lmms-eval task: the held-out split of `modeling_xgenmm.toy_world.recipe.held_out_rows` (the rows the
package's own evaluation scores), rendered in memory, and a training split of other seeds for few-shot prompts."""

from datasets import Dataset, DatasetDict
from lmms_eval.api.task import ConfigurableMessagesTask

from modeling_xgenmm.eval.tasks import interleaved
from modeling_xgenmm.toy_world.data import split_rows
from modeling_xgenmm.toy_world.evaluation import normalised_answer
from modeling_xgenmm.toy_world.recipe import held_out_rows
from modeling_xgenmm.toy_world.settings import ToyWorldSettings


def as_doc(row: dict) -> dict:
    (turn,) = [message for message in row["messages"] if message["role"] == "user"]
    question = "".join(block["text"] for block in turn["content"] if block["type"] == "text")
    return {"question": question, "images": row["images"], "answer": row["answer"], "kind": row["kind"]}


def docs(rows) -> Dataset:
    return Dataset.from_list([as_doc(rows[index]) for index in range(len(rows))])


class ToyWorldTask(ConfigurableMessagesTask):
    def __init__(self, config: dict | None = None, **kwargs):
        # lmms-eval hands a python task its whole YAML, `class` included, which its TaskConfig does not take.
        super().__init__(config={key: value for key, value in (config or {}).items() if key != "class"}, **kwargs)

    def download(self, dataset_kwargs=None) -> None:
        kwargs = dict(dataset_kwargs or {})
        seed = int(kwargs.get("seed", 0))
        count = int(kwargs.get("eval_rows", 300))
        held_out = interleaved(held_out_rows(ToyWorldSettings(eval_rows=count, seed=seed)), count)
        shots = split_rows("few_shot_questions", int(kwargs.get("shot_rows", 64)), seed)
        self.dataset = DatasetDict({"test": docs(held_out), "train": docs(shots)})
        self.dataset_no_image = DatasetDict(
            {name: split.remove_columns("images") for name, split in self.dataset.items()}
        )


def doc_to_visual(doc: dict) -> list:
    return [image.convert("RGB") for image in doc["images"]]


def doc_to_text(doc: dict, lmms_eval_specific_kwargs=None) -> str:
    return doc["question"]


def process_results(doc: dict, results: list) -> dict:
    return {"exact_match": float(normalised_answer(results[0]) == doc["answer"])}
