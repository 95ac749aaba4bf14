"""The `reference` of a code item, validated: its language and its tests.

Three shapes (exactly one of `tests`, `test`, `asserts`):
- stdin/stdout: {"language": "python", "tests": [{"stdin": "1 2\\n", "stdout": "3\\n"}, ...]}
- HumanEval:    {"language": "python", "test": "def check(candidate): ...", "entry_point": "add",
                 "prompt": "def add(a, b):\n    \"\"\"...\"\"\""}
- MBPP:         {"language": "python", "asserts": ["assert f(1) == 2", ...], "setup": "..."}
Function tests (HumanEval, MBPP) are Python only. `prompt` and `setup` are the reference's
own code: the test uses their definitions (HumanEval's helpers such as `poly`), never the
program's; `prompt` also goes before the program's code. The test code, setup and prompt
must compile.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sandboxes.languages import LANGUAGE_NAMES
from verifier_server.verifiers.base import InvalidItem

MAX_TESTS = 1000


@dataclass(frozen=True)
class StdioTest:
    stdin: str
    stdout: str


@dataclass(frozen=True)
class FunctionTest:
    style: Literal["humaneval", "asserts"]
    test: str
    setup: str = ""
    entry_point: str = ""
    prompt: str = ""


@dataclass(frozen=True)
class CodeReference:
    language: str
    tests: tuple[StdioTest, ...] | tuple[FunctionTest, ...]


def parse_reference(reference: Any) -> CodeReference:
    if not isinstance(reference, dict):
        raise InvalidItem("reference", "must be an object with `tests`, `test` or `asserts`")
    language = reference.get("language", "python")
    if language not in LANGUAGE_NAMES:
        raise InvalidItem("reference.language", f"must be one of {list(LANGUAGE_NAMES)}")
    shapes = [key for key in ("tests", "test", "asserts") if key in reference]
    if len(shapes) != 1:
        raise InvalidItem("reference", "needs exactly one of `tests`, `test` or `asserts`")
    known = {"language", "tests", "test", "entry_point", "asserts", "setup", "prompt"}
    unknown = sorted(set(reference) - known)
    if unknown:
        raise InvalidItem(f"reference.{unknown[0]}", f"unknown key; known: {sorted(known)}")
    if shapes[0] == "tests":
        return CodeReference(language, _stdio_tests(reference["tests"]))
    if language != "python":
        raise InvalidItem(f"reference.{shapes[0]}", "function tests are supported for python only")
    setup = _python(reference, "setup", "reference.setup")
    prompt = _python(reference, "prompt", "reference.prompt")
    if shapes[0] == "test":
        test = _python(reference, "test", "reference.test", default=None)
        entry_point = _string(reference, "entry_point", "reference.entry_point")
        if not entry_point.isidentifier():
            raise InvalidItem("reference.entry_point", "must be a Python identifier")
        test_ = FunctionTest("humaneval", test, setup, entry_point, prompt)
        return CodeReference(language, (test_,))
    asserts = reference["asserts"]
    if not isinstance(asserts, list) or not asserts or len(asserts) > MAX_TESTS:
        raise InvalidItem("reference.asserts", f"must be a list of 1 to {MAX_TESTS} strings")
    tests = []
    for index, text in enumerate(asserts):
        if not isinstance(text, str) or not text.strip():
            raise InvalidItem(f"reference.asserts[{index}]", "must be a non-empty string")
        _check_syntax(text, f"reference.asserts[{index}]")
        tests.append(FunctionTest("asserts", text, setup, prompt=prompt))
    return CodeReference(language, tuple(tests))


def _stdio_tests(tests: Any) -> tuple[StdioTest, ...]:
    if not isinstance(tests, list) or not tests or len(tests) > MAX_TESTS:
        raise InvalidItem("reference.tests", f"must be a list of 1 to {MAX_TESTS} tests")
    parsed = []
    for index, test in enumerate(tests):
        where = f"reference.tests[{index}]"
        if not isinstance(test, dict):
            raise InvalidItem(where, 'must be an object {"stdin": ..., "stdout": ...}')
        extra = sorted(set(test) - {"stdin", "stdout"})
        if extra:
            raise InvalidItem(f"{where}.{extra[0]}", "unknown key; known: ['stdin', 'stdout']")
        stdin = _string(test, "stdin", f"{where}.stdin", default="")
        parsed.append(StdioTest(stdin, _string(test, "stdout", f"{where}.stdout")))
    return tuple(parsed)


def _string(container: dict[str, Any], key: str, where: str, default: str | None = None) -> str:
    if key not in container:
        if default is None:
            raise InvalidItem(where, "missing")
        return default
    value = container[key]
    if not isinstance(value, str):
        raise InvalidItem(where, f"must be a string, got {type(value).__name__}")
    return value


def _python(container: dict[str, Any], key: str, where: str, default: str | None = "") -> str:
    text = _string(container, key, where, default=default)
    _check_syntax(text, where)
    return text


def _check_syntax(text: str, where: str) -> None:
    """The reference's code is compiled (never run) here, so a typo in it is the caller's
    INVALID_REQUEST rather than every program's failure."""
    try:
        compile(text, where, "exec", dont_inherit=True)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise InvalidItem(where, f"does not compile: {exc}") from None
