"""The trusted harness of a function test (HumanEval or MBPP style), run inside the sandbox.

Not imported by the server: its source is shipped into each run as /work/harness.py, next to
the candidate's /work/solution.py and /work/spec.json. It reads a per-run secret from the
first line of stdin before any candidate code runs (stdin then becomes /dev/null), runs the
solution, the test's setup and the test, and writes one line `<secret> <verdict> <error>` only
when the test has run to its end; then it exits at once. So exit(0), os._exit, atexit hooks,
killing the interpreter, and printing what a passing run prints all leave no verdict line, and
the verifier scores them as failures.

The test code sees the solution's names through guards: a value a solution function returns
must be built from the standard data types (int, float, str, list, dict, set, tuple, ...,
Counter, deque, Fraction, Decimal), so an object with a rigged __eq__ cannot pass an assert;
and it gets a pristine copy of the builtins, so patching `abs` or `len` does not fool it.

Not guaranteed: the candidate runs in this same process, so a program that deliberately digs
the secret out of the harness's frames or memory can still forge a verdict. Tests decided by
comparing stdout (stdin/stdout tests) have no such gap.
"""

import builtins
import collections
import decimal
import fractions
import json
import os
import types

# The harness's own builtins are a private copy, and the functions it calls after the
# candidate's code ran are bound now: patching the shared modules cannot reach them.
globals()["__builtins__"] = dict(vars(builtins))
_write, _exit, _GENERATOR, _FRACTION = os.write, os._exit, types.GeneratorType, fractions.Fraction
_VERDICTS = ("passed", "wrong_answer", "runtime_error")
_LEAVES = {type(None), bool, int, float, complex, str, bytes, range, type(...), decimal.Decimal}
_SEQUENCES = {list, tuple, set, frozenset, collections.deque}
_MAPPINGS = {dict, collections.OrderedDict, collections.defaultdict, collections.Counter}
_PY_CLASSES = (collections.Counter, fractions.Fraction)  # classes a program could patch


class Rejected(BaseException):
    """A solution returned a value the harness will not compare (BaseException: a test's
    `except Exception` must not swallow it)."""


class Guard:
    def __init__(self) -> None:
        self.pristine = {cls: dict(vars(cls)) for cls in _PY_CLASSES}

    def check(self, value: object) -> object:
        stack, seen = [value], set()
        while stack:
            item = stack.pop()
            kind = type(item)
            if kind in _LEAVES:
                continue
            if id(item) in seen:
                continue
            seen.add(id(item))
            if kind in _SEQUENCES:
                stack.extend(item)  # exact built-in types: iteration cannot be patched
            elif kind in _MAPPINGS:
                self._pristine(kind)
                stack.extend(dict.keys(item))
                stack.extend(dict.values(item))
            elif kind is _FRACTION:
                self._pristine(kind)
            else:
                name = getattr(kind, "__qualname__", "?")
                raise Rejected(f"returned a {str(name)[:80]}; only built-in data types compare")
        return value

    def _pristine(self, kind: type) -> None:
        original = self.pristine.get(kind)
        if original is not None and dict(vars(kind)) != original:
            raise Rejected(f"{kind.__name__} was modified")

    def wrap(self, function: object) -> object:
        def guarded(*args: object, **kwargs: object) -> object:
            result = function(*args, **kwargs)  # type: ignore[operator]
            if type(result) is _GENERATOR:
                return (self.check(item) for item in result)
            return self.check(result)

        return guarded


def read_secret() -> bytes:
    secret = b""
    while not secret.endswith(b"\n") and len(secret) < 256:
        chunk = os.read(0, 1)
        if not chunk:
            break
        secret += chunk
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    return secret.strip()


def report(secret: bytes, verdict: str, error: str = "") -> None:
    """`<secret> <verdict> <error>` in one write (atomic on a pipe), then exit at once."""
    assert verdict in _VERDICTS
    text = "".join(c if " " <= c <= "~" else "?" for c in error[:300])
    _write(1, b"\n" + secret + b" " + verdict.encode() + b" " + text.encode() + b"\n")
    _exit(0)


def main() -> None:
    secret = read_secret()
    pristine_builtins = dict(vars(builtins))
    with open("/work/spec.json") as f:
        spec = json.load(f)
    with open("/work/solution.py", "rb") as f:
        solution = f.read()
    guard = Guard()
    namespace = {"__name__": "solution", "__builtins__": builtins, "__file__": "/work/solution.py"}
    try:
        exec(compile(solution, "/work/solution.py", "exec"), namespace)
        tests = {
            name: guard.wrap(value)
            if callable(value) and not isinstance(value, type | types.ModuleType)
            else value
            for name, value in namespace.items()
        }
        tests.update({"__name__": "__test__", "__builtins__": pristine_builtins})
        for part in ("setup", "test"):
            if spec.get(part):
                exec(compile(spec[part], f"/work/{part}.py", "exec"), tests)
        if spec["style"] == "humaneval":
            entry_point = spec["entry_point"]
            if entry_point not in tests:
                report(secret, "runtime_error", f"the program defines no {entry_point!r}")
            tests["check"](tests[entry_point])
    except AssertionError:
        report(secret, "wrong_answer", "AssertionError")
    except Rejected as exc:
        report(secret, "wrong_answer", str(exc.args[0]) if exc.args else "Rejected")
    except BaseException as exc:
        report(secret, "runtime_error", _name(exc))
    report(secret, "passed")


def _name(exc: BaseException) -> str:
    try:
        return str(type(exc).__name__)[:80]
    except BaseException:
        return "exception"


if __name__ == "__main__":
    main()
