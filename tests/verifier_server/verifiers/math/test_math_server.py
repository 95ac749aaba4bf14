"""The math verifier behind a real server: hostile answers cannot hang it or hurt neighbours."""

from __future__ import annotations

import time

import pytest
from server_process import children_of

from verifier_server.client import RewardClient
from verifier_server.types import Item, RewardSpec, Status

pytestmark = pytest.mark.integration

HOSTILE = {
    "tower": r"\boxed{9^{9^{9^9}}}",
    "factorial": r"\boxed{(10^7)!}",
    "parens": r"\boxed{" + "(" * 5000 + "1" + ")" * 5000 + "}",
    "megabyte": r"\boxed{" + "1+" * 500_000 + "1}",
    "issue65": r"\boxed{\dfrac{5^{\left(5^{\left(5^{\left(5^5\right)}\right)}-4\right)}-5}{16}}",
}


def math_item(id: str, completion: str, reference: object, **params: object) -> Item:
    return Item(
        id=id, completion=completion, reward=RewardSpec("math", params), reference=reference
    )


def test_hostile_answers_return_fast_and_neighbours_score(server, client: RewardClient) -> None:
    workers_before = len(children_of(server.process.pid))
    batch = [math_item(f"h-{name}", text, "10") for name, text in HOSTILE.items()]
    batch += [math_item(f"ok{n}", rf"\boxed{{\frac{{{2 * n}}}{{2}}}}", str(n)) for n in range(10)]
    batch += [math_item("wrong", r"\boxed{1+\frac{1}{e}}", r"1-\frac{1}{e}")]
    started = time.monotonic()
    results = {r.id: r for r in client.score(batch)}
    assert time.monotonic() - started < 20
    for name in HOSTILE:
        result = results[f"h-{name}"]
        assert result.status in (Status.OK, Status.TIMEOUT), result
        assert result.score == 0.0
        if result.status == Status.OK:
            assert result.reason.startswith("answer_too_"), result.reason
    assert all(results[f"ok{n}"].ok and results[f"ok{n}"].score == 1.0 for n in range(10))
    assert results["wrong"].ok and results["wrong"].score == 0.0
    assert client.health() == "SERVING"
    assert len(children_of(server.process.pid)) == workers_before


def _wait_for_workers(server, count: int) -> list[int]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(children_of(server.process.pid)) != count:
        time.sleep(0.1)
    return children_of(server.process.pid)


def test_an_answer_past_its_time_limit_is_killed_and_scored_zero(
    server, client: RewardClient
) -> None:
    # Passes every pre-screen (a legitimate-looking polynomial identity) but sympy needs
    # minutes to confirm it: the worker is killed at timeout_s. The gold parsed in
    # milliseconds, so the completion ran it past the limit: OK, 0, never a masked TIMEOUT.
    slow = math_item("slow", r"\boxed{(x^2+2x+1)^{1500}}", "(x+1)^{3000}", timeout_s=1)
    neighbours = [math_item(f"n{n}", rf"\boxed{{{n}}}", str(n)) for n in range(6)]
    workers_before = children_of(server.process.pid)
    started = time.monotonic()
    results = client.score([slow, *neighbours])
    assert time.monotonic() - started < 15
    assert results[0].status == Status.OK, results[0]
    assert (results[0].score, results[0].reason) == (0.0, "answer_too_complex")
    assert all(r.ok and r.score == 1.0 for r in results[1:])
    after = _wait_for_workers(server, len(workers_before))
    assert len(after) == len(workers_before) and after != workers_before  # one was replaced
    assert client.score([math_item("again", r"\boxed{2}", "2")])[0].score == 1.0


def test_a_gold_past_its_time_limit_is_a_timeout(server, client: RewardClient) -> None:
    # The same identity as the gold itself: checking that the gold is not always true takes
    # the time. The caller's reference is at fault, so this is TIMEOUT (masked), not a 0.
    gold = "(x^2+2x+1)^{1500} = (x+1)^{3000} + 1"
    workers_before = children_of(server.process.pid)
    [result] = client.score([math_item("g", r"\boxed{1}", gold, timeout_s=1)])
    assert result.status == Status.TIMEOUT and result.reason == "timeout"
    _wait_for_workers(server, len(workers_before))


# Completions built to break the verifier: each must come back OK with 0, never a status a
# trainer would mask (a masked item is no penalty: a policy would learn to produce it).
BREAKERS = {
    "slow_identity": r"\boxed{(x^2+2x+1)^{1500}}",
    "tower": r"\boxed{9^{9^{9^9}}}",
    "division_by_zero": r"\boxed{\frac{1}{0}}",
    "zoo_times": r"\boxed{\frac{x}{0} \cdot 0}",
    "bad_matrix": r"\boxed{\begin{pmatrix}1&2\\3\end{pmatrix}^{-1}}",
    "matrix_power": r"\boxed{\begin{pmatrix}1&2\\3&4\end{pmatrix}^{x}}",
    "set_arith": r"\boxed{\{1,2\} + \{3\}}",
    "interval_pow": r"\boxed{[0,1]^{[0,1]}}",
    "unit_only": r"\boxed{\text{ kg}}",
    "unit_on_set": r"\boxed{\{1, 2\} \text{ kg}}",
    "pm_relation": r"\boxed{x \pm 1 > 2}",
    "pm_only": r"\boxed{\pm}",
    "chain": r"\boxed{x = y = 1 = 2}",
    "lonely_prime": r"\boxed{'}",
    "nul": "\\boxed{1\x00}",
    "deep_frac": r"\boxed{" + r"\frac{1}{" * 9 + "2" + "}" * 9 + "}",
    "empty_pieces": r"\boxed{,,,}",
}


def test_completions_built_to_break_the_verifier_score_zero(server, client: RewardClient) -> None:
    workers_before = children_of(server.process.pid)
    batch = [math_item(name, text, "5 \\text{ kg}", timeout_s=2) for name, text in BREAKERS.items()]
    results = {r.id: r for r in client.score(batch)}
    for name in BREAKERS:
        result = results[name]
        assert result.status == Status.OK and result.score == 0.0, (name, result)
        assert result.reason, name
    _wait_for_workers(server, len(workers_before))


def test_an_unparseable_gold_is_an_invalid_request_not_a_reward(client: RewardClient) -> None:
    [result] = client.score([math_item("g", r"\boxed{3}", r"\frac{3}{")])
    assert result.status == Status.INVALID_REQUEST
    assert result.details["field"] == "reference"


def test_math_is_listed_with_documented_params(client: RewardClient) -> None:
    info = {v.name: v for v in client.list_verifiers()}["math"]
    assert info.description
    properties = info.params_schema["properties"]
    assert {"extract", "timeout_s", "rel_tol", "max_answer_chars"} <= set(properties)
    assert all(spec.get("description") for spec in properties.values())
    assert client.health("verifier.v1.VerifierService/math") == "SERVING"
