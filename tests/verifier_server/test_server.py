"""The server through the real client, on a real loopback port and a Unix socket."""

from __future__ import annotations

import time

import grpc
import pytest

from verifier_server._proto.verifier.v1 import verifier_pb2 as pb
from verifier_server._proto.verifier.v1 import verifier_pb2_grpc as pb_grpc
from verifier_server.client import RewardClient, RewardClientError
from verifier_server.types import Item, RewardSpec, Status

pytestmark = pytest.mark.integration

GOOD = "<think>because</think>\n<answer>Paris</answer>"


def item(
    id: str,
    completion: str = GOOD,
    name: str = "format",
    params: dict | None = None,
    reference: object = None,
    **extra: object,
) -> Item:
    return Item(
        id=id,
        completion=completion,
        reward=RewardSpec(name, params or {}),
        reference=reference,
        **extra,
    )


def test_results_come_back_in_input_order(client: RewardClient) -> None:
    batch = [item(f"q{n}", GOOD if n % 2 else "no tags") for n in range(50)]
    results = client.score(batch)
    assert [r.id for r in results] == [i.id for i in batch]
    assert [r.score for r in results] == [float(n % 2) for n in range(50)]
    assert all(r.status == Status.OK for r in results)


def test_unix_socket_serves_the_same_api(server, client: RewardClient) -> None:
    with RewardClient(server.unix) as unix_client:
        assert unix_client.score([item("u")])[0].score == 1.0


def test_bad_items_are_named_and_neighbours_scored(client: RewardClient) -> None:
    results = client.score(
        [
            item("ok"),
            item("unknown", name="no_such_verifier"),
            item("bad-param", params={"no_such_param": 1}),
            Item(id="no-reward", completion="x"),
            item("ok2"),
        ]
    )
    by_id = {r.id: r for r in results}
    assert by_id["ok"].ok and by_id["ok2"].ok
    assert by_id["unknown"].status == Status.INVALID_REQUEST
    assert by_id["unknown"].details["field"] == "items[1].reward.name"
    assert "no_such_verifier" in by_id["unknown"].details["error"]
    assert by_id["bad-param"].status == Status.INVALID_REQUEST
    assert by_id["bad-param"].details["field"] == "items[2].reward.params"
    assert "no_such_param" in by_id["bad-param"].details["error"]
    assert by_id["no-reward"].details["field"] == "items[3].reward.name"


def test_oversized_completion_is_invalid_not_scored(client: RewardClient) -> None:
    result = client.score([item("huge", "x" * (2 * 1024 * 1024 + 1))])[0]
    assert (
        result.status == Status.INVALID_REQUEST and result.details["field"] == "items[0].completion"
    )


def test_duplicate_ids_reject_the_request(client: RewardClient) -> None:
    with pytest.raises(
        RewardClientError, match=r"items\[1\]\.id 'same' duplicates items\[0\]"
    ) as info:
        client.score([item("same"), item("same")])
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_too_many_items_per_request_is_a_clear_error(server) -> None:
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.VerifierServiceStub(channel)
        request = pb.ScoreRequest(
            items=[
                pb.Item(id=str(n), completion="x", reward=pb.RewardSpec(name="format"))
                for n in range(1001)
            ]
        )
        with pytest.raises(grpc.RpcError) as info:
            stub.Score(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "1001 items" in info.value.details() and "cap of 1000" in info.value.details()


def test_client_splits_large_batches_under_the_cap(server) -> None:
    with RewardClient(server.address, max_batch_items=300) as client:
        results = client.score([item(f"b{n}") for n in range(2500)])
    assert len(results) == 2500 and all(r.ok and r.score == 1.0 for r in results)


def test_malformed_bytes_get_a_grpc_error_not_a_crash(server, client: RewardClient) -> None:
    with grpc.insecure_channel(server.address) as channel:
        call = channel.unary_unary("/verifier.v1.VerifierService/Score")
        with pytest.raises(grpc.RpcError) as info:
            call(b"\xff\xff\xff\xff garbage", timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a ScoreRequest" in info.value.details()
    assert client.score([item("still-alive")])[0].ok


def test_named_reward_reports_components(client: RewardClient) -> None:
    right, wrong = client.score(
        [
            item("right", name="fmt_and_exact", reference="Paris"),
            item(
                "wrong",
                "<think>x</think><answer>Rome</answer>",
                name="fmt_and_exact",
                reference="Paris",
            ),
        ]
    )
    assert (
        right.ok
        and right.score == pytest.approx(1.5)
        and right.components == {"exact": 1.0, "fmt": 1.0}
    )
    assert (
        wrong.ok
        and wrong.score == pytest.approx(0.5)
        and wrong.components == {"exact": 0.0, "fmt": 1.0}
    )


def test_inline_composite_with_gate_and_reference_keys(client: RewardClient) -> None:
    spec = {
        "components": [
            {
                "name": "answer",
                "verifier": "string_check",
                "params": {"extract": "answer_tag"},
                "reference_key": "answer",
            },
            {
                "name": "polite",
                "verifier": "string_check",
                "params": {"operation": "icontains"},
                "reference_key": "must_say",
                "gate": True,
            },
        ]
    }
    ref = {"answer": "Paris", "must_say": "because"}
    passed, gated, missing = client.score(
        [
            item("pass", name="composite", params=spec, reference=ref),
            item(
                "gated",
                "<think>x</think><answer>Paris</answer>",
                name="composite",
                params=spec,
                reference=ref,
            ),
            item("missing", name="composite", params=spec, reference={"answer": "Paris"}),
        ]
    )
    assert passed.ok and passed.score == 1.0
    assert gated.ok and gated.score == 0.0 and gated.reason == "gate_failed:polite"
    assert (
        missing.status == Status.INVALID_REQUEST
        and missing.details["field"] == "reference.must_say"
    )


def test_composite_with_a_failed_component_is_not_ok(client: RewardClient) -> None:
    spec = {"components": [{"verifier": "format"}, {"verifier": "faulty", "weight": 0.5}]}
    result = client.score([item("c", "raise", name="composite", params=spec)])[0]
    assert result.status == Status.VERIFIER_ERROR
    assert result.reason == "component_failed:faulty:verifier_exception"


def test_plugin_failures_stay_with_their_items(client: RewardClient) -> None:
    results = client.score(
        [
            item("f1", "raise", name="faulty"),
            item("f2", "garbage", name="faulty_bulk"),
            item("f3", "ok", name="faulty_bulk"),
            item("f4"),
        ]
    )
    assert [r.status for r in results] == [
        Status.VERIFIER_ERROR,
        Status.VERIFIER_ERROR,
        Status.OK,
        Status.OK,
    ]
    assert results[1].reason == "bad_verifier_output"


def test_hung_item_times_out_and_server_stays_healthy(client: RewardClient) -> None:
    started = time.monotonic()
    results = client.score(
        [
            item("h", "hang", name="sleepy", params={"timeout_s": 1}),
            item("n", "fine", name="sleepy"),
        ]
    )
    assert time.monotonic() - started < 10
    assert results[0].status == Status.TIMEOUT and results[1].ok
    assert client.health() == "SERVING"


def test_timeout_above_the_server_cap_is_invalid(client: RewardClient) -> None:
    result = client.score([item("t", "x", name="sleepy", params={"timeout_s": 100})])[0]
    assert result.status == Status.INVALID_REQUEST
    assert result.details["field"] == "items[0].reward.params.timeout_s"


def test_overload_returns_at_once_instead_of_hanging(server, client: RewardClient) -> None:
    client.score([item("warm", "x", name="sleepy", params={"seconds": 0.2})])  # learn the cost
    request = pb.ScoreRequest(
        items=[
            pb.Item(
                id=f"o{n}",
                completion="x",
                reward=pb.RewardSpec(name="sleepy", params={"seconds": 0.2}),
            )
            for n in range(200)
        ]
    )
    with grpc.insecure_channel(server.address) as channel:
        started = time.monotonic()
        response = pb_grpc.VerifierServiceStub(channel).Score(request, timeout=3.0)
        elapsed = time.monotonic() - started
    statuses = [r.status for r in response.results]
    # 2 workers x ~2.7 s of room / 0.2 s per item: a few dozen admitted, the rest refused at
    # once; an admitted item still unfinished at the cut-off is answered TIMEOUT.
    ok, late = statuses.count(pb.STATUS_OK), statuses.count(pb.STATUS_TIMEOUT)
    assert 5 <= ok <= 40 and late <= 10
    assert statuses.count(pb.STATUS_OVERLOADED) == 200 - ok - late
    assert elapsed < 3.0


def test_client_gives_up_within_its_timeout(client: RewardClient) -> None:
    started = time.monotonic()
    results = client.score(
        [item(f"o{n}", "x", name="sleepy", params={"seconds": 0.2}) for n in range(100)],
        timeout_s=1.5,
    )
    assert time.monotonic() - started < 3.0
    assert {r.status for r in results} <= {Status.OK, Status.OVERLOADED, Status.TIMEOUT}
    assert any(not r.ok for r in results)


def test_health_per_verifier_and_unknown_service(client: RewardClient) -> None:
    assert client.health("verifier.v1.VerifierService") == "SERVING"
    assert client.health("verifier.v1.VerifierService/format") == "SERVING"
    assert client.health("verifier.v1.VerifierService/fmt_and_exact") == "SERVING"
    assert client.health("no.such.Service") == "SERVICE_UNKNOWN"


def test_list_verifiers_documents_every_param(client: RewardClient) -> None:
    infos = {v.name: v for v in client.list_verifiers()}
    assert {
        "format",
        "string_check",
        "length",
        "json_schema",
        "composite",
        "sleepy",
        "fmt_and_exact",
    } <= set(infos)
    assert infos["fmt_and_exact"].kind == "reward"
    for name in ("format", "string_check", "length", "json_schema", "composite"):
        assert infos[name].description
        for param, spec in infos[name].params_schema.get("properties", {}).items():
            assert spec.get("description"), f"{name}.{param} has no description"


def test_reflection_lists_the_service(server) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(server.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
        )
        names = {s.name for r in responses for s in r.list_services_response.service}
    assert "verifier.v1.VerifierService" in names and "grpc.health.v1.Health" in names


def test_bulk_job_whose_worker_dies_fails_its_items_not_scores_them(client: RewardClient) -> None:
    batch = [item(f"b{n}", "ok", name="faulty_bulk") for n in range(40)]
    batch[7] = item("b7", "die", name="faulty_bulk")
    results = client.score([*batch, item("neighbour")])
    died = [r for r in results if r.status == Status.VERIFIER_ERROR]
    assert died and all(r.reason == "worker_died" and r.score == 0.0 for r in died)
    assert "b7" in {r.id for r in died}
    assert all(r.status in {Status.OK, Status.VERIFIER_ERROR} for r in results)
    assert results[-1].ok and results[-1].score == 1.0
    again = client.score([item(f"a{n}", "ok", name="faulty_bulk") for n in range(40)])
    assert all(r.ok and r.score == 0.5 for r in again)  # the pool replaced the worker


def test_bulk_items_keep_their_request_positions_in_errors(client: RewardClient) -> None:
    batch = [item(f"p{n}") for n in range(64)]
    batch[50] = item("p50", "x" * (2 * 1024 * 1024 + 1))
    results = client.score(batch)
    assert results[50].status == Status.INVALID_REQUEST
    assert results[50].details["field"] == "items[50].completion"
    assert sum(r.ok for r in results) == 63
