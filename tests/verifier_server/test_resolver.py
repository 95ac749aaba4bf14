"""Resolving reward specs into plans: params validated, defaults merged, plans cached."""

from __future__ import annotations

import pytest

from verifier_server.config import ServerConfig
from verifier_server.registry import Registry
from verifier_server.resolver import Composite, Leaf, Resolver, SpecError
from verifier_server.types import RewardSpec


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.load(["testing_verifiers"], use_entry_points=False)


def resolver(registry: Registry, **config: object) -> Resolver:
    return Resolver(registry, ServerConfig.model_validate(config))


def test_config_defaults_sit_under_request_params(registry: Registry) -> None:
    r = resolver(registry, verifiers={"sleepy": {"seconds": 0.5, "timeout_s": 3}})
    plan = r.resolve(RewardSpec("sleepy", {"timeout_s": 4}))
    assert isinstance(plan, Leaf)
    assert plan.params.seconds == 0.5 and plan.timeout_s == 4


def test_identical_specs_share_one_plan(registry: Registry) -> None:
    r = resolver(registry)
    assert r.resolve(RewardSpec("format", {})) is r.resolve(RewardSpec("format", {}))


def test_verifier_without_timeout_gets_the_server_default(registry: Registry) -> None:
    r = resolver(registry, limits={"default_item_timeout_s": 7})
    assert r.resolve(RewardSpec("faulty")).timeout_s == 7


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        (RewardSpec("nope"), "reward.name", "unknown verifier or reward 'nope'"),
        (RewardSpec("sleepy", {"seconds": -1}), "reward.params", "seconds"),
        (RewardSpec("composite", {"components": []}), "reward.params", "components"),
        (
            RewardSpec("composite", {"components": [{"verifier": "nope"}]}),
            "reward.params.components[0]",
            "unknown verifier",
        ),
        (RewardSpec("named", {"x": 1}), "reward.params", "takes no params"),
    ],
)
def test_bad_specs_name_the_field(
    registry: Registry, spec: RewardSpec, field: str, message: str
) -> None:
    r = resolver(registry, rewards={"named": {"components": [{"verifier": "format"}]}})
    with pytest.raises(SpecError) as info:
        r.resolve(spec)
    assert info.value.field == field and message in info.value.message


def test_named_rewards_nest(registry: Registry) -> None:
    r = resolver(
        registry,
        rewards={
            "inner": {"components": [{"verifier": "format"}]},
            "outer": {"components": [{"verifier": "inner", "weight": 2}]},
        },
    )
    plan = r.resolve(RewardSpec("outer"))
    assert isinstance(plan, Composite) and isinstance(plan.parts[0], Composite)
    assert r.check_config() == []
