"""Plugin discovery: entry points of an installed distribution, and `--plugin module`."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_process import PLUGIN_EXAMPLE, ServerProcess, server_env

from verifier_server.client import RewardClient
from verifier_server.registry import Registry, RegistryError
from verifier_server.types import Item, RewardSpec, Status


def fake_distribution(
    root: Path, name: str, entry_points: dict[str, str], modules: dict[str, str]
) -> Path:
    """Writes a minimal installed distribution (dist-info + modules) under `root`."""
    dist_info = root / f"{name.replace('-', '_')}-0.1.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    lines = "\n".join(f"{k} = {v}" for k, v in entry_points.items())
    (dist_info / "entry_points.txt").write_text(f"[verifier_server.verifiers]\n{lines}\n")
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))
    return root


@pytest.fixture
def on_path(tmp_path: Path) -> Iterator[Path]:
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))
    for module in [m for m in sys.modules if m.startswith("fake_")]:
        del sys.modules[module]


GOOD = """
from verifier_server.types import Result
from verifier_server.verifiers.base import Verifier

class Shout(Verifier):
    name = "shout"
    description = "1.0 if the completion is upper case"
    execution = "bulk"

    def score_one(self, item, params):
        return Result(id=item.id, score=float(item.completion.isupper()))
"""


def test_entry_point_of_an_installed_distribution_is_found(on_path: Path) -> None:
    fake_distribution(on_path, "fake-shout", {"shout": "fake_shout:Shout"}, {"fake_shout": GOOD})
    registry = Registry.load()
    assert "shout" in registry and "fake-shout" in registry.origin("shout")
    [result] = registry.instance("shout").score([Item(id="a", completion="HEY")], None)
    assert result.score == 1.0


def test_duplicate_name_names_both_places(on_path: Path) -> None:
    duplicate = GOOD.replace('name = "shout"', 'name = "format"')
    fake_distribution(on_path, "fake-dup", {"format": "fake_dup:Shout"}, {"fake_dup": duplicate})
    with pytest.raises(
        RegistryError, match=r"'format' is defined twice: by built-in and by entry point 'format'"
    ):
        Registry.load()


def test_entry_point_name_must_match_the_class(on_path: Path) -> None:
    fake_distribution(
        on_path, "fake-mismatch", {"loud": "fake_mismatch:Shout"}, {"fake_mismatch": GOOD}
    )
    with pytest.raises(
        RegistryError, match="entry point name 'loud' differs from the class's name 'shout'"
    ):
        Registry.load()


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("class NotAVerifier:\n    name = 'x'\n", "is not a subclass of"),
        (GOOD.replace('"shout"', '"Bad Name!"'), "name must match"),
        (GOOD.replace('execution = "bulk"', 'execution = "gpu"'), "execution must be one of"),
        (GOOD.replace("def score_one", "def other"), "defines neither score nor score_one"),
        (
            GOOD.replace('execution = "bulk"', 'execution = "async"'),
            "does not define `async def ascore`",
        ),
        (GOOD + "\n    Params = dict\n", "Params must be a pydantic model"),
        (
            GOOD + "\n    def __init__(self, path):\n        pass\n",
            "cannot be constructed without arguments",
        ),
        ("raise ImportError('missing dependency')\n", "cannot be loaded"),
    ],
)
def test_a_class_that_does_not_fit_is_refused(on_path: Path, source: str, message: str) -> None:
    entry = "fake_bad:NotAVerifier" if "NotAVerifier" in source else "fake_bad:Shout"
    fake_distribution(on_path, "fake-bad", {"shout": entry}, {"fake_bad": source})
    with pytest.raises(RegistryError, match=message):
        Registry.load()


def test_plugin_module_without_verifiers_is_refused() -> None:
    with pytest.raises(RegistryError, match="defines no Verifier subclass"):
        Registry.load(["json"])


KEYWORDS = Item(
    id="k",
    completion="Gradient descent",
    reward=RewardSpec("keywords"),
    reference=["gradient", "momentum"],
)


def score_keywords(server: ServerProcess) -> list:
    with RewardClient(server.address) as client:
        client.wait_ready()
        bad_option = Item(
            id="b", completion="x", reward=RewardSpec("keywords", {"case": True}), reference=["x"]
        )
        bad_reference = Item(id="r", completion="x", reward=RewardSpec("keywords"), reference="x")
        return client.score([KEYWORDS, bad_option, bad_reference])


def check_keywords_results(results: list) -> None:
    good, bad_option, bad_reference = results
    assert good.ok and good.score == 0.5 and good.details["missing"] == ["momentum"]
    assert bad_option.status == Status.INVALID_REQUEST and "case" in bad_option.details["error"]
    assert (
        bad_reference.status == Status.INVALID_REQUEST
        and bad_reference.details["field"] == "reference"
    )


@pytest.mark.integration
def test_example_plugin_loads_with_the_plugin_flag() -> None:
    server = ServerProcess(["--workers", "1", "--plugin", "verifier_keywords.keywords"])
    try:
        check_keywords_results(score_keywords(server))
    finally:
        server.stop()


@pytest.mark.integration
def test_example_plugin_loads_from_its_entry_point(tmp_path: Path) -> None:
    entry_points = (
        (PLUGIN_EXAMPLE / "pyproject.toml").read_text().split('"verifier_server.verifiers"]\n')[1]
    )
    name, value = (part.strip().strip('"') for part in entry_points.strip().split("=", 1))
    fake_distribution(tmp_path, "verifier-keywords", {name: value}, {})
    server = ServerProcess(["--workers", "1"], env=server_env([tmp_path]))
    try:
        check_keywords_results(score_keywords(server))
    finally:
        server.stop()
