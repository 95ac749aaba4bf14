"""Finds verifiers: the built-ins, the `verifier_server.verifiers` entry-point group, and
modules named with `--plugin package.module`.

An entry point's value names a class (`my_pkg.mod:MyVerifier`) and its name must equal the
class's `name`. A `--plugin` module contributes every `Verifier` subclass it defines. A class
that does not fit the interface, or a name given twice, is a RegistryError naming both places.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
from collections.abc import Iterable, Sequence
from importlib.metadata import entry_points
from typing import get_args

from pydantic import BaseModel

from verifier_server.verifiers.base import Execution, Verifier

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "verifier_server.verifiers"
BUILTIN_MODULES = (
    "verifier_server.verifiers.format",
    "verifier_server.verifiers.string_check",
    "verifier_server.verifiers.length",
    "verifier_server.verifiers.json_schema.verifier",
    "verifier_server.verifiers.math.verifier",
    "verifier_server.verifiers.code.verifier",
    "verifier_server.verifiers.judge.verifier",
    "verifier_server.verifiers.openai_grader.verifier",
    "verifier_server.verifiers.reward_model.verifier",
)
# Imported once in the worker pool's forkserver, so workers are forked with them loaded.
FORKSERVER_PRELOAD = (*BUILTIN_MODULES, "verifier_server.verifiers.math.preload")
RESERVED_NAMES = frozenset({"composite"})  # handled by the dispatcher, not a Verifier class
_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


class RegistryError(Exception):
    """A plugin could not be loaded or does not fit the Verifier interface."""


class Registry:
    """Verifier classes by name, plus one shared instance of each per process."""

    def __init__(self) -> None:
        self._classes: dict[str, type[Verifier]] = {}
        self._origins: dict[str, str] = {}
        self._instances: dict[str, Verifier] = {}

    @classmethod
    def load(cls, plugins: Sequence[str] = (), *, use_entry_points: bool = True) -> Registry:
        registry = cls()
        for module in BUILTIN_MODULES:
            registry.add_module(module, origin="built-in")
        if use_entry_points:
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                origin = f"entry point {ep.name!r} ({ep.value}) of {_dist_name(ep)}"
                try:
                    obj = ep.load()
                except Exception as exc:
                    raise RegistryError(f"{origin}: cannot be loaded: {exc!r}") from exc
                registry.add(obj, origin=origin)
                if getattr(obj, "name", None) != ep.name:
                    raise RegistryError(
                        f"{origin}: entry point name {ep.name!r} differs from the class's "
                        f"name {getattr(obj, 'name', None)!r}; make them equal"
                    )
        for module in plugins:
            registry.add_module(module, origin=f"--plugin {module}")
        return registry

    def add_module(self, module_name: str, origin: str) -> None:
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise RegistryError(f"{origin}: cannot import {module_name!r}: {exc!r}") from exc
        found = [
            obj
            for obj in vars(module).values()
            if inspect.isclass(obj)
            and issubclass(obj, Verifier)
            and obj is not Verifier
            and obj.__module__ == module.__name__
            and "name" in vars(obj)
        ]
        if not found:
            raise RegistryError(f"{origin}: module {module_name!r} defines no Verifier subclass")
        for verifier_cls in found:
            self.add(verifier_cls, origin=origin)

    def add(self, obj: object, origin: str) -> None:
        verifier_cls = _check_class(obj, origin)
        name = verifier_cls.name
        if name in self._classes:
            raise RegistryError(
                f"verifier name {name!r} is defined twice: by {self._origins[name]} and by {origin}"
            )
        self._classes[name] = verifier_cls
        self._origins[name] = origin

    def warm_up(self) -> None:
        """Calls `warm_up` on every verifier that defines one; failures are logged, not raised."""
        for name, verifier_cls in self.items():
            if verifier_cls.warm_up is not Verifier.warm_up:
                try:
                    self.instance(name).warm_up()
                except Exception:
                    log.exception("warm-up of verifier %r failed; its items will fail", name)

    def get(self, name: str) -> type[Verifier]:
        return self._classes[name]

    def instance(self, name: str) -> Verifier:
        if name not in self._instances:
            self._instances[name] = self._classes[name]()
        return self._instances[name]

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def names(self) -> list[str]:
        return sorted(self._classes)

    def items(self) -> Iterable[tuple[str, type[Verifier]]]:
        return sorted(self._classes.items())

    def origin(self, name: str) -> str:
        return self._origins[name]


def _check_class(obj: object, origin: str) -> type[Verifier]:
    def fail(why: str) -> RegistryError:
        return RegistryError(f"{origin}: {why}")

    if not (inspect.isclass(obj) and issubclass(obj, Verifier)):
        raise fail(f"{obj!r} is not a subclass of verifier_server.verifiers.base.Verifier")
    name = vars(obj).get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise fail(f"{obj.__name__}.name must match [a-z][a-z0-9_]*, got {name!r}")
    if name in RESERVED_NAMES:
        raise fail(f"{obj.__name__}.name {name!r} is reserved")
    if not (inspect.isclass(obj.Params) and issubclass(obj.Params, BaseModel)):
        raise fail(
            f"{obj.__name__}.Params must be a pydantic model (subclass verifiers.base.Params)"
        )
    if obj.execution not in get_args(Execution):
        raise fail(
            f"{obj.__name__}.execution must be one of {get_args(Execution)}, got {obj.execution!r}"
        )
    if obj.Settings is not None and not (
        inspect.isclass(obj.Settings) and issubclass(obj.Settings, BaseModel)
    ):
        raise fail(f"{obj.__name__}.Settings must be a pydantic model or None")
    for hook in ("setup", "close"):
        if not inspect.iscoroutinefunction(getattr(obj, hook)):
            raise fail(f"{obj.__name__}.{hook} must be `async def`")
    if obj.execution == "async":
        if obj.ascore is Verifier.ascore or not inspect.iscoroutinefunction(obj.ascore):
            raise fail(f"{obj.__name__} is async but does not define `async def ascore`")
    elif obj.score is Verifier.score and obj.score_one is Verifier.score_one:
        raise fail(f"{obj.__name__} defines neither score nor score_one")
    try:
        obj()
    except Exception as exc:
        raise fail(f"{obj.__name__}() cannot be constructed without arguments: {exc!r}") from exc
    return obj


def _dist_name(ep: object) -> str:
    dist = getattr(ep, "dist", None)
    return f"distribution {dist.name!r}" if dist is not None else "an unknown distribution"
