"""Answers come before the caller's deadline, bad wire input is refused at once, and the work
of callers who have gone stops."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest

from verifier_server._proto.verifier.v1 import verifier_pb2 as pb
from verifier_server._proto.verifier.v1 import verifier_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration

SERVICE = "/verifier.v1.VerifierService"


@pytest.fixture
def channel(server) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.address) as channel:
        yield channel


def sleepy(item_id: str, seconds: float, name: str = "sleepy") -> pb.Item:
    item = pb.Item(id=item_id, completion="x", reward=pb.RewardSpec(name=name))
    item.reward.params.update({"seconds": seconds})
    return item


def test_a_late_item_gets_timeout_and_its_neighbours_their_verdicts(channel) -> None:
    request = pb.ScoreRequest(items=[sleepy("fast", 0.0), sleepy("slow", 1.8), sleepy("f2", 0)])
    started = time.monotonic()
    response = pb_grpc.VerifierServiceStub(channel).Score(request, timeout=1.0)
    assert time.monotonic() - started < 1.0  # answered, not DEADLINE_EXCEEDED
    by_id = {r.id: r for r in response.results}
    assert by_id["fast"].status == pb.STATUS_OK and by_id["f2"].status == pb.STATUS_OK
    assert by_id["slow"].status == pb.STATUS_TIMEOUT and by_id["slow"].reason == "deadline"


def test_a_bulk_batch_too_long_for_the_deadline_is_answered_in_time(channel) -> None:
    stub = pb_grpc.VerifierServiceStub(channel)
    request = pb.ScoreRequest(items=[sleepy(f"b{n}", 0.05, "sleepy_bulk") for n in range(64)])
    # First call: the cost is unknown, the job is admitted and cut off at the deadline.
    first = stub.Score(request, timeout=1.5)
    assert {r.status for r in first.results} == {pb.STATUS_TIMEOUT}
    time.sleep(3.5)  # the job finishes in its worker; the pool learns ~0.05 s per item
    # Now the pool knows 64 items cannot finish in 1 s: refused at once, not a late
    # DEADLINE_EXCEEDED.
    started = time.monotonic()
    second = stub.Score(request, timeout=1.0)
    assert time.monotonic() - started < 0.5
    assert {r.status for r in second.results} == {pb.STATUS_OVERLOADED}
    assert [r.id for r in second.results] == [f"b{n}" for n in range(64)]


def test_stream_with_undecodable_bytes_fails_at_once_with_invalid_argument(channel) -> None:
    call = channel.stream_stream(f"{SERVICE}/ScoreStream")
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        list(call(iter([b"\xff\xff\xff\xff garbage"]), timeout=20))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a ScoreRequest" in info.value.details()
    assert time.monotonic() - started < 5  # used to hang until the caller's deadline


def test_stream_garbage_after_a_good_message_fails_with_invalid_argument(channel) -> None:
    call = channel.stream_stream(f"{SERVICE}/ScoreStream")
    good = pb.ScoreRequest(items=[sleepy("a", 0.0)]).SerializeToString()
    with pytest.raises(grpc.RpcError) as info:
        list(call(iter([good, b"\xff\xff\xff\xff"]), timeout=20))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_list_verifiers_with_undecodable_bytes_is_invalid_argument(channel) -> None:
    call = channel.unary_unary(f"{SERVICE}/ListVerifiers")
    with pytest.raises(grpc.RpcError) as info:
        call(b"\xff\xff\xff\xff", timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_stream_refuses_an_id_already_in_flight(channel) -> None:
    stub = pb_grpc.VerifierServiceStub(channel)
    messages = [
        pb.ScoreRequest(items=[sleepy("same", 1.0)]),
        pb.ScoreRequest(items=[sleepy("same", 0.0)]),
    ]
    with pytest.raises(grpc.RpcError) as info:
        list(stub.ScoreStream(iter(messages), timeout=20))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "already in flight" in info.value.details()


def test_stream_accepts_an_id_again_once_its_result_was_sent(channel) -> None:
    stub = pb_grpc.VerifierServiceStub(channel)

    def requests() -> Iterator[pb.ScoreRequest]:
        yield pb.ScoreRequest(items=[sleepy("again", 0.0)])
        time.sleep(1.0)  # its result is sent meanwhile
        yield pb.ScoreRequest(items=[sleepy("again", 0.0)])

    results = [r for response in stub.ScoreStream(requests(), timeout=20) for r in response.results]
    assert [r.id for r in results] == ["again", "again"]
    assert all(r.status == pb.STATUS_OK for r in results)


def test_empty_ids_come_back_empty_from_every_kind_of_verifier(channel) -> None:
    items = [
        pb.Item(id="", completion="x", reward=pb.RewardSpec(name="format")),  # bulk
        pb.Item(id="", completion="x", reward=pb.RewardSpec(name="sleepy")),  # process
    ]
    response = pb_grpc.VerifierServiceStub(channel).Score(pb.ScoreRequest(items=items), timeout=10)
    assert [r.id for r in response.results] == ["", ""]
    assert {r.status for r in response.results} == {pb.STATUS_INVALID_REQUEST}


def test_a_reference_over_its_cap_is_invalid_request_naming_it(channel) -> None:
    schema = {"type": "object", "description": "x" * (5 << 20)}  # 5 MiB, over the 4 MiB cap
    item = pb.Item(id="big", completion="{}", reward=pb.RewardSpec(name="json_schema"))
    item.reference.struct_value.update(schema)
    fine = pb.Item(id="ok", completion="{}", reward=pb.RewardSpec(name="json_schema"))
    fine.reference.struct_value.update({"type": "object"})
    request = pb.ScoreRequest(items=[item, fine])
    response = pb_grpc.VerifierServiceStub(channel).Score(request, timeout=30)
    big, ok = response.results
    assert big.status == pb.STATUS_INVALID_REQUEST and "reference" in big.details["field"]
    assert ok.status == pb.STATUS_OK and ok.score == 1.0
