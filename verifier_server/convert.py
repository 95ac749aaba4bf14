"""Protobuf <-> plain dataclasses, and validation of items as they arrive.

Every conversion between the two lives here; besides this module only the servicer, the
client, the dispatcher and bulk.py (which keep bulk items serialized) import the generated
code, and they convert through it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from google.protobuf import json_format, struct_pb2

from verifier_server._proto.verifier.v1 import verifier_pb2 as pb
from verifier_server.types import ChatMessage, Item, Result, RewardSpec, Status, truncate

_STRUCT_LIMIT_DEPTH = 100  # protobuf's own recursion limit; kept explicit for messages


@dataclass(frozen=True, slots=True)
class ItemLimits:
    """Per-item caps checked on arrival."""

    max_completion_bytes: int = 1 << 20
    max_id_chars: int = 256
    max_reference_bytes: int = 4 << 20


class ItemError(Exception):
    """A malformed item: `field` names the part of the item that is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    @property
    def root(self) -> str:
        """The first path component: "reward" for "reward.params"."""
        return self.field.split(".", 1)[0].split("[", 1)[0]


def value_to_python(value: struct_pb2.Value) -> object:
    return json_format.MessageToDict(value) if value.WhichOneof("kind") else None


def struct_to_dict(struct: struct_pb2.Struct) -> dict:
    return json_format.MessageToDict(struct)


def reward_from_proto(msg: pb.RewardSpec) -> RewardSpec:
    """Converts a reward spec. Raises ItemError naming the field."""
    if not msg.name:
        raise ItemError("reward.name", "missing: name a verifier or a named reward")
    try:
        return RewardSpec(name=msg.name, params=struct_to_dict(msg.params))
    except (ValueError, RecursionError) as exc:
        raise ItemError(
            "reward.params", f"not representable as JSON: {truncate(str(exc), 200)}"
        ) from None


def item_from_proto(msg: pb.Item, limits: ItemLimits, reward: RewardSpec | None = None) -> Item:
    """Validates one proto item and converts it. Raises ItemError naming the field.

    `reward` is the already converted `msg.reward` (the server converts each distinct spec
    once per request, not once per item).
    """
    item_id, completion = msg.id, msg.completion  # each upb attribute read copies the string
    if not item_id:
        raise ItemError("id", "must be a non-empty string")
    if len(item_id) > limits.max_id_chars:
        raise ItemError("id", f"longer than {limits.max_id_chars} characters")
    if reward is None:
        reward = reward_from_proto(msg.reward)
    # A char takes 1 to 4 bytes in UTF-8: encode only when the char count cannot decide.
    cap = limits.max_completion_bytes
    if len(completion) > cap or (len(completion) * 4 > cap and len(completion.encode()) > cap):
        raise ItemError("completion", f"over the {cap}-byte cap")
    if msg.completion_tokens < 0:
        raise ItemError("completion_tokens", "must be >= 0")
    messages = msg.messages
    prompt = msg.prompt
    if prompt and messages:
        raise ItemError("messages", "give either prompt or messages, not both")
    if msg.HasField("reference") and msg.reference.ByteSize() > limits.max_reference_bytes:
        raise ItemError("reference", f"over the {limits.max_reference_bytes}-byte cap")
    try:
        reference = value_to_python(msg.reference) if msg.HasField("reference") else None
    except (ValueError, RecursionError) as exc:
        raise ItemError(
            "reference", f"not representable as JSON: {truncate(str(exc), 200)}"
        ) from None
    return Item(
        id=item_id,
        completion=completion,
        reward=reward,
        prompt=prompt,
        messages=tuple(ChatMessage(m.role, m.content) for m in messages) if messages else (),
        reference=reference,
        completion_tokens=msg.completion_tokens,
        truncated=msg.truncated,
        group_id=msg.group_id,
    )


def reward_key(msg: pb.Item) -> bytes:
    """A cache key for an item's reward spec (identical specs are resolved once)."""
    return msg.reward.SerializeToString(deterministic=True)


def item_to_proto(item: Item, rewards: dict[int, pb.RewardSpec] | None = None) -> pb.Item:
    """`rewards` caches converted specs by id(): items of a batch usually share one spec."""
    request = pb.ScoreRequest()
    add_item(request, item, {} if rewards is None else rewards)
    return request.items[0]


def add_item(request: pb.ScoreRequest, item: Item, rewards: dict[int, pb.RewardSpec]) -> None:
    """Appends `item` to `request` in place (building a pb.Item and copying it in costs 3x)."""
    reward = None
    if item.reward is not None:
        reward = rewards.get(id(item.reward))
        if reward is None:
            reward = rewards[id(item.reward)] = pb.RewardSpec(name=item.reward.name)
            if item.reward.params:
                reward.params.update(item.reward.params)
    msg = request.items.add(id=item.id, completion=item.completion, reward=reward)
    if item.prompt:
        msg.prompt = item.prompt
    if item.messages:
        msg.messages.extend(pb.ChatMessage(role=m.role, content=m.content) for m in item.messages)
    if item.completion_tokens:
        msg.completion_tokens = item.completion_tokens
    if item.truncated:
        msg.truncated = True
    if item.group_id:
        msg.group_id = item.group_id
    if item.reference is not None:
        json_format.ParseDict(item.reference, msg.reference)


def result_to_proto(result: Result) -> pb.Result:
    score = result.score if math.isfinite(result.score) else 0.0
    msg = pb.Result(
        id=result.id,
        score=score,
        status=int(result.status),
        reason=result.reason,
        elapsed_ms=result.elapsed_ms,
    )
    if result.components:  # map and Struct fields are costly to fill: skip when empty
        msg.components.update(result.components)
    if result.details:
        msg.details.update(_jsonable(result.details))
    return msg


_STATUSES = {int(status): status for status in Status}


def result_from_proto(msg: pb.Result) -> Result:
    return Result(
        id=msg.id,
        score=msg.score,
        status=_STATUSES.get(msg.status, Status.UNSPECIFIED),
        reason=msg.reason,
        components=dict(msg.components) if msg.components else {},
        details=struct_to_dict(msg.details) if msg.HasField("details") else {},
        elapsed_ms=msg.elapsed_ms,
    )


def results_to_response(results: Iterable[Result]) -> pb.ScoreResponse:
    return pb.ScoreResponse(results=[result_to_proto(r) for r in results])


def request_from_items(items: Sequence[Item]) -> pb.ScoreRequest:
    request = pb.ScoreRequest()
    rewards: dict[int, pb.RewardSpec] = {}  # id(spec) -> proto; the items keep the specs alive
    for item in items:
        add_item(request, item, rewards)
    return request


def _jsonable(value: object, depth: int = 0) -> object:
    """Makes verifier details safe for a Struct: str keys, finite floats, bounded depth."""
    if depth > 32:
        return "<too deep>"
    if isinstance(value, dict):
        return {str(k): _jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v, depth + 1) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else str(value)
    return truncate(repr(value), 200)
