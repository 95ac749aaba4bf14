"""OpenAI grader JSON through a real server: every kind we run, the completion rule, what we
refuse, and `verifier-server validate-grader`. Model graders go to a TEST DOUBLE backend
(tests/support/misbehaving_backend.py, mode `grader`); test_judge_vllm.py runs one through a
real vLLM server."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest
from misbehaving_backend import MisbehavingBackend
from server_process import ServerProcess, configured_server, run_cli

from verifier_server.client import AsyncRewardClient, RewardClient
from verifier_server.types import Item, Result, RewardSpec, Status

pytestmark = pytest.mark.integration

OUT = "{{ sample.output_text }}"


@pytest.fixture(scope="module")
def server(
    backend: MisbehavingBackend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    backends = {
        "grader": {"base_url": backend.url("grader"), "model": "gpt-4o-mini"},
        "slow": {"base_url": backend.url("slow"), "model": "slow-model"},
        "one_slot": {  # one call at a time: a long completion holds every other item
            "base_url": backend.url("grader_prefill"), "model": "one-slot-model",
            "max_concurrency": 1, "max_retries": 0, "breaker_failures": 1000,
        },
        "prefill": {  # two timed-out attempts would open its breaker, were they counted
            "base_url": backend.url("grader_prefill"), "model": "prefill-model",
            "request_timeout_s": 0.5, "max_retries": 1, "breaker_failures": 2,
            "breaker_reset_s": 60, "backoff_initial_s": 0.05,
        },
    }  # fmt: skip
    config = {
        "server": {"workers": 1},
        "verifier_settings": {"openai_grader": {"backends": backends}},
    }
    with configured_server(config, tmp_path_factory.mktemp("openai_grader")) as proc:
        yield proc


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[RewardClient]:
    with RewardClient(server.address, timeout_s=60) as c:
        c.wait_ready()
        yield c


def grade(client: RewardClient, grader: dict, completion: str, reference: object = None,
          **params: object) -> Result:  # fmt: skip
    item = Item(id="i", prompt="p", completion=completion, reference=reference,
                reward=RewardSpec("openai_grader", {"grader": grader, **params}))  # fmt: skip
    return client.score([item])[0]


def string_check(operation: str, reference: str = "{{ item.answer }}") -> dict:
    return {"type": "string_check", "name": "s", "input": OUT, "reference": reference,
            "operation": operation}  # fmt: skip


@pytest.mark.parametrize(
    ("operation", "completion", "score"),
    [
        ("eq", "Paris", 1.0), ("eq", "Paris ", 0.0),  # no stripping: OpenAI compares as is
        ("eq", "paris", 0.0), ("ne", "Lyon", 1.0), ("ne", "Paris", 0.0),
        # like: contains, case-sensitive
        ("like", "It is Paris.", 1.0), ("like", "It is paris.", 0.0),
        ("ilike", "It is PARIS.", 1.0), ("ilike", "It is Lyon.", 0.0),
        ("like", "%aris", 0.0),  # not SQL LIKE: % is a plain character
    ],
)  # fmt: skip
def test_string_check_operations(
    client: RewardClient, operation: str, completion: str, score: float
) -> None:
    result = grade(client, string_check(operation), completion, {"answer": "Paris"})
    assert (result.status, result.score) == (Status.OK, score)


def test_a_string_reference_is_item_reference(client: RewardClient) -> None:
    result = grade(client, string_check("eq", "{{ item.reference }}"), "42", "42")
    assert (result.status, result.score) == (Status.OK, 1.0)


def test_text_similarity_scores_the_metric_and_reports_passing(client: RewardClient) -> None:
    grader = {"type": "text_similarity", "name": "t", "input": OUT,
              "reference": "{{ item.answer }}", "evaluation_metric": "rouge_1",
              "pass_threshold": 0.8}  # fmt: skip
    result = grade(client, grader, "the cat sat on the mat", {"answer": "the cat sat on a mat"})
    assert result.status == Status.OK
    assert result.score == pytest.approx(5 / 6)  # overlap 5 of 6 tokens on each side
    assert result.details["passed"] is True


PYTHON = """
def grade(sample, item):
    answer = sample["output_text"].strip()
    if answer == "BOOM":
        raise ValueError("cannot grade this")
    if answer == "SPIN":
        while True:
            pass
    print("graders may print")
    return 1.0 if answer == item["answer"] else 0.25
"""


@pytest.mark.parametrize(
    ("completion", "score", "reason"),
    [
        ("Paris", 1.0, ""),
        ("Lyon", 0.25, ""),
        # The completion made the grader raise or spin; on "I don't know." it runs: scored 0.
        ("BOOM", 0.0, "grader_raised"),
        ("SPIN", 0.0, "grader_time_limit"),
    ],
)
def test_python_graders_run_in_the_sandbox(
    client: RewardClient, completion: str, score: float, reason: str
) -> None:
    grader = {"type": "python", "name": "p", "source": PYTHON}
    result = grade(client, grader, completion, {"answer": "Paris"}, timeout_s=4)
    assert (result.status, result.score, result.reason) == (Status.OK, score, reason)
    if reason:
        assert result.details["attributed_to"] == "completion"


def test_breaking_a_grader_never_beats_a_non_answer(client: RewardClient) -> None:
    # This grader scores a wrong answer -1: crashing it must not earn the 0 a "lowest score"
    # of 0 would give, but what "I don't know." earns.
    source = PYTHON.replace("else 0.25", "else -1.0")
    grader = {"type": "python", "name": "p", "source": source}
    result = grade(client, grader, "BOOM", {"answer": "Paris"}, timeout_s=4)
    assert (result.status, result.score, result.reason) == (Status.OK, -1.0, "grader_raised")
    assert result.details["attributed_to"] == "completion"


GRADE_JSON = "def grade(sample, item):\n    return float(sample['output_json']['answer'])"
GRADE_FLOAT = "def grade(sample, item):\n    return float(sample['output_text'])"
GRADE_RETURN = "def grade(sample, item):\n    return eval(sample['output_text'])"


@pytest.mark.parametrize(
    ("source", "completion", "error"),
    [
        # grade() raises on every non-JSON completion, "I don't know." included: still a
        # verdict on the completion, never a masked VERIFIER_ERROR.
        (GRADE_JSON, "not json", "KeyError: 'output_json'"),
        (GRADE_JSON, '{"answer": "x"}', "ValueError: could not convert string to float"),
        (GRADE_FLOAT, "nan", "grade() returned nan"),
        (GRADE_FLOAT, "inf", "grade() returned inf"),
        (GRADE_FLOAT, "-1e999", "grade() returned -inf"),
        (GRADE_RETURN, "None", "TypeError: float() argument"),
        (GRADE_RETURN, "10 ** 400", "OverflowError"),
        (GRADE_RETURN, "exit(3)", "SystemExit: 3"),
        (GRADE_RETURN, "'\\ud800' + 1", "TypeError"),  # a lone surrogate in the message
    ],
)
def test_a_grader_raising_on_the_completion_scores_its_floor(
    client: RewardClient, source: str, completion: str, error: str
) -> None:
    grader = {"type": "python", "name": "p", "source": source}
    result = grade(client, grader, completion, {"answer": "1"}, timeout_s=4)
    assert (result.status, result.score, result.reason) == (Status.OK, 0.0, "grader_raised")
    assert error in result.details["error"]  # a buggy grader stays visible
    assert result.details["attributed_to"] == "completion"
    assert grade(client, grader, '{"answer": "0.5"}' if "json" in source else "0.5",
                 {}).score == 0.5  # fmt: skip


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def grade(s, i):\n    return 1\nreturn 2", "'return' outside function"),
        ("def grade(sample):\n    return 1", "grade must accept two positional arguments"),
        ("grade = 1", "must define a top-level function grade"),
    ],
)
def test_grader_source_that_cannot_run_is_an_invalid_request(
    client: RewardClient, source: str, message: str
) -> None:
    result = grade(client, {"type": "python", "name": "p", "source": source}, "x", {})
    assert result.status == Status.INVALID_REQUEST
    assert "grader.python.source: " in result.details["error"]
    assert message in result.details["error"]


def test_python_graders_cannot_reach_the_host(client: RewardClient) -> None:
    source = (
        "import socket\ndef grade(sample, item):\n"
        "    socket.create_connection(('127.0.0.1', 22), timeout=1)\n    return 1.0"
    )
    result = grade(client, {"type": "python", "name": "p", "source": source}, "x", {})
    # no network in the sandbox, for any input: grade() raises, and never returns its 1.0
    assert (result.status, result.score, result.reason) == (Status.OK, 0.0, "grader_raised")
    assert "Error" in result.details["error"]


def score_model(model: str = "gpt-4o-mini", rng: list[float] | None = None) -> dict:
    content = f"Grade: {OUT} against {{{{ item.answer }}}}"
    grader = {"type": "score_model", "name": "m", "model": model,
              "input": [{"role": "user", "content": content}]}  # fmt: skip
    if rng is not None:
        grader["range"] = rng
    return grader


@pytest.mark.parametrize(
    ("completion", "rng", "score"),
    [("GOOD Paris", None, 1.0), ("Lyon", None, 0.0), ("GOOD", [1, 7], 7.0), ("bad", [1, 7], 1.0)],
)
def test_score_model_returns_the_models_result_in_its_range(
    client: RewardClient, completion: str, rng: list[float] | None, score: float
) -> None:
    result = grade(client, score_model(rng=rng), completion, {"answer": "Paris"})
    assert (result.status, result.score) == (Status.OK, score)


def test_the_model_field_picks_a_backend_by_name_or_by_model(
    client: RewardClient, backend: MisbehavingBackend
) -> None:
    before = len(backend.requests["grader"])
    assert grade(client, score_model("grader"), "GOOD", {"answer": "x"}).score == 1.0
    result = grade(client, score_model("gpt-5"), "GOOD", {"answer": "x"})
    assert (result.status, result.details["field"]) == (
        Status.INVALID_REQUEST, "reward.params.grader.model")  # fmt: skip
    sent = backend.requests["grader"][before][1]
    assert sent["response_format"]["json_schema"]["schema"]["properties"]["result"] == {
        "type": "number", "minimum": 0.0, "maximum": 1.0}  # fmt: skip


def test_a_completion_that_breaks_the_model_grader_scores_its_lowest(client: RewardClient) -> None:
    result = grade(client, score_model(rng=[1, 7]), "BREAK_THE_JUDGE", {"answer": "x"})
    assert (result.status, result.score, result.reason) == (Status.OK, 1.0, "unparseable_verdict")
    assert result.details["attributed_to"] == "completion"


def test_a_slow_model_backend_stays_a_timeout(client: RewardClient) -> None:
    result = grade(client, score_model("slow"), "x", {"answer": "x"}, timeout_s=1)
    assert (result.status, result.reason) == (Status.TIMEOUT, "judge_timeout")


def test_label_model_passes_on_a_passing_label(client: RewardClient) -> None:
    grader = {"type": "label_model", "name": "l", "model": "gpt-4o-mini",
              "input": [{"role": "user", "content": OUT}], "labels": ["bad", "good"],
              "passing_labels": ["good"]}  # fmt: skip
    good, bad = grade(client, grader, "GOOD", {}), grade(client, grader, "meh", {})
    assert (good.score, good.details["label"], bad.score, bad.details["label"]) == (
        1.0, "good", 0.0, "bad")  # fmt: skip


def test_multi_combines_sub_graders_with_the_formula(client: RewardClient) -> None:
    grader = {
        "type": "multi", "name": "m", "calculate_output": "0.5 * exact + 0.5 * sim ^ 2",
        "graders": {
            "exact": string_check("like"),
            "sim": {"type": "text_similarity", "name": "t", "input": OUT,
                    "reference": "{{ item.answer }}", "evaluation_metric": "fuzzy_match",
                    "pass_threshold": 0},
        },
    }  # fmt: skip
    result = grade(client, grader, "sitting", {"answer": "kitten"})
    # like: "kitten" not in "sitting" -> 0; fuzzy 8/13 -> 0.5 * (8/13)^2 = 32/169
    assert result.status == Status.OK and result.score == pytest.approx(32 / 169)
    assert result.details["sub_scores"] == {"exact": 0.0, "sim": pytest.approx(8 / 13)}


def test_a_formula_undefined_for_these_scores_is_zero(client: RewardClient) -> None:
    grader = {"type": "multi", "name": "m", "calculate_output": "1 / a",
              "graders": {"a": string_check("eq")}}  # fmt: skip
    result = grade(client, grader, "no", {"answer": "yes"})
    assert (result.status, result.score, result.reason) == (Status.OK, 0.0, "formula_undefined")


def test_a_formula_undefined_for_one_item_leaves_its_neighbours_scored(
    client: RewardClient,
) -> None:
    # range [-1, 1]: the double answers -1 without GOOD, and (-1) ^ 0.5 is not a real number.
    model = {"type": "score_model", "name": "s", "model": "grader", "range": [-1, 1],
             "input": [{"role": "user", "content": OUT}]}  # fmt: skip
    grader = {"type": "multi", "name": "m", "calculate_output": "s ^ 0.5", "graders": {"s": model}}
    spec = RewardSpec("openai_grader", {"grader": grader})
    good, bad = client.score(
        [Item(id=i, prompt="p", completion=i.upper(), reward=spec) for i in ("good", "bad")]
    )
    assert (good.status, good.score) == (Status.OK, 1.0)
    assert (bad.status, bad.score, bad.reason) == (Status.OK, 0.0, "formula_undefined")


def test_a_completion_nested_too_deep_for_json_is_text(client: RewardClient) -> None:
    # json.loads raises RecursionError, not ValueError, past ~1000 levels: it must neither fail
    # the batch nor the item; the completion is not JSON, so output_json renders "".
    deep = "[" * 5000 + "]" * 5000
    json_path = {**string_check("eq"), "input": "{{ sample.output_json }}"}
    spec = RewardSpec("openai_grader", {"grader": json_path})
    results = client.score([Item(id=c[:3], prompt="p", completion=c, reference={"answer": ""},
                                 reward=spec) for c in ("[1]", deep)])  # fmt: skip
    assert [(r.status, r.score) for r in results] == [(Status.OK, 0.0), (Status.OK, 1.0)]


@pytest.mark.parametrize(
    "echo", ['{"result": 1' + "0" * 400 + "}", '{"result": ' + "[" * 3000 + "]" * 3000 + "}"]
)
def test_a_model_talked_into_a_pathological_result_fails_only_that_item(
    client: RewardClient, echo: str
) -> None:
    model = {"type": "score_model", "name": "s", "model": "grader", "range": [1, 10],
             "input": [{"role": "user", "content": OUT}]}  # fmt: skip
    spec = RewardSpec("openai_grader", {"grader": model})
    good, echoed = client.score(
        [Item(id=i, prompt="p", completion=c, reward=spec)
         for i, c in (("good", "GOOD"), ("echo", f"ECHO:{echo}"))]
    )  # fmt: skip
    assert (good.status, good.score) == (Status.OK, 10.0)
    assert (echoed.status, echoed.score) == (Status.OK, 1.0)  # range[0]: the completion's doing
    assert echoed.details["attributed_to"] == "completion"


def test_a_lone_surrogate_from_output_json_reaches_the_model_as_text(client: RewardClient) -> None:
    # json.loads turns "\\ud800" into a lone surrogate, which no UTF-8 request body can hold.
    model = {"type": "score_model", "name": "s", "model": "grader", "range": [1, 10],
             "input": [{"role": "user", "content": "{{ sample.output_json.a }}"}]}  # fmt: skip
    spec = RewardSpec("openai_grader", {"grader": model})
    good, lone = client.score(
        [Item(id=i, prompt="p", completion=c, reward=spec)
         for i, c in (("good", '{"a": "GOOD"}'), ("lone", '{"a": "GOOD \\ud800"}'))]
    )  # fmt: skip
    assert (good.status, good.score) == (Status.OK, 10.0)
    assert lone.status == Status.OK


def test_long_completions_timing_out_a_model_grader_never_open_its_breaker(
    client: RewardClient,
) -> None:
    model = {"type": "score_model", "name": "s", "model": "prefill", "range": [1, 10],
             "input": [{"role": "user", "content": OUT}]}  # fmt: skip
    spec = RewardSpec("openai_grader", {"grader": model, "timeout_s": 5})
    long = "word " * 12_000  # 60k characters: 1.2 s on this backend, over its 0.5 s per attempt
    for n in range(3):
        item = Item(id=f"long{n}", prompt="p", completion=f"{n} {long}", reward=spec)
        result = client.score([item])[0]
        assert (result.status, result.score, result.reason) == (Status.OK, 1.0, "backend_timeout")
        assert result.details["attributed_to"] == "completion"
    assert client.health("verifier.v1.VerifierService/openai_grader/prefill") == "SERVING"
    good = client.score([Item(id="good", prompt="p", completion="GOOD", reward=spec)])[0]
    assert (good.status, good.score) == (Status.OK, 10.0)


def test_a_formula_nested_too_deep_is_an_invalid_request(client: RewardClient) -> None:
    grader = {"type": "multi", "name": "m", "calculate_output": "-" * 999 + "a",
              "graders": {"a": string_check("eq")}}  # fmt: skip
    result = grade(client, grader, "x", {"answer": "x"})
    assert result.status == Status.INVALID_REQUEST
    assert "nested more than 200 deep" in result.details["error"]


@pytest.mark.parametrize(
    ("grader", "reference", "field"),
    [
        ({**string_check("eq"), "operation": "regex"}, {}, "operation"),
        ({"type": "text_similarity", "name": "t", "input": OUT, "reference": "r",
          "evaluation_metric": "cosine", "pass_threshold": 1}, {}, "evaluation_metric"),
        (string_check("eq", "{{ item.missing }}"), {"answer": "x"}, "reference"),
    ],
)  # fmt: skip
def test_what_we_cannot_run_is_an_invalid_request_naming_the_field(
    client: RewardClient, grader: dict, reference: object, field: str
) -> None:
    result = grade(client, grader, "x", reference)
    assert result.status == Status.INVALID_REQUEST
    assert field in result.details["field"] + result.details["error"]


def test_validate_grader_cli(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(string_check("ilike")))
    bad.write_text(json.dumps({**string_check("eq"), "operation": "regex", "input": "{{ x }}"}))
    ok = run_cli("validate-grader", str(good))
    assert ok.returncode == 0 and "valid string_check grader 's'" in ok.stdout
    failed = run_cli("validate-grader", str(bad))
    assert failed.returncode == 1
    assert f"{bad}: operation: Input should be" in failed.stderr
    assert f"{bad}: input: {{{{ x }}}}: expected" in failed.stderr


def test_python_graders_run_side_by_side_on_the_slots(client: RewardClient) -> None:
    source = "import time\ndef grade(sample, item):\n    time.sleep(2)\n    return 1.0"
    grader = {"type": "python", "name": "p", "source": source}
    items = [
        Item(id=str(i), completion="x", reward=RewardSpec("openai_grader", {"grader": grader}))
        for i in range(2)
    ]
    client.score(items[:1])  # both slots may start cold; the second starts below
    start = time.monotonic()
    results = client.score(items)
    assert [r.score for r in results] == [1.0, 1.0]
    assert time.monotonic() - start < 3.8  # two 2 s sleeps one after the other take 4 s


def test_waiting_for_a_python_slot_counts_toward_the_items_time(
    client: RewardClient, server: ServerProcess
) -> None:
    sleeper = {
        "type": "python",
        "name": "p",
        "source": "import time\ndef grade(sample, item):\n    time.sleep(6)\n    return 1.0",
    }
    quick = {"type": "python", "name": "q", "source": "def grade(s, i):\n    return 1.0"}
    busy = [Item(id=f"busy{i}", completion="x",
                 reward=RewardSpec("openai_grader", {"grader": sleeper, "timeout_s": 10}))
            for i in range(2)]  # fmt: skip
    item = Item(
        id="quick",
        completion="x",
        reward=RewardSpec("openai_grader", {"grader": quick, "timeout_s": 1}),
    )
    client.score([replace(item, id=f"warm{i}") for i in range(2)])  # both slots started

    async def once() -> list[Result]:  # a stream: no client retry of OVERLOADED
        async with AsyncRewardClient(server.address) as other:
            return [r async for r in other.score_stream([item], timeout_s=4)]

    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(client.score, busy)  # both slots, for 6 s
        time.sleep(1)
        start = time.monotonic()
        [waited] = asyncio.run(once())
        waited_s = time.monotonic() - start
        assert [r.score for r in held.result()] == [1.0, 1.0]
    # No slot came free within its 1 s: the server's load, never a score nor a 5 s wait.
    assert (waited.status, waited.reason) == (Status.OVERLOADED, "no_sandbox_slot")
    assert waited_s < 3


def test_time_queued_for_a_model_backend_slot_is_never_the_completions(
    client: RewardClient, server: ServerProcess
) -> None:
    # As the judge's: a 250k-character completion holds the one slot for 5 s. `fair` (5.6 s,
    # sent 0.5 s later) sees its first 75% end while it waits and is graded when the slot
    # frees, not probed and scored 0; `starved` (1 s) never gets it: OVERLOADED.
    def item(id: str, completion: str, answer: str, timeout_s: float) -> Item:
        params = {"grader": score_model("one_slot"), "timeout_s": timeout_s}
        return Item(id=id, completion=completion, reference={"answer": answer},
                    reward=RewardSpec("openai_grader", params))  # fmt: skip

    held = item("held", "GOOD " + "x" * 250_000, "Paris", 20)
    fair = item("fair", "GOOD", "Paris", 5.6)
    starved = item("starved", "GOOD", "Rome", 1)  # another item: not the same probe as fair's

    async def stream(item: Item) -> Result:  # a stream: no client retry of OVERLOADED
        async with AsyncRewardClient(server.address, timeout_s=20) as other:
            return [r async for r in other.score_stream([item])].pop()

    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(client.score, [held])
        time.sleep(0.5)
        waiting = [pool.submit(asyncio.run, stream(i)) for i in (fair, starved)]
        fair_result, starved_result = (w.result() for w in waiting)
        [held_result] = first.result()
    assert (held_result.status, held_result.score) == (Status.OK, 1.0)
    assert (fair_result.status, fair_result.score, fair_result.reason) == (Status.OK, 1.0, "")
    assert (starved_result.status, starved_result.reason) == (Status.OVERLOADED, "no_backend_slot")
