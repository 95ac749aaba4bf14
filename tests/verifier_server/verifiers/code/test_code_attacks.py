"""Reward hacks found by attacking the code verifier after issue 12, one row per route that
once scored a non-solution, or made an item's status non-OK (masked: a free pass), from the
completion alone. Each now ends with status OK and score 0 (or the honest score)."""

from __future__ import annotations

import pytest

from verifier_server.types import Item, Result, Status
from verifier_server.verifiers.code.verifier import CodeParams, CodeVerifier

pytestmark = pytest.mark.integration


def score_raw(verifier: CodeVerifier, completion: str, reference: dict, **params: object) -> Result:
    items = [Item(id="x", completion=completion, reference=reference)]
    return verifier.score(items, CodeParams(extract="raw", **params))[0]


ADD_STDIO = {"language": "cpp", "tests": [{"stdin": "1 2\n", "stdout": "3\n"}]}
# A 70 MB binary: it compiled, and writing it into each test run's 64 MB /work failed the
# run's setup (ENOSPC), a sandbox error: STATUS_VERIFIER_ERROR, so the item was masked.
HUGE_BINARY = (
    "#include <cstdio>\nchar big[70 << 20] = {1};\n"
    'int main() { int a, b; scanf("%d %d", &a, &b); printf("%d\\n", a + b + big[a * 1000]); }\n'
)


def test_a_binary_too_large_for_the_runs_is_a_compile_error(verifier: CodeVerifier) -> None:
    result = score_raw(verifier, HUGE_BINARY, ADD_STDIO)
    assert (result.status, result.score, result.reason) == (Status.OK, 0.0, "compile_error")
    assert result.details["compile_outcome"] == "output_limit"


# The program learns whether its last answer passed from whether the next call comes. It
# guesses True for the first answer it does not know and leaves a port in TIME_WAIT saying
# so (41000 + i), and one more (40000 + 2i + 1) once the next call shows the guess passed; a
# later run reads /proc/self/net/tcp: a guess never confirmed was wrong. Through the network
# namespace its slot's runs shared, the fourth run of this item knew all eight answers.
LEARNS_ACROSS_RUNS = r"""
import socket
def _known():
    known, guessed = {}, set()
    try:
        lines = open('/proc/self/net/tcp').read().splitlines()[1:]
    except OSError:
        return known
    for line in lines:
        fields = line.split()
        port = int(fields[2].split(':')[1], 16)
        if fields[3] != '06':  # TIME_WAIT
            continue
        if 40000 <= port < 40100:
            known[(port - 40000) // 2] = bool((port - 40000) % 2)
        if 41000 <= port < 41100:
            guessed.add(port - 41000)
    return {**{i: False for i in guessed}, **known}
def _mark(port):
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(('127.0.0.1', port))
    except OSError:
        return
    listener.listen(1)
    client = socket.create_connection(('127.0.0.1', port))
    server, _ = listener.accept()
    client.close(); server.close(); listener.close()  # the client's side stays in TIME_WAIT
_KNOWN = _known()
_pending = []
def f(i):
    if _pending:
        _mark(40000 + 2 * _pending.pop() + 1)
    if i in _KNOWN:
        return _KNOWN[i]
    _mark(41000 + i)
    _pending.append(i)
    return True
"""
BITS = [True, True, False, True, False, True, True, False]
BOOLEANS = {
    "test": "def check(candidate):\n"
    + "".join(f"    assert candidate({i}) == {bit}\n" for i, bit in enumerate(BITS)),
    "entry_point": "f",
}


def test_a_program_cannot_tell_later_runs_which_answers_passed(verifier: CodeVerifier) -> None:
    results = [score_raw(verifier, LEARNS_ACROSS_RUNS, BOOLEANS) for _ in range(10)]
    assert [(r.status, r.score) for r in results] == [(Status.OK, 0.0)] * 10


# ---- honest solutions in odd but legal forms score 1.0, as they did in the program's process

HONEST_FORMS = {
    "returns_a_big_int": (
        "import math\ndef f(n):\n    return math.factorial(n)\n",
        "import math\nassert f(3000) == math.factorial(3000)",  # 30,000 bits
    ),
    "takes_a_big_int": ("def f(n):\n    return n + 1\n", "assert f(10**5000) == 10**5000 + 1"),
    "returns_itertools": (
        "import itertools\ndef f(n):\n    return itertools.chain(range(n), range(n))\n",
        "assert list(f(2)) == [0, 1, 0, 1]",
    ),
    "returns_iter_of_a_list": (
        "def f(n):\n    return iter([1, 2])\n",
        "assert list(f(2)) == [1, 2]",
    ),
    "returns_dict_keys": (
        "def f(n):\n    return {1: 2, 3: 4}.keys()\n",
        "assert f(0) == {1, 3} and sorted(f(0)) == [1, 3]",  # keys views compare as sets
    ),
    "returns_dict_values": (
        "def f(n):\n    return {1: 2, 3: 4}.values()\n",
        "assert sorted(f(0)) == [2, 4]",
    ),
    "returns_dict_items": (
        "def f(n):\n    return {1: 2}.items()\n",
        "assert list(f(0)) == [(1, 2)] and f(0) == {(1, 2)}",
    ),
    "returns_a_bytearray": ("def f(n):\n    return bytearray(b'ab')\n", "assert f(0) == b'ab'"),
    "returns_an_array": (
        "import array\ndef f(n):\n    return array.array('i', [1, 2])\n",
        "assert list(f(1)) == [1, 2] and len(f(1)) == 2 and 2 in f(1)",
    ),
    "returns_a_generator": (
        "def f(n):\n    yield from range(n)\n",
        "assert list(f(3)) == [0, 1, 2]",
    ),
    "prints_while_serving": (
        "def f(n):\n    print('debug', n)\n    return n\n",
        "assert f(3) == 3",
    ),
    "recurses_deeply": (
        "import sys\nsys.setrecursionlimit(10000)\n"
        "def f(n):\n    return 0 if n == 0 else 1 + f(n - 1)\n",
        "assert f(3000) == 3000",
    ),
}


@pytest.mark.parametrize("form", list(HONEST_FORMS))
def test_honest_solutions_in_odd_forms_pass(verifier: CodeVerifier, form: str) -> None:
    solution, test = HONEST_FORMS[form]
    result = score_raw(verifier, solution, {"asserts": [test]})
    assert (result.status, result.score) == (Status.OK, 1.0), result


def test_iterating_over_a_handle_never_sends_the_expected_value(verifier: CodeVerifier) -> None:
    """`x in handle` is decided in the judge over the items the program gave: a program whose
    object claims to contain everything (and logs what it is asked) learns nothing."""
    solution = (
        "import sys\nclass Bag:\n"
        "    def __contains__(self, x):\n        sys.stderr.write(f'ASKED {x!r}\\n')\n"
        "        return True\n"
        "    def __iter__(self):\n        return iter([0])\n"
        "    def __len__(self):\n        return 7\n"
        "    def __eq__(self, other):\n        return True\n"
        "def f():\n    return Bag()\n"
    )
    reference = {"asserts": ["assert 41 in f()", "assert len(f()) == 7 and f() != [41]"]}
    result = score_raw(verifier, solution, reference)
    assert [t["verdict"] for t in result.details["tests"]] == ["wrong_answer", "passed"], result
    assert "ASKED" not in result.details["stderr_tail"]


def test_stop_iteration_cannot_end_a_tests_map_early(verifier: CodeVerifier) -> None:
    """A function that only raises StopIteration ended `map` and `filter` in the judge, so
    `all(map(f, xs))` and `not any(map(f, xs))` passed: 2 of these 3 asserts, score 0.67."""
    reference = {
        "asserts": [
            "assert all(map(is_prime, [2, 3, 5, 7]))",
            "assert not any(map(is_prime, [4, 6]))",
            "assert list(filter(is_prime, [4, 5])) == [5]",
        ]
    }
    forged = score_raw(verifier, "def is_prime(n):\n    raise StopIteration\n", reference)
    assert (forged.status, forged.score) == (Status.OK, 0.0), forged
    honest = "def is_prime(n):\n    return n > 1 and all(n % d for d in range(2, n))\n"
    assert score_raw(verifier, honest, reference).score == 1.0
