"""Conversion at the edge: validation names the field; round trips keep the data."""

from __future__ import annotations

import math

import pytest

from verifier_server import convert
from verifier_server._proto.verifier.v1 import verifier_pb2 as pb
from verifier_server.types import ChatMessage, Item, Result, RewardSpec, Status

LIMITS = convert.ItemLimits(max_completion_bytes=10)


def test_item_round_trip() -> None:
    item = Item(
        id="a",
        completion="4",
        reward=RewardSpec("math", {"tol": 0.5}),
        messages=(ChatMessage("user", "2+2"),),
        reference={"gold": [1, "x", None]},
        completion_tokens=3,
        truncated=True,
        group_id="g",
    )
    assert convert.item_from_proto(convert.item_to_proto(item), LIMITS) == item


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (pb.Item(completion="x", reward=pb.RewardSpec(name="f")), "id"),
        (pb.Item(id="a", completion="x"), "reward.name"),
        (pb.Item(id="a", completion="x" * 11, reward=pb.RewardSpec(name="f")), "completion"),
        (
            pb.Item(id="a", completion="é" * 6, reward=pb.RewardSpec(name="f")),
            "completion",
        ),  # 12 bytes
        (
            pb.Item(id="a", completion_tokens=-1, reward=pb.RewardSpec(name="f")),
            "completion_tokens",
        ),
        (
            pb.Item(
                id="a", prompt="p", messages=[pb.ChatMessage()], reward=pb.RewardSpec(name="f")
            ),
            "messages",
        ),
        (pb.Item(id="a" * 300, reward=pb.RewardSpec(name="f")), "id"),
    ],
)
def test_bad_items_name_the_field(message: pb.Item, field: str) -> None:
    with pytest.raises(convert.ItemError) as info:
        convert.item_from_proto(message, LIMITS)
    assert info.value.field == field


def test_unset_reference_is_none_and_null_is_none() -> None:
    message = pb.Item(id="a", reward=pb.RewardSpec(name="f"))
    assert convert.item_from_proto(message, LIMITS).reference is None
    message.reference.null_value = 0
    assert convert.item_from_proto(message, LIMITS).reference is None


def test_result_details_are_made_json_safe() -> None:
    result = Result(
        id="a", score=math.inf, status=Status.OK, details={"x": object(), "n": math.nan, 1: (1, 2)}
    )
    back = convert.result_from_proto(convert.result_to_proto(result))
    assert back.score == 0.0  # a non-finite score never crosses the wire
    assert back.details["n"] == "nan" and back.details["1"] == [1.0, 2.0]
    assert back.details["x"].startswith("<object object")
