"""The official JSON Schema Test Suite as a conformance table for the json_schema verifier.

Data: json-schema-org/JSON-Schema-Test-Suite at commit 44401e0c046704b476ec9d2e2fccdaee618f259d
(MIT licence, tests/…/data/json_schema_test_suite/LICENSE): every required test of draft2020-12
and draft7 (`tests/<draft>/*.json`) and the optional format tests of the formats this verifier
checks (`tests/<draft>/optional/format/<format>.json`, run with `check_formats`).

Each case runs through the verifier (in-process here; every case over a real server in
`test_suite_over_the_server`). Its outcome must be the one the tables below say: "agree" (OK,
score 1.0 exactly when the suite says valid) unless listed as "refused" (INVALID_REQUEST: we
decline the schema, with the reason) or "differs" (OK with the other verdict, with the reason).
A row whose outcome changes without the tables saying so fails; so does a table entry that no
longer matches any case. No case may give any other status.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from verifier_server.client import RewardClient
from verifier_server.types import JSON, Item, Result, RewardSpec, Status
from verifier_server.verifiers.json_schema.verifier import JsonSchemaVerifier

SUITE = Path(__file__).parent / "data" / "json_schema_test_suite"
DRAFT_URIS = {
    "draft7": "http://json-schema.org/draft-07/schema#",
    "draft2020-12": "https://json-schema.org/draft/2020-12/schema",
}

REMOTE = "remote $ref: the verifier never fetches (no network), so it is an invalid reference"
REFUSED_FILES = {
    "boolean_schema.json": "a boolean root schema (`true`/`false`): the reference must be an "
    "object (a bare `true` accepts anything, most likely a caller's mistake)",
    "refRemote.json": REMOTE,
}
UNEVALUATED_WITH_PATTERNS = (
    "unevaluatedProperties with patternProperties: jsonschema matches that pair with Python's "
    "backtracking re, which a hostile key could stall, so such schemas are refused"
)
PROPERTY_NAME_ESCAPE = (
    "\\p{Letter}: RE2 (and the meta-schema's regex format check) knows \\p{L}, not long names"
)
REFUSED_GROUPS = (
    {
        ("draft2020-12", "dynamicRef.json", group): REMOTE
        for group in (
            "strict-tree schema, guards against misspelled properties",
            "tests for implementation dynamic anchor and reference link",
            "$ref and $dynamicAnchor are independent of order - $defs first",
            "$ref and $dynamicAnchor are independent of order - $ref first",
            "$ref to $dynamicRef finds detached $dynamicAnchor",
        )
    }
    | {
        ("draft2020-12", "unevaluatedProperties.json", group): UNEVALUATED_WITH_PATTERNS
        for group in (
            "unevaluatedProperties with adjacent patternProperties",
            "unevaluatedProperties with nested patternProperties",
            "dynamic evalation inside nested refs",
            "unevaluatedProperties can see annotations from if without then and else",
            "Evaluated properties collection needs to consider instance location with "
            "patternProperties",
        )
    }
    | {
        (
            "draft2020-12",
            "pattern.json",
            "pattern with Unicode property escape requires unicode mode",
        ): (PROPERTY_NAME_ESCAPE),
        (
            "draft2020-12",
            "patternProperties.json",
            "patternProperties with Unicode property escape",
        ): (PROPERTY_NAME_ESCAPE),
    }
)
DIFFERS = {
    (
        "draft2020-12",
        "vocabulary.json",
        "schema that uses custom metaschema with with no validation vocabulary",
        "no validation: invalid number, but it still validates",
    ): "$vocabulary is not honoured (jsonschema's choice): validation keywords always apply, "
    "so the verdict is stricter (0 where the suite says valid), never more lenient",
}


@dataclass(frozen=True)
class Case:
    draft: str
    file: str  # "minimum.json", or "optional/format/email.json"
    group: str
    description: str
    schema: JSON
    data: JSON
    valid: bool

    @property
    def check_formats(self) -> bool:
        return self.file.startswith("optional/format/")

    @property
    def name(self) -> str:
        return f"{self.draft}/{self.file}: {self.group} | {self.description}"

    def expected(self) -> str:
        if self.file.rsplit("/", 1)[-1] in REFUSED_FILES:
            return "refused"
        if (self.draft, self.file, self.group) in REFUSED_GROUPS:
            return "refused"
        if (self.draft, self.file, self.group, self.description) in DIFFERS:
            return "differs"
        return "agree"

    def item(self, item_id: str = "case") -> Item:
        schema = self.schema
        if isinstance(schema, dict) and "$schema" not in schema:
            # The suite leaves the draft to the harness; ours reads it from `$schema`.
            schema = {"$schema": DRAFT_URIS[self.draft], **schema}
        params = {"check_formats": self.check_formats}
        return Item(
            id=item_id,
            completion=json.dumps(self.data),
            reference=schema,
            reward=RewardSpec("json_schema", params),
        )

    def outcome(self, result: Result) -> str:
        if result.status == Status.INVALID_REQUEST:
            return "refused"
        if result.status != Status.OK:
            return f"status {result.status.name}: {result.reason} {result.details.get('error')}"
        return "agree" if (result.score == 1.0) is self.valid else "differs"


def suite_files() -> list[Path]:
    return sorted(SUITE.glob("*/*.json")) + sorted(SUITE.glob("*/optional/format/*.json"))


def load_cases(path: Path) -> list[Case]:
    draft = path.relative_to(SUITE).parts[0]
    file = path.relative_to(SUITE / draft).as_posix()
    return [
        Case(draft, file, group["description"], test["description"], group["schema"],
             test["data"], test["valid"])
        for group in json.loads(path.read_text(encoding="utf-8"))
        for test in group["tests"]
    ]  # fmt: skip


ALL_CASES = [case for path in suite_files() for case in load_cases(path)]


def score_in_process(cases: list[Case]) -> list[Result]:
    verifier = JsonSchemaVerifier()
    results = []
    for case in cases:
        item = case.item()
        assert item.reward is not None
        [result] = verifier.score([item], JsonSchemaVerifier.Params(**item.reward.params))
        results.append(result)
    return results


def mismatches(cases: list[Case], results: list[Result]) -> list[str]:
    return [
        f"{case.name}: expected {case.expected()}, got {case.outcome(result)}"
        for case, result in zip(cases, results, strict=True)
        if case.outcome(result) != case.expected()
    ]


@pytest.mark.parametrize("path", suite_files(), ids=lambda p: p.relative_to(SUITE).as_posix())
def test_suite_file_matches_the_table(path: Path) -> None:
    cases = load_cases(path)
    assert cases
    assert mismatches(cases, score_in_process(cases)) == []


def test_every_table_entry_names_cases() -> None:
    files = {case.file.rsplit("/", 1)[-1] for case in ALL_CASES}
    groups = {(case.draft, case.file, case.group) for case in ALL_CASES}
    rows = {(case.draft, case.file, case.group, case.description) for case in ALL_CASES}
    assert set(REFUSED_FILES) <= files
    assert set(REFUSED_GROUPS) <= groups
    assert set(DIFFERS) <= rows


# The counts docs/verifiers.md reports; a change here is a change of its numbers.
EXPECTED_COUNTS = {
    ("draft2020-12", "required"): {"agree": 1202, "refused": 96, "differs": 1},
    ("draft7", "required"): {"agree": 886, "refused": 41},
    ("draft2020-12", "format"): {"agree": 399},
    ("draft7", "format"): {"agree": 363},
}


def test_counts_are_the_documented_numbers() -> None:
    counts: dict[tuple[str, str], Counter[str]] = {}
    for case in ALL_CASES:
        kind = "format" if case.check_formats else "required"
        counts.setdefault((case.draft, kind), Counter())[case.expected()] += 1
    assert {key: dict(counter) for key, counter in counts.items()} == EXPECTED_COUNTS


def test_the_docs_report_these_counts() -> None:
    readme = (Path(__file__).parents[3] / "docs" / "verifiers.md").read_text(encoding="utf-8")
    for (draft, kind), counts in EXPECTED_COUNTS.items():
        numbers = [counts.get(key, 0) for key in ("agree", "refused", "differs")]
        cells = " | ".join(f"{n:,}" for n in [sum(numbers), *numbers])
        label = f"{draft}, {'required' if kind == 'required' else '`format`'}"
        assert any(
            line.startswith(f"| {label}") and line.endswith(f"| {cells} |")
            for line in readme.splitlines()
        ), (label, cells)


@pytest.mark.integration
def test_suite_over_the_server(client: RewardClient) -> None:
    # Over the wire every number in the schema becomes a double (google.protobuf.Value):
    # the outcomes must still be the table's.
    items = [case.item(str(index)) for index, case in enumerate(ALL_CASES)]
    results: list[Result] = []
    for start in range(0, len(items), 1000):
        results += client.score(items[start : start + 1000], timeout_s=120)
    assert [result.id for result in results] == [item.id for item in items]
    assert mismatches(ALL_CASES, results) == []


HOSTILE_INSTANCES = [
    r'{"\ud800": "\udfff", "a": ["\ud800x", 1e308, -5e-324], "b": {"\udc00": null}}',
    "9" * 400,  # a big integer: overflowed float division in multipleOf
    r'["\ud800", "x\udfff", 4, 4.5, [], {}]',
]


def test_hostile_instances_against_every_suite_schema_are_verdicts() -> None:
    # Every distinct schema of the suite, against completions built to crash keywords (lone
    # surrogates for the regex and format checks, big numbers for multipleOf): each must be an
    # OK verdict whose details protobuf can encode, unless the schema is refused whatever the
    # completion (then "null" is refused too).
    verifier = JsonSchemaVerifier()
    params = JsonSchemaVerifier.Params(check_formats=True)
    schemas = {json.dumps(c.item().reference, sort_keys=True) for c in ALL_CASES}
    completions = ["null", *HOSTILE_INSTANCES]
    failures = []
    for schema in sorted(schemas):
        items = [Item(id="x", completion=c, reference=json.loads(schema)) for c in completions]
        baseline, *results = verifier.score(items, params)
        for completion, result in zip(HOSTILE_INSTANCES, results, strict=True):
            json.dumps(result.details, ensure_ascii=False).encode("utf-8")
            if not result.ok and result.status != baseline.status:
                failures.append((schema[:100], completion[:20], result.status.name, result.reason))
    assert len(schemas) > 600 and failures == []
