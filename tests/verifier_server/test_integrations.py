"""The trainer adapters (verifier_server.integrations) against a real server, called the way
each trainer calls them: TRL's reward-function keywords, verl's compute_score signatures (and
its reward loop's concurrent calls), OpenRLHF's file mode loaded from its path."""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from server_process import ServerProcess

from verifier_server.client import AsyncRewardClient
from verifier_server.integrations import (
    compute_score,
    compute_score_async,
    compute_score_batch,
    openrlhf,
    trl_reward,
)
from verifier_server.integrations.connection import ADDRESS_ENV, REWARD_ENV
from verifier_server.types import RewardSpec

pytestmark = pytest.mark.integration

GOOD = "<think>because</think>\n<answer>Paris</answer>"
EXACT = {"name": "string_check", "params": {"extract": "answer_tag"}}


@pytest.fixture
def requests(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The size of each request the adapters send (they still reach the real server)."""
    sizes: list[int] = []
    send = AsyncRewardClient._score_batch  # one Score RPC per batch (retries aside)

    async def counted(self: Any, batch: Any, deadline: float) -> Any:
        sizes.append(len(batch))
        return await send(self, batch, deadline)

    monkeypatch.setattr(AsyncRewardClient, "_score_batch", counted)
    yield sizes


def test_importing_the_adapters_imports_neither_torch_nor_a_trainer() -> None:
    code = (
        "import sys, verifier_server.integrations\n"
        "heavy = ('torch', 'trl', 'verl', 'openrlhf', 'numpy')\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---- TRL


def test_trl_reward_scores_a_call_in_one_request_with_references_from_a_column(
    server: ServerProcess, requests: list[int]
) -> None:
    reward = trl_reward(EXACT, address=server.address, reference_column="answer")
    metrics: dict[str, float] = {}
    scores = reward(
        prompts=["capital of france?"] * 3,
        completions=[GOOD, "<answer>Lyon</answer>", GOOD],
        completion_ids=[[1], [2], [3]],
        answer=["Paris", "Paris", "Lyon"],
        trainer_state=object(),
        log_metric=lambda name, value: metrics.__setitem__(name, value),
    )
    assert scores == [1.0, 0.0, 0.0]
    assert requests == [3]
    assert reward.__name__ == "verifier_string_check"
    assert metrics["verifier_string_check/status_ok"] == 1.0
    assert metrics["verifier_string_check/status_timeout"] == 0.0


def test_trl_reward_returns_none_for_items_the_server_could_not_verify(
    server: ServerProcess,
) -> None:
    reward = trl_reward("faulty", address=server.address, reference_column=None)
    metrics: dict[str, float] = {}
    scores = reward(
        prompts=["p", "p"], completions=["raise", "ok"], completion_ids=[[1], [2]],
        log_metric=lambda name, value: metrics.__setitem__(name, value),
    )  # fmt: skip
    assert scores == [None, 0.5]  # faulty scores "ok" 0.5
    assert metrics["verifier_faulty/status_verifier_error"] == 0.5


def test_trl_reward_takes_conversational_prompts_and_completions(server: ServerProcess) -> None:
    reward = trl_reward(RewardSpec("format"), address=server.address, reference_column=None)
    scores = reward(
        prompts=[[{"role": "user", "content": "capital of france?"}]] * 2,
        completions=[[{"role": "assistant", "content": GOOD}],
                     [{"role": "assistant", "content": "Paris"}]],
        completion_ids=[[1], [2]],
    )  # fmt: skip
    assert scores == [1.0, 0.0]


def test_trl_reward_scores_the_policys_messages_not_the_tools_answers(
    server: ServerProcess,
) -> None:
    # With tools, TRL appends `tool` messages to the completion. Their text is the
    # environment's: a tool that answered with the tags used to earn `format` its 1.0.
    reward = trl_reward("format", address=server.address, reference_column=None)
    call = {"role": "assistant", "content": "", "tool_calls": [{"name": "search"}]}
    scores = reward(
        prompts=[[{"role": "user", "content": "capital of france?"}]] * 2,
        completions=[[call, {"role": "tool", "name": "search", "content": GOOD}],
                     [call, {"role": "tool", "name": "search", "content": "found"},
                      {"role": "assistant", "content": [{"type": "text", "text": GOOD}]}]],
        completion_ids=[[1], [2]],
    )  # fmt: skip
    assert scores == [0.0, 1.0]


def test_trl_reward_names_a_prompt_message_without_a_role(server: ServerProcess) -> None:
    reward = trl_reward("format", address=server.address, reference_column=None)
    with pytest.raises(ValueError, match=r"prompts\[1\]\[0\]\.role: a message needs a string role"):
        reward(
            prompts=[[{"role": "user", "content": "hi"}], [{"content": "no role"}]],
            completions=[GOOD, GOOD],
            completion_ids=[[1], [2]],
        )


def test_trl_reward_names_a_missing_reference_column(server: ServerProcess) -> None:
    reward = trl_reward("format", address=server.address, reference_column="solution")
    with pytest.raises(ValueError, match=r"'solution' is not a dataset column.*\['answer'\]"):
        reward(prompts=["p"], completions=["c"], completion_ids=[[1]], answer=["a"])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"name": "format", "weight": 2}, "expected {'name': str, 'params': dict}"),
        ({"name": "format", "params": [1]}, "spec.params: expected a mapping"),
        (3, "expected a name, a RewardSpec or a mapping"),
    ],
)
def test_trl_reward_refuses_a_bad_spec_at_once(spec: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("(", r"\(")):
        trl_reward(spec)


# ---- verl


def test_verl_signatures_are_the_ones_verl_calls() -> None:
    # verl's managers call compute_score(data_source=, solution_str=, ground_truth=,
    # extra_info=, **reward_kwargs) and, in batch, compute_score(data_sources=,
    # solution_strs=, ground_truths=, extra_infos=, **reward_kwargs).
    for function in (compute_score, compute_score_async):
        params = list(inspect.signature(function).parameters)
        assert params[:4] == ["data_source", "solution_str", "ground_truth", "extra_info"]
    params = list(inspect.signature(compute_score_batch).parameters)
    assert params[:4] == ["data_sources", "solution_strs", "ground_truths", "extra_infos"]
    assert inspect.iscoroutinefunction(compute_score_async)  # verl awaits it on its loop


def test_verl_compute_score_per_sample(server: ServerProcess) -> None:
    kwargs = {"reward": EXACT, "address": server.address}
    right = compute_score("demo", GOOD, "Paris", {"index": 0}, **kwargs)
    wrong = compute_score(data_source="demo", solution_str=GOOD, ground_truth="Lyon",
                          extra_info=None, num_turns=None, **kwargs)  # fmt: skip
    assert right == {"score": 1.0, "verified": 1.0}
    assert wrong == {"score": 0.0, "verified": 1.0}


def test_verl_batch_form_is_one_request_and_marks_unverified_items(
    server: ServerProcess, requests: list[int]
) -> None:
    out = compute_score_batch(
        data_sources=["demo"] * 3, solution_strs=["ok", "raise", "ok"],
        ground_truths=[None, None, None], extra_infos=[{}, {}, {}],
        reward="faulty", address=server.address,
    )  # fmt: skip
    assert requests == [3]
    assert out == [
        {"score": 0.5, "verified": 1.0},  # faulty scores "ok" 0.5
        {"score": 0.0, "verified": 0.0},  # VERIFIER_ERROR: verl cannot mask, so 0.0, flagged
        {"score": 0.5, "verified": 1.0},
    ]


def test_verl_async_calls_of_one_batch_go_as_one_request(
    server: ServerProcess, requests: list[int]
) -> None:
    # As verl 0.9's reward loop does: one task per sample, all created at once, each
    # awaiting compute_score after some work of its own (decoding) on the same loop.
    async def one(index: int, solution: str, truth: str) -> dict[str, float]:
        await asyncio.sleep(0.001 * index)
        return await compute_score_async(
            data_source="demo", solution_str=solution, ground_truth=truth, extra_info={},
            reward=EXACT, address=server.address,
        )  # fmt: skip

    async def batch() -> list[dict[str, float]]:
        cases = [(GOOD, "Paris"), (GOOD, "Lyon"), ("<answer>Lyon</answer>", "Lyon")] * 4
        return await asyncio.gather(*(one(i, s, t) for i, (s, t) in enumerate(cases)))

    out = asyncio.run(batch())
    assert requests == [12]
    assert [o["score"] for o in out] == [1.0, 0.0, 1.0] * 4
    assert {o["verified"] for o in out} == {1.0}


def test_verl_ground_truth_from_numpy_becomes_plain_json(server: ServerProcess) -> None:
    import numpy as np  # verl hands over non-tensor columns as numpy arrays

    out = compute_score("demo", GOOD, np.array("Paris"), reward=EXACT, address=server.address)
    assert out == {"score": 1.0, "verified": 1.0}


def test_verl_without_a_reward_says_how_to_set_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REWARD_ENV, raising=False)
    with pytest.raises(ValueError, match=r"reward: no reward given.*VERIFIER_SERVER_REWARD"):
        compute_score("demo", GOOD, "Paris")


def test_a_reward_the_server_refuses_is_an_error_not_a_run_of_unverified_items(
    server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A misspelt reward made every item INVALID_REQUEST: TRL trained on all None, verl and
    # OpenRLHF on all 0.0, with nothing but a log line to say so.
    monkeypatch.setenv(ADDRESS_ENV, server.address)
    monkeypatch.setenv(REWARD_ENV, "fromat")
    calls = {
        "trl": lambda: trl_reward("fromat", reference_column=None)(
            prompts=["p"], completions=["c"], completion_ids=[[1]]),
        "verl": lambda: compute_score("demo", GOOD, None, reward="fromat"),
        "verl_async": lambda: asyncio.run(compute_score_async("demo", GOOD, None, reward="fromat")),
        "verl_batch": lambda: compute_score_batch(["d"], [GOOD], [None], reward="fromat"),
        "openrlhf": lambda: openrlhf.reward_func(["c"], [""], [None]),
    }  # fmt: skip
    for call in calls.values():
        with pytest.raises(ValueError, match="refused the reward: unknown verifier or reward"):
            call()


# ---- OpenRLHF (file mode; the HTTP mode is in test_http_api.py)


def test_openrlhf_file_mode_loaded_as_openrlhf_loads_it(
    server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ADDRESS_ENV, server.address)
    monkeypatch.setenv(REWARD_ENV, "format")
    # OpenRLHF's SingleTurnAgentExecutor: spec_from_file_location("reward_func", path).
    spec = importlib.util.spec_from_file_location("reward_func", openrlhf.__file__)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    prompt = "<|user|> capital? <|assistant|>"
    out = module.reward_func(
        [prompt + GOOD, prompt + "Paris"], [prompt, prompt], ["Paris", "Paris"]
    )
    assert out["rewards"] == [1.0, 0.0] == out["scores"]
    assert out["extra_logs"] == {"verified": [1.0, 1.0]}
    assert out["statuses"] == ["OK", "OK"]
