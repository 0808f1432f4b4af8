# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Greedy agreement between a variant of a model (bf16 or quantized weights, compiled decoding) and its reference, by
the margin rule that `tests/test_bf16.py` introduced (the tests judge by this function too, `tests/margin_rule.py`).

At generation step i of a row, the variant can only pick another token than the reference when the reference's
top-1/top-2 logit margin is at most twice the largest difference between the two models' logits at that position,
`delta_i` (either logit of the pair can move by `delta_i`). The steps before a row's first step with
`margin_i <= 2 * delta_i` must give identical ids; from that step on the row is not compared.

`delta_i` needs both models' logits after the same prefix: teacher-forced on the reference's sequence, or each model's
own logits from `generate`, whose prefixes are the same up to the rows' first different id; the verdict depends on
those steps only, so both give the same one.
"""

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RowAgreement:
    """One row: the steps judged (its length up to the end of sequence), those compared (before the first step whose
    margin is not clear of the variant's error), the first step where the ids differ (None: none), and whether the rule
    holds (no different id among the compared steps)."""

    steps: int
    compared: int
    first_difference: int | None

    @property
    def holds(self) -> bool:
        return self.first_difference is None or self.first_difference >= self.compared


def margin_rule(
    reference_ids: torch.Tensor,
    reference_logits: torch.Tensor,
    variant_ids: torch.Tensor,
    variant_logits: torch.Tensor,
    eos_token_id: int | list[int] | None = None,
) -> list[RowAgreement]:
    """The rule on every row of new ids `(batch, steps)` and the logits `(batch, steps, vocab)` they were chosen from;
    a row is judged up to its first `eos_token_id` (padding after it)."""
    reference_logits, variant_logits = reference_logits.float(), variant_logits.float()
    top2 = reference_logits.topk(2, dim=-1).values
    margin = top2[..., 0] - top2[..., 1]
    steps = min(reference_logits.shape[1], variant_logits.shape[1])
    delta = (variant_logits[:, :steps] - reference_logits[:, :steps]).abs().amax(-1)
    eos = torch.tensor([] if eos_token_id is None else eos_token_id).long().flatten()
    rows = []
    for row in range(reference_ids.shape[0]):
        ended = torch.isin(reference_ids[row], eos).nonzero()
        length = min(int(ended[0]) + 1 if len(ended) else reference_ids.shape[1], steps)
        unclear = (margin[row, :length] <= 2 * delta[row, :length]).nonzero()
        different = (variant_ids[row, :length] != reference_ids[row, :length]).nonzero()
        rows.append(
            RowAgreement(
                steps=length,
                compared=int(unclear[0]) if len(unclear) else length,
                first_difference=int(different[0]) if len(different) else None,
            )
        )
    return rows


def summary(rows: list[RowAgreement]) -> str:
    """'identical' when every id is, else how many steps the rule compared and whether it holds."""
    if all(row.first_difference is None for row in rows):
        return "identical"
    compared, steps = sum(row.compared for row in rows), sum(row.steps for row in rows)
    verdict = "holds" if all(row.holds for row in rows) else "BROKEN"
    return f"margin rule {verdict} ({compared}/{steps} steps clear)"
