"""`rl-client data check`: every row's gold scored against itself, before training.

A row whose reference the server cannot use (a gold that does not parse, a missing reference)
would have its items masked every step; a row whose gold does not earn the top score against
itself can never be answered right. Both are found here by sending, for each row, the
completion a perfect answer would be (the gold, written the way the row's verifier extracts
answers) with the row's own reward spec, through the same reward server training uses.

That completion exists only where the reference *is* an answer. Supported rewards:

- `math`: the gold in `\\boxed{}` (a gold already written with `\\boxed{}` is sent as it
  is; `extract: answer_tag` gets `<answer>gold</answer>`); of a list of accepted golds, the
  first is sent (the server parses them all, so a bad one is still reported);
- `string_check` with `operation` `eq`, `contains` or `icontains`: the reference, in
  `<answer>` tags or a fence when `extract` asks for them.

Every other reward is reported as not checked, with the reason: its reference is not an answer
(`code`'s tests, `json_schema`'s schema, `string_check`'s `regex` pattern or `ne` value), it has
no reference (`length`, `format`), its verdict comes from a model (`judge`, `openai_grader`,
`reward_model`), or it is a `composite` or a reward named in the server's config, whose
verifiers the client cannot see.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from tqdm import tqdm

from rl_client.config import TrainConfig
from rl_client.data import DataError, PromptRow
from rl_client.rewards import RewardService
from rl_client.run import check_reward_names, eval_rows, prompts_from_config, reward_service
from verifier_server.types import JSON, Item, Result, RewardSpec

TOP_SCORE = 1.0  # what a correct answer earns from every supported verifier
CHUNK_ITEMS = 256  # items per scoring request (the progress bar moves per chunk)
ANSWER_OPERATIONS = ("eq", "contains", "icontains")  # string_check: the reference is an answer


@dataclass(frozen=True)
class RowProblem:
    """A row that would be masked (`problem` 'masked': the status, reason and item field the
    server named) or whose gold scores below the top (`problem` 'below_top')."""

    row: int
    id: str
    reward: str
    problem: str
    status: str
    reason: str
    field: str | None
    message: str | None
    score: float | None


def _text(value: JSON) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _math_gold(reference: JSON, params: dict[str, JSON]) -> str:
    gold = reference[0] if isinstance(reference, list) and reference else reference
    text = _text(gold)
    if params.get("extract") == "answer_tag":
        return f"<answer>{text}</answer>"
    if isinstance(gold, str) and "\\boxed" in gold:  # the verifier reads the gold's boxes too
        return gold
    return f"\\boxed{{{text}}}"


def _string_gold(reference: JSON, params: dict[str, JSON]) -> str:
    text = _text(reference)
    extract = params.get("extract", "raw")
    if extract == "answer_tag":
        return f"<answer>{text}</answer>"
    if extract == "fenced":
        return f"```\n{text}\n```"
    return text  # raw, and auto (which falls back to the whole completion)


GOLD_COMPLETIONS: dict[str, Callable[[JSON, dict[str, JSON]], str]] = {
    "math": _math_gold,
    "string_check": _string_gold,
}
NOT_AN_ANSWER = {
    "code": "its reference is tests, not a solution",
    "json_schema": "its reference is a schema, not an instance of it",
    "length": "it has no reference: the score is the completion's length",
    "format": "it has no reference: the score is the completion's layout",
    "judge": "a model gives the verdict, so the gold's score says nothing about the data",
    "openai_grader": "a model gives the verdict, so the gold's score says nothing about the data",
    "reward_model": "a model gives the verdict, so the gold's score says nothing about the data",
    "composite": "its components' references are not checked one by one",
}


def unchecked_reason(reward: RewardSpec) -> str | None:
    """Why a row with this reward cannot have its gold scored against itself; None if it can."""
    if reward.name == "string_check":
        operation = reward.params.get("operation", "eq")
        if operation not in ANSWER_OPERATIONS:
            return f"string_check with operation {operation!r}: its reference is not an answer"
        return None
    if reward.name in GOLD_COMPLETIONS:
        return None
    return f"{reward.name}: " + NOT_AN_ANSWER.get(
        reward.name, "a reward named in the server's config, whose verifier is not known here"
    )


def gold_item(row: PromptRow, index: int) -> Item:
    """The row scored as if the model had answered with its gold."""
    completion = GOLD_COMPLETIONS[row.reward.name](row.reference, row.reward.params)
    return Item(
        id=str(index),
        completion=completion,
        reward=row.reward,
        messages=row.messages,
        reference=row.reference,
        group_id=row.id,
    )


def row_problem(index: int, row: PromptRow, result: Result) -> RowProblem | None:
    if result.ok and result.score >= TOP_SCORE:
        return None
    field = result.details.get("field")
    message = result.details.get("error")
    return RowProblem(
        row=index,
        id=row.id,
        reward=row.reward.name,
        problem="below_top" if result.ok else "masked",
        status=result.status.name,
        reason=result.reason,
        field=field if isinstance(field, str) else None,
        message=message if isinstance(message, str) else None,
        score=result.score if result.ok else None,
    )


def check_golds(
    rows: Sequence[PromptRow], rewards: RewardService, *, progress: bool
) -> dict[str, Any]:
    """Scores every supported row's gold against itself; the report (counts, the rows not
    checked per reason, and each problem row). One pass, a chunk in memory at a time, so a
    `data.lazy` dataset larger than memory is checked too."""
    unchecked: Counter[str] = Counter()
    problems: list[RowProblem] = []
    checked = 0
    chunk: list[tuple[int, PromptRow]] = []

    def score(chunk: list[tuple[int, PromptRow]]) -> None:
        results = rewards.submit([gold_item(row, i) for i, row in chunk]).result()
        for (index, row), result in zip(chunk, results, strict=True):
            found = row_problem(index, row, result)
            if found is not None:
                problems.append(found)

    with tqdm(total=len(rows), desc="data check", unit="row", disable=not progress) as bar:
        for index, row in enumerate(rows):
            reason = unchecked_reason(row.reward)
            if reason is not None:
                unchecked[reason] += 1
            else:
                chunk.append((index, row))
                checked += 1
            if len(chunk) == CHUNK_ITEMS:
                score(chunk)
                chunk = []
            bar.update(1)
        if chunk:
            score(chunk)
    kinds = Counter(p.problem for p in problems)
    return {
        "rows": len(rows),
        "checked": checked,
        "masked": kinds["masked"],
        "below_top": kinds["below_top"],
        "not_checked": dict(unchecked),
        "problems": [asdict(p) for p in problems],
    }


def report_table(report: dict[str, Any]) -> str:
    """The counts, the rows not checked, then one line per problem row."""
    lines = [
        f"rows       {report['rows']}",
        f"checked    {report['checked']}",
        f"masked     {report['masked']}",
        f"below_top  {report['below_top']}",
    ]
    lines += [f"not checked: {n} rows ({reason})" for reason, n in report["not_checked"].items()]
    if report["problems"]:
        lines.append("row\tid\tproblem\tstatus\treason\tfield\tscore\tmessage")
    for p in report["problems"]:
        score = "-" if p["score"] is None else f"{p['score']:.4f}"
        cells = (p["row"], p["id"], p["problem"], p["status"], p["reason"], p["field"] or "-")
        lines.append("\t".join(str(c) for c in (*cells, score, p["message"] or "")).rstrip())
    return "\n".join(lines)


def data_check(config: TrainConfig, *, eval_data: bool) -> dict[str, Any]:
    """Loads the training data as `rl-client train` does (`eval_data`: the eval data, as
    `rl-client eval` does), checks every row's reward exists on the server (the sidecar, or
    reward.address), and scores the golds. A dataset with no row that can be checked is a
    DataError naming the rewards."""
    data = config.data
    rows = eval_rows(config) if eval_data else prompts_from_config(data, data.path, data.split)
    if all(unchecked_reason(row.reward) is not None for row in rows):
        reasons = sorted({str(unchecked_reason(row.reward)) for row in rows})
        raise DataError(
            "data check: no row has a reward whose gold can be scored against itself (math, "
            f"string_check with eq/contains/icontains): {'; '.join(reasons)}"
        )
    with reward_service(config.reward) as rewards:
        check_reward_names(rows, rewards.verifier_names())
        return check_golds(rows, rewards, progress=config.output.progress)
