"""From a reward spec to a plan: which verifiers run, with which validated params and time
limits, and how composites combine them. Plans are cached by the spec's content.

Every problem is a `SpecError` naming the field inside the item (or the config key), so the
caller can be told exactly what to fix.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from verifier_server.composite import CompositeParams
from verifier_server.config import ServerConfig, format_validation_error
from verifier_server.registry import Registry
from verifier_server.types import RewardSpec
from verifier_server.verifiers.base import Verifier

_MAX_DEPTH = 8  # named rewards nested in named rewards


class SpecError(Exception):
    """A reward spec that cannot be resolved; `field` is a path inside the item."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, eq=False)
class Leaf:
    """Run one verifier with validated params."""

    verifier: Verifier
    params: Any
    timeout_s: float
    cost_key: str  # the worker pool learns per-item cost under this key


@dataclass(frozen=True, eq=False)
class Composite:
    spec: CompositeParams
    parts: tuple[Leaf | Composite, ...]


Plan = Leaf | Composite


class Resolver:
    """Turns RewardSpecs into plans, validating params; caches by the spec's content."""

    def __init__(self, registry: Registry, config: ServerConfig) -> None:
        self.registry = registry
        self.config = config
        self._cache: dict[str, Plan] = {}

    def resolve(self, spec: RewardSpec, cache_key: bytes | str | None = None) -> Plan:
        key = (
            cache_key
            if cache_key is not None
            else json.dumps([spec.name, spec.params], sort_keys=True)
        )
        plan = self._cache.get(key)  # type: ignore[arg-type]
        if plan is None:
            plan = self._resolve(spec.name, spec.params, "reward", depth=0)
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = plan  # type: ignore[index]
        return plan

    def check_config(self) -> list[str]:
        """Every problem in the config's verifier defaults and named rewards, one line each."""
        problems = []
        for name, defaults in self.config.verifiers.items():
            if name not in self.registry:
                problems.append(
                    f"verifiers.{name}: unknown verifier; known: {self.registry.names()}"
                )
                continue
            try:
                self.registry.get(name).Params.model_validate(defaults)
            except ValidationError as exc:
                problems.append(format_validation_error(exc, f"verifiers.{name}").strip())
        for name in self.config.rewards:
            if name in self.registry or name == "composite":
                problems.append(f"rewards.{name}: shadows the verifier of the same name; rename it")
                continue
            try:
                self._resolve(name, {}, f"rewards.{name}", depth=0)
            except SpecError as exc:
                problems.append(f"{exc.field}: {exc.message}")
        return problems

    def _resolve(self, name: str, params: dict[str, Any], where: str, depth: int) -> Plan:
        if depth > _MAX_DEPTH:
            raise SpecError(where, f"rewards nested deeper than {_MAX_DEPTH} (a cycle?)")
        if name == "composite":
            try:
                spec = CompositeParams.model_validate(params)
            except ValidationError as exc:
                raise SpecError(f"{where}.params", format_validation_error(exc).strip()) from None
            return self._composite(spec, f"{where}.params", depth)
        if name in self.registry:
            return self._leaf(name, params, where)
        if name in self.config.rewards:
            if params:
                raise SpecError(f"{where}.params", f"named reward {name!r} takes no params")
            return self._composite(self.config.rewards[name], f"rewards.{name}", depth)
        known = sorted([*self.registry.names(), "composite", *self.config.rewards])
        raise SpecError(
            f"{where}.name" if where == "reward" else where,
            f"unknown verifier or reward {name!r}; known: {known}",
        )

    def _composite(self, spec: CompositeParams, where: str, depth: int) -> Composite:
        parts = tuple(
            self._resolve(c.verifier, c.params, f"{where}.components[{i}]", depth + 1)
            for i, c in enumerate(spec.components)
        )
        return Composite(spec, parts)

    def _leaf(self, name: str, params: dict[str, Any], where: str) -> Leaf:
        verifier_cls = self.registry.get(name)
        merged = {**self.config.verifiers.get(name, {}), **params}
        try:
            validated = verifier_cls.Params.model_validate(merged)
        except ValidationError as exc:
            raise SpecError(f"{where}.params", format_validation_error(exc).strip()) from None
        limits = self.config.limits
        timeout_s = verifier_cls.timeout_s(validated) or limits.default_item_timeout_s
        if timeout_s > limits.max_item_timeout_s:
            raise SpecError(
                f"{where}.params.timeout_s",
                f"{timeout_s:g} s is above the server's limit of {limits.max_item_timeout_s:g} s",
            )
        # A digest, not the params' text: the pool keeps up to 10,000 keys, and params can be
        # long (a rubric, a pattern).
        digest = hashlib.blake2b(validated.model_dump_json().encode(), digest_size=12)
        cost_key = f"{name}:{digest.hexdigest()}"
        return Leaf(self.registry.instance(name), validated, timeout_s, cost_key)
