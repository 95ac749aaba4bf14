"""Both sides of a function test (HumanEval or MBPP style), each in its own sandboxed run.

Not imported by the server: this file is shipped as /work/harness.py into the two runs of a
linked pair (sandboxes.SandboxPool.run_pairs), `harness.py serve` in one and `harness.py
judge` in the other; they talk over two pipes and nothing else.

- serve (the candidate's run): executes /work/solution.py as module "solution", then answers
  calls that arrive on stdin with results on stdout, one JSON line each. Everything in that
  process is the candidate's: it may replace this loop, lie, exit or print; it only ever
  decides what values the judge receives, which is what any function decides.
- judge (another slot, uid and set of namespaces; it never runs the candidate's code): holds
  the test spec, runs the reference's prompt and setup and then the test with the interpreter's
  own builtins, where every solution name the test uses is a stub that sends the call to the
  candidate. Replies are decoded into built-in types only (None, bool, int of any size,
  float, complex, str, bytes, bytearray, list, tuple, dict, set, frozenset, range, deque,
  Fraction, Decimal, dict key and item views; iterators as their items; bounded size and
  depth), so no value the candidate makes can run code here. Anything else comes back as a
  `Remote` handle, equal only to itself, whose attributes and methods are again calls to the
  candidate: that is how tests use a solution's classes. Iterating over a handle (or `len`)
  asks the candidate for its items (or length), which the test then compares here: `x in
  handle` never sends x. The verdict is one JSON
  line on the judge's stdout, which only the host reads.

The candidate learns the arguments of the calls the test makes, never the expected values.
A candidate that stops answering, answers garbage, raises SystemExit or exits fails the test.
"""

from __future__ import annotations

import builtins
import collections
import collections.abc
import importlib
import json
import os
import sys
import types
from collections.abc import Iterator

MAX_MESSAGE_BYTES = 8 << 20
MAX_DEPTH = 100
MAX_ITEMS = 1_000_000  # elements of one encoded value
MAX_INT_BITS = 4_000_000  # an int this large goes as hex: JSON's decimal digits stop at 4,300
_JSON_INT_BITS = 12_000
_DEQUE = collections.deque


def _loaded(module: str, name: str) -> type | None:
    """A class of a module if it is imported already (a value of it cannot exist otherwise);
    importing fractions and decimal up front would cost every run ~10 ms."""
    return getattr(sys.modules.get(module), name, None)


def _class(module: str, name: str) -> type:
    return getattr(importlib.import_module(module), name)


_TAGS = {list: "l", tuple: "t", set: "s", frozenset: "fs", _DEQUE: "q"}


class Unencodable(Exception):
    pass


class ProtocolError(Exception):
    pass


# ---- values as plain JSON (both sides)


def encode(value: object, handles: dict[int, object] | None, budget: list[int] | None = None,
           depth: int = 0) -> object:  # fmt: skip
    """A JSON-able form of `value`. Objects that are not plain data become handles when
    `handles` is given (the candidate's side), else raise Unencodable (the judge's side)."""
    budget = budget if budget is not None else [MAX_ITEMS]
    budget[0] -= 1
    if budget[0] < 0 or depth > MAX_DEPTH:
        raise Unencodable("too large or too deep")
    kind = type(value)
    if value is None or kind is bool or kind is str:
        return value
    if kind is int:
        if value.bit_length() < _JSON_INT_BITS:
            return value
        return {"x": format(value, "x")} if value.bit_length() < MAX_INT_BITS else _refuse("int")
    if kind is float:
        return value
    if isinstance(value, Remote):
        if value._handle is None:
            raise Unencodable("a value the program could not send")
        return {"h": value._handle}
    if kind in _TAGS:
        return {_TAGS[kind]: [encode(item, handles, budget, depth + 1) for item in value]}  # type: ignore[attr-defined]
    if kind is dict:
        return {"d": [[encode(k, handles, budget, depth + 1), encode(v, handles, budget, depth + 1)]
                      for k, v in value.items()]}  # type: ignore[attr-defined]  # fmt: skip
    if kind is bytes:
        return {"b": value.hex()}  # type: ignore[attr-defined]
    if kind is bytearray:
        return {"ba": value.hex()}  # type: ignore[attr-defined]
    if kind is complex:
        return {"c": [value.real, value.imag]}  # type: ignore[attr-defined]
    if kind is range:
        return {"r": [value.start, value.stop, value.step]}  # type: ignore[attr-defined]
    if kind is _loaded("fractions", "Fraction"):
        return {"fr": [value.numerator, value.denominator]}  # type: ignore[attr-defined]
    if kind is _loaded("decimal", "Decimal"):
        return {"de": str(value)}
    if handles is None:
        raise Unencodable(f"a {kind.__name__} is not plain data")
    return _candidate_value(value, handles, budget, depth)


def _candidate_value(value: object, handles: dict[int, object], budget: list[int],
                     depth: int) -> object:  # fmt: skip
    """Subclasses of the built-in types as their base type, iterators as their items,
    anything else as a handle that the judge can call back through."""
    for base in (int, float, str, bytes, bytearray, dict, list, tuple, set, frozenset):
        if isinstance(value, base):
            plain = base(value.items()) if base is dict else base(value)  # type: ignore[attr-defined]
            return encode(plain, handles, budget, depth)
    if isinstance(value, _KEYS_VIEW | _ITEMS_VIEW):
        tag = "dk" if isinstance(value, _KEYS_VIEW) else "di"
        return {tag: encode(list(value), handles, budget, depth)["l"]}  # type: ignore[arg-type,index]
    if isinstance(value, collections.abc.Iterator | _VALUES_VIEW):  # itertools, iter(list), ...
        return {"it": _items(value, handles, budget, depth)}
    handles[len(handles) + 1] = value
    return {"h": len(handles), "type": str(type(value).__name__)[:80]}


_KEYS_VIEW, _VALUES_VIEW, _ITEMS_VIEW = type({}.keys()), type({}.values()), type({}.items())


def _items(value: object, handles: dict[int, object], budget: list[int], depth: int) -> list:
    items = []
    for item in value:  # type: ignore[attr-defined]
        items.append(item)
        if len(items) > MAX_ITEMS:
            raise Unencodable("an iterator too long")
    return encode(items, handles, budget, depth)["l"]  # type: ignore[index]


def _refuse(why: str) -> object:
    raise Unencodable(why)


_CONTAINERS = {tag: kind for kind, tag in _TAGS.items()}


def decode(data: object, remote: object | None = None, depth: int = 0) -> object:
    """Built-in values only, from what `encode` made; handles become Remote objects of
    `remote` (the judge's channel) or the candidate's own objects (a dict of handles)."""
    if depth > MAX_DEPTH:
        raise ProtocolError("too deep")
    kind = type(data)
    if data is None or kind in (bool, int, float, str):
        return data
    if kind is not dict or len(data) not in (1, 2):  # type: ignore[arg-type]
        raise ProtocolError(f"not an encoded value: {kind.__name__}")
    tag, payload = next(iter(data.items()))  # type: ignore[attr-defined]
    if tag in _CONTAINERS or tag == "it":
        if type(payload) is not list:
            raise ProtocolError("a container that is not a list")
        items = [decode(item, remote, depth + 1) for item in payload]
        return iter(items) if tag == "it" else _CONTAINERS[tag](items)
    if tag == "d" and type(payload) is list:
        pairs = payload
        if not all(type(pair) is list and len(pair) == 2 for pair in pairs):
            raise ProtocolError("a dict entry that is not a pair")
        return {decode(k, remote, depth + 1): decode(v, remote, depth + 1) for k, v in pairs}
    if tag == "b" and type(payload) is str:
        return bytes.fromhex(payload)
    if tag == "ba" and type(payload) is str:
        return bytearray.fromhex(payload)
    if tag == "x" and type(payload) is str and len(payload) <= MAX_INT_BITS // 4:
        return int(payload, 16)  # base 16 is linear in the length, with no digit limit
    if tag in ("dk", "di") and type(payload) is list:
        items = [decode(item, remote, depth + 1) for item in payload]
        return dict.fromkeys(items).keys() if tag == "dk" else dict(items).items()
    if tag == "c" and _numbers(payload, 2, float | int):
        return complex(payload[0], payload[1])  # type: ignore[index]
    if tag == "r" and _numbers(payload, 3, int):
        return range(*payload)  # type: ignore[misc]
    if tag == "fr" and _numbers(payload, 2, int):
        return _class("fractions", "Fraction")(payload[0], payload[1])  # type: ignore[index]
    if tag == "de" and type(payload) is str and len(payload) < 10_000:
        return _class("decimal", "Decimal")(payload)
    if tag == "h" and type(payload) is int:
        if isinstance(remote, dict):  # the candidate resolving one of its own handles
            return remote[payload]
        type_name = data.get("type", "object")  # type: ignore[attr-defined]
        return Remote(remote, payload, str(type_name)[:80])
    if tag == "u" and type(payload) is str:
        return Remote(None, None, payload[:80])
    raise ProtocolError(f"unknown value tag {str(tag)[:20]!r}")


def _numbers(payload: object, count: int, kind: type | types.UnionType) -> bool:
    return (
        type(payload) is list
        and len(payload) == count  # type: ignore[arg-type]
        and all(type(x) is not bool and isinstance(x, kind) for x in payload)  # type: ignore[attr-defined]
    )


# ---- the candidate's side


def serve() -> None:
    """Runs the solution, then answers {"op": "call"|"getattr", ...} lines until EOF."""
    calls = os.fdopen(os.dup(0), "rb")
    replies = os.dup(1)
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(2, 1)  # the solution's prints go to stderr, not into the replies
    namespace: dict[str, object] = {
        "__name__": "solution", "__builtins__": builtins, "__file__": "/work/solution.py"
    }  # fmt: skip
    try:
        with open("/work/solution.py", "rb") as f:
            exec(compile(f.read(), "/work/solution.py", "exec"), namespace)
        names = sorted(n for n, v in namespace.items() if callable(v) and not n.startswith("__"))
        _send(replies, {"names": names})
    except BaseException as exc:
        _send(replies, {"failed": type(exc).__name__})
        raise
    handles: dict[int, object] = {}
    for line in calls:
        _send(replies, _answer(json.loads(line), namespace, handles))


def _answer(message: dict, namespace: dict[str, object], handles: dict[int, object]) -> dict:
    try:
        if message["op"] == "getattr":
            value = getattr(handles[message["h"]], message["name"])
        elif message["op"] == "iter":
            value = list(handles[message["h"]])  # type: ignore[call-overload]
        elif message["op"] == "len":
            value = len(handles[message["h"]])  # type: ignore[arg-type]
        else:
            target = namespace[message["name"]] if "name" in message else handles[message["h"]]
            args = decode(message["args"], handles)
            kwargs = decode(message["kwargs"], handles)
            value = target(*args, **kwargs)  # type: ignore[operator]
        try:
            return {"ok": encode(value, handles)}
        except (Unencodable, ValueError, RecursionError) as exc:
            return {"ok": {"u": f"{type(value).__name__}: {exc}"[:80]}}
    except BaseException as exc:
        return {"raise": [type(exc).__name__, str(exc)[:200]]}


def _send(fd: int, message: dict) -> None:
    data = memoryview(json.dumps(message).encode() + b"\n")
    while data:
        data = data[os.write(fd, data) :]


# ---- the judge's side


class CandidateGone(BaseException):
    """The candidate stopped serving (BaseException: a test's `except Exception` must not
    swallow it; the channel remembers it anyway)."""


class RemoteError(Exception):
    """An exception the candidate raised whose type is not a built-in one."""


class Channel:
    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.read_fd, self.write_fd = read_fd, write_fd
        self.buffer = b""
        self.broken: str | None = None

    def fail(self, why: str) -> CandidateGone:
        self.broken = self.broken or why
        return CandidateGone(self.broken)

    def receive(self) -> dict:
        if self.broken:
            raise CandidateGone(self.broken)
        while b"\n" not in self.buffer:
            if len(self.buffer) > MAX_MESSAGE_BYTES:
                raise self.fail("the program sent a message too large")
            try:
                chunk = os.read(self.read_fd, 1 << 20)
            except OSError:
                chunk = b""
            if not chunk:
                raise self.fail("the program stopped serving")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):
            raise self.fail("the program sent garbage") from None
        if type(message) is not dict:
            raise self.fail("the program sent garbage")
        return message

    def request(self, message: dict) -> object:
        if self.broken:
            raise CandidateGone(self.broken)
        try:
            data = memoryview(json.dumps(message).encode() + b"\n")
            while data:
                data = data[os.write(self.write_fd, data) :]
        except OSError:
            raise self.fail("the program stopped serving") from None
        reply = self.receive()
        if "ok" in reply:
            try:
                return decode(reply["ok"], self)
            except Exception as exc:  # any malformed value, e.g. a set of lists, Fraction(1, 0)
                raise self.fail(
                    f"the program sent a malformed value: {type(exc).__name__}"
                ) from None
        raised = reply.get("raise")
        if type(raised) is list and len(raised) == 2 and all(type(x) is str for x in raised):
            raise _exception(self, raised[0], raised[1])
        raise self.fail("the program sent garbage")

    def call(self, target: dict, args: tuple, kwargs: dict) -> object:
        try:
            message = {"op": "call", **target, "args": encode(args, None),
                       "kwargs": encode(kwargs, None)}  # fmt: skip
        except Unencodable as exc:
            raise TypeError(f"cannot send this argument to the program: {exc}") from None
        return self.request(message)


def _exception(channel: Channel, name: str, message: str) -> BaseException:
    if name in ("StopIteration", "StopAsyncIteration"):
        # Raised by a function `map` or `filter` calls, it would end their iteration early
        # and `all(map(f, xs))` would pass: a RuntimeError, as PEP 479 makes it in generators.
        return RuntimeError(f"the program raised {name}: {message}")
    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(message)
        except BaseException:
            return RemoteError(f"{name}: {message}")
    if isinstance(cls, type) and issubclass(cls, BaseException):  # SystemExit, KeyboardInterrupt
        return channel.fail(f"the program raised {name}")
    return RemoteError(f"{name[:80]}: {message}")


class Remote:
    """A function or object of the candidate's, seen from the judge: calling it or reading
    an attribute asks the candidate; it equals only itself (comparisons never reach the
    candidate, which never sees the values the test expects)."""

    __slots__ = ("_channel", "_handle", "_name", "_type")

    def __init__(self, channel: object, handle: int | None, type_name: str,
                 name: str | None = None) -> None:  # fmt: skip
        self._channel, self._handle, self._type, self._name = channel, handle, type_name, name

    def _target(self) -> dict:
        if self._name is not None:
            return {"name": self._name}
        if self._handle is None or not isinstance(self._channel, Channel):
            raise TypeError(f"the program returned a {self._type}, which is not plain data")
        return {"h": self._handle}

    def __call__(self, *args: object, **kwargs: object) -> object:
        target = self._target()
        return self._channel.call(target, args, kwargs)  # type: ignore[union-attr]

    def __getattr__(self, name: str) -> object:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        target = self._target()
        if "h" not in target:
            raise AttributeError(name)
        return self._channel.request({"op": "getattr", **target, "name": name})  # type: ignore[union-attr]

    def __bool__(self) -> bool:
        return True  # as `object`; never asks the program

    def __iter__(self) -> Iterator[object]:
        """The object's items, asked of the program once; the test compares them here (so
        `x in handle` never sends x to the program)."""
        return iter(self._channel.request({"op": "iter", **self._handle_target()}))  # type: ignore[union-attr, call-overload]

    def __len__(self) -> int:
        length = self._channel.request({"op": "len", **self._handle_target()})  # type: ignore[union-attr]
        if type(length) is not int or length < 0:
            raise TypeError("the program's __len__ gave no length")
        return length

    def _handle_target(self) -> dict:
        target = self._target()
        if "h" not in target:
            raise TypeError(f"the program's {self._name} is a function")
        return target

    def __copy__(self) -> Remote:
        return self

    def __deepcopy__(self, memo: object) -> Remote:
        return self

    def __repr__(self) -> str:
        return f"<the program's {self._name or self._type}>"


def _referenced_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _referenced_names(const)
    return names


def judge() -> None:
    sys.stdout = sys.stderr  # the test's own prints; fd 1 carries only the verdict
    with open("/work/spec.json") as f:
        spec = json.load(f)
    namespace: dict[str, object] = {"__name__": "__test__", "__builtins__": builtins}
    try:
        for part in ("prompt", "setup"):
            exec(compile(spec.get(part) or "", f"/work/{part}.py", "exec"), namespace)
    except BaseException as exc:
        _verdict("invalid_test", f"raised {type(exc).__name__}: {exc}", field=part)
    trusted = set(namespace)
    test = compile(spec["test"], "/work/test.py", "exec")
    channel = Channel(0, 3)
    verdict, error = "passed", ""
    try:
        hello = channel.receive()
        names = hello.get("names")
        if type(names) is not list:
            raise channel.fail(f"the program did not start: {str(hello.get('failed'))[:80]}")
        entry_point = spec.get("entry_point", "")
        wanted = (_referenced_names(test) - trusted - set(vars(builtins))) | {entry_point}
        for name in set(names) & wanted:
            if type(name) is str:
                namespace[name] = Remote(channel, None, "function", name)
        if entry_point and entry_point not in names:
            verdict, error = "runtime_error", f"the program defines no {entry_point!r}"
        else:
            exec(test, namespace)
            if spec["style"] == "humaneval":
                namespace["check"](namespace[entry_point])  # type: ignore[operator]
    except AssertionError:
        verdict, error = "wrong_answer", "AssertionError"
    except CandidateGone as exc:
        verdict, error = "runtime_error", str(exc)
    except BaseException as exc:
        verdict, error = "runtime_error", f"{type(exc).__name__}: {exc}"
    if channel.broken:  # even if the test swallowed it
        verdict, error = "runtime_error", channel.broken
    _verdict(verdict, error)


def _verdict(verdict: str, error: str, field: str = "") -> None:
    line = json.dumps({"verdict": verdict, "error": error[:300], "field": field}) + "\n"
    os.write(1, line.encode())
    os._exit(0)


if __name__ == "__main__":
    {"serve": serve, "judge": judge}[sys.argv[1]]()
