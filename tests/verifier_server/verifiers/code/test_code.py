"""The code verifier: comparison, reference validation, verdicts, and the reward hacks that
must not pass. Programs run in real sandboxes."""

from __future__ import annotations

import pytest

from sandboxes import SandboxConfig, SandboxPool
from verifier_server.types import Item, Result, Status
from verifier_server.verifiers.base import InvalidItem
from verifier_server.verifiers.code.compare import outputs_match, tokens_close
from verifier_server.verifiers.code.reference import parse_reference
from verifier_server.verifiers.code.verifier import CodeParams, CodeVerifier, judge_verdict

# ---- pure parts


@pytest.mark.parametrize(
    ("actual", "expected", "mode", "match"),
    [
        (b"3\n", "3\n", "exact", True),
        (b"3", "3\n", "exact", False),
        (b"1  2\n3\n\n", "1 2\n3", "whitespace", True),
        (b"1 2\n", "1 2\n3\n", "whitespace", False),  # a missing line never passes
        (b"1 2\n3\n4\n", "1 2\n3\n", "whitespace", False),
        (b"0.3333333\n", "0.333333333", "float", True),  # |diff| = 3.3e-8 <= 1e-6
        (b"1.1\n", "1.2", "float", False),
        (b"nan\n", "1.0", "float", False),
        (b"\xff\xfe\n", "\xff\xfe\n", "exact", False),  # invalid UTF-8 never matches
    ],
)
def test_outputs_match(actual: bytes, expected: str, mode: str, match: bool) -> None:
    assert outputs_match(actual, expected, mode, 1e-6) is match  # type: ignore[arg-type]


def test_tokens_close_is_relative_for_large_numbers() -> None:
    assert tokens_close("1000000.5", "1000000.0", 1e-6)  # relative diff 5e-7
    assert not tokens_close("1000002.5", "1000000.0", 1e-6)  # relative diff 2.5e-6


@pytest.mark.parametrize(
    ("reference", "field"),
    [
        ("print(1)", "reference"),
        ({"tests": [], "language": "python"}, "reference.tests"),
        ({"tests": [{"stdin": "1"}]}, "reference.tests[0].stdout"),
        ({"tests": [{"stdout": 3}]}, "reference.tests[0].stdout"),
        ({"tests": [{"stdout": "3", "input": "x"}]}, "reference.tests[0].input"),
        ({"tests": [{"stdout": "3"}], "language": "rust"}, "reference.language"),
        ({"test": "def check(c): pass"}, "reference.entry_point"),
        ({"test": "def check(c): pass", "entry_point": "1x"}, "reference.entry_point"),
        ({"asserts": ["assert f(1)", ""]}, "reference.asserts[1]"),
        ({"asserts": ["assert f()"], "language": "cpp"}, "reference.asserts"),
        ({"asserts": ["x"], "tests": [{"stdout": ""}]}, "reference"),
    ],
)
def test_bad_references_name_the_field(reference: object, field: str) -> None:
    with pytest.raises(InvalidItem) as raised:
        parse_reference(reference)
    assert raised.value.field == field


@pytest.mark.parametrize(
    ("stdout", "verdict"),
    [
        (b'{"verdict": "passed", "error": ""}\n', "passed"),
        (b'{"verdict": "wrong_answer", "error": "AssertionError"}\n', "wrong_answer"),
        (b"passed\n", ""),  # not the judge's line: no verdict
        (b'{"verdict": "passed"}\n{"verdict": "passed"}\n', ""),  # exactly one line
        (b'{"verdict": "excellent"}\n', ""),
        (b"", ""),
    ],
)
def test_judge_verdict_is_exactly_one_known_line(stdout: bytes, verdict: str) -> None:
    assert judge_verdict(stdout)[0] == verdict


# ---- real runs

pytestmark = pytest.mark.integration


def fenced(code: str, tag: str = "python") -> str:
    return f"Here is my solution.\n```{tag}\n{code}\n```\n"


def score(verifier: CodeVerifier, completion: str, reference: object, **params: object) -> Result:
    return verifier.score([Item(id="x", completion=completion, reference=reference)],
                          CodeParams(**params))[0]  # fmt: skip


ADD_TESTS = {"tests": [{"stdin": "1 2\n", "stdout": "3\n"}, {"stdin": "5 7", "stdout": "12"}]}
HUMANEVAL = {
    "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert abs(candidate(0.1,"
    " 0.2) - 0.3) < 1e-9\n    assert candidate(-1, 1) == 0\n",
    "entry_point": "add",
}


@pytest.mark.parametrize(
    ("language", "code"),
    [
        ("python", "a, b = map(int, input().split())\nprint(a + b)"),
        ("cpp", "#include <iostream>\nint main(){long a,b; std::cin>>a>>b; std::cout<<a+b;}"),
        ("javascript", "const [a, b] = require('fs').readFileSync(0, 'utf8').trim().split(/\\s+/)"
         ".map(Number);\nconsole.log(a + b);"),
    ],
)  # fmt: skip
def test_correct_programs_pass_in_each_language(
    verifier: CodeVerifier, language: str, code: str
) -> None:
    result = score(verifier, fenced(code, language), {**ADD_TESTS, "language": language})
    assert (result.status, result.score, result.details["tests_passed"]) == (Status.OK, 1.0, 2)


DEV_STDIO_PROGRAMS = {
    "python": "a, b = map(int, open('/dev/stdin').read().split())\n"
    "with open('/dev/stdout', 'w') as out:\n    out.write(f'{a + b}\\n')",
    # print's "3", then a reopened /dev/stdout's newline: appended, as on a pipe (a regular
    # file opened with O_TRUNC would have dropped the "3")
    "python_mixed": "a, b = map(int, open('/dev/fd/0').read().split())\n"
    "print(a + b, end='', flush=True)\nopen('/dev/stdout', 'w').write('\\n')",
    "cpp": '#include <cstdio>\nint main(){freopen("/dev/stdin","r",stdin); '
    'freopen("/dev/stdout","w",stdout); long a,b; scanf("%ld %ld",&a,&b); '
    'printf("%ld\\n",a+b);}',
    "cpp_streams": '#include <fstream>\nint main(){std::ifstream in("/dev/stdin"); '
    'std::ofstream out("/dev/stdout"); long a,b; in>>a>>b; out<<a+b<<std::endl;}',
    "javascript": "const fs = require('fs');\nconst [a, b] = fs.readFileSync('/dev/stdin', "
    "'utf8').trim().split(/\\s+/).map(Number);\nfs.writeFileSync('/dev/stdout', `${a + b}\\n`);",
}


@pytest.mark.parametrize("variant", sorted(DEV_STDIO_PROGRAMS))
def test_programs_that_open_dev_stdin_and_dev_stdout_pass(
    verifier: CodeVerifier, variant: str
) -> None:
    """The competitive-programming idioms: without /proc in a run, /dev/stdin and /dev/stdout
    are the run's own stream files (sandboxes.stdio), not links into /proc/self/fd."""
    language = variant.split("_")[0]
    result = score(verifier, fenced(DEV_STDIO_PROGRAMS[variant], language),
                   {**ADD_TESTS, "language": language})  # fmt: skip
    assert (result.status, result.score, result.details["tests_passed"]) == (Status.OK, 1.0, 2)


def test_fraction_all_and_per_test_verdicts(verifier: CodeVerifier) -> None:
    reference = {"tests": [*ADD_TESTS["tests"], {"stdin": "1 1", "stdout": "3"}]}
    code = fenced("a, b = map(int, input().split())\nprint(a + b)")
    fraction = score(verifier, code, reference)
    assert fraction.score == pytest.approx(2 / 3) and fraction.reason == "wrong_answer"
    assert [t["verdict"] for t in fraction.details["tests"]] == ["passed", "passed", "wrong_answer"]
    assert score(verifier, code, reference, scoring="all").score == 0.0


def test_stop_at_first_failure_leaves_the_rest_not_run(verifier: CodeVerifier) -> None:
    reference = {"tests": [{"stdin": "", "stdout": "x"}] * 5}
    result = score(verifier, fenced("print('y')"), reference, stop_at_first_failure=True)
    verdicts = [t["verdict"] for t in result.details["tests"]]
    assert verdicts[0] == "wrong_answer" and verdicts.count("not_run") >= 3


@pytest.mark.parametrize(
    ("code", "verdict", "params"),
    [
        ("while True: pass", "time_limit", {"time_limit_s": 0.5}),
        ("import time\ntime.sleep(60)", "time_limit", {"time_limit_s": 0.5}),
        ("x = b'a' * 10**9", "memory_limit", {"memory_mb": 64}),
        ("print('x' * 10**7)", "output_limit", {"output_limit_kb": 64}),
        ("raise ValueError('boom')", "runtime_error", {}),
        ("def f(:\n  pass", "compile_error", {}),
    ],
)
def test_failures_get_their_verdict(
    verifier: CodeVerifier, code: str, verdict: str, params: dict
) -> None:
    result = score(verifier, fenced(code), {"tests": [{"stdin": "", "stdout": "3"}]}, **params)
    assert (result.status, result.score, result.reason) == (Status.OK, 0.0, verdict)
    assert result.details["tests"][0]["verdict"] == verdict


def test_humaneval_and_mbpp_styles(verifier: CodeVerifier) -> None:
    good = score(verifier, fenced("def add(a, b):\n    return a + b"), HUMANEVAL)
    assert (good.score, good.details["tests"][0]["verdict"]) == (1.0, "passed")
    mbpp = {"asserts": ["assert f(1) == 2", "assert f(2) == 4", "assert f(3) == 7"]}
    result = score(verifier, fenced("def f(x):\n    return 2 * x"), mbpp)
    assert [t["verdict"] for t in result.details["tests"]] == ["passed", "passed", "wrong_answer"]


# Reward hacks: each must score 0 on a test it does not solve.
HACKS = {
    "exit_0_before_asserts": "import sys\ndef add(a, b): return 0\nsys.exit(0)",
    "os_exit_0": "import os\ndef add(a, b): return 0\nos._exit(0)",
    "exit_inside_the_call": "import os\ndef add(a, b): os._exit(0)",
    "system_exit_inside_the_call": "def add(a, b): raise SystemExit(0)",
    "atexit_prints_success": "import atexit, os\ndef add(a, b): return 0\n"
    "atexit.register(lambda: os.write(1, b'passed\\n'))",
    "print_what_passing_prints": "def add(a, b):\n    print('passed'); return 0",
    "always_equal_object": "class A:\n    def __eq__(self, o): return True\n"
    "    def __sub__(self, o): return 0\ndef add(a, b): return A()",
    "int_subclass_rigged_eq": "class I(int):\n    def __eq__(self, o): return True\n"
    "def add(a, b): return I(0)",
    "patched_builtin_abs": "import builtins\nbuiltins.abs = lambda x: 0\ndef add(a, b): return 3",
    "patched_os_write": "import os\n_w = os.write\nos.write = lambda fd, d: _w(fd, d.replace("
    "b'wrong_answer', b'passed'))\ndef add(a, b): return 0",
    "patched_exec": "import builtins\nbuiltins.exec = lambda *a, **k: None\n"
    "def add(a, b): return 0",
    "keyboard_interrupt": "def add(a, b): raise KeyboardInterrupt",
    "close_stdout": "import os\ndef add(a, b):\n    os.close(1); return 0",
    "read_stdin_for_the_secret": "import sys\nsecret = sys.stdin.read()\ndef add(a, b):\n"
    "    print(secret.strip(), 'passed'); return 0",
    "kill_the_interpreter": "import os, signal\n"
    "def add(a, b): os.kill(os.getpid(), signal.SIGKILL)",
}  # fmt: skip


@pytest.mark.parametrize("hack", list(HACKS), ids=list(HACKS))
def test_reward_hacks_do_not_pass(verifier: CodeVerifier, hack: str) -> None:
    result = score(verifier, fenced(HACKS[hack]), HUMANEVAL)
    assert result.status == Status.OK
    assert result.score == 0.0, result.details
    assert result.details["tests"][0]["verdict"] != "passed"


def test_printing_the_expected_output_early_then_crashing_fails(verifier: CodeVerifier) -> None:
    result = score(verifier, fenced("print(3)\nraise SystemExit(1)"), ADD_TESTS)
    assert result.score == 0.0 and result.reason == "runtime_error"


def test_cpp_compile_time_attacks_are_compile_errors(verifier: CodeVerifier) -> None:
    shadow = score(verifier, fenced('#include "/etc/shadow"\nint main(){}', "cpp"),
                   {**ADD_TESTS, "language": "cpp"})  # fmt: skip
    assert shadow.reason == "compile_error" and "No such file" in shadow.details["stderr_tail"]
    bomb = (
        "template<int N> struct F { enum { v = F<N-1>::v + F<N-2>::v }; };\n"
        "template<> struct F<0> { enum { v = 0 }; }; template<> struct F<1> { enum { v = 1 }; };\n"
        "template<int N> struct T { typedef typename T<N-1>::t t; };\n"
        "int main() { return T<100000>::t::v + F<100000>::v; }"
    )
    result = score(verifier, fenced(bomb, "cpp"), {**ADD_TESTS, "language": "cpp"},
                   compile_time_limit_s=2)  # fmt: skip
    assert (result.status, result.score, result.reason) == (Status.OK, 0.0, "compile_error")


def test_no_code_block_scores_zero(verifier: CodeVerifier) -> None:
    result = score(verifier, "print(3)", ADD_TESTS)
    assert (result.status, result.score, result.reason) == (Status.OK, 0.0, "no_code")
    assert score(verifier, "print(3)", {"tests": [{"stdout": "3"}]}, extract="raw").score == 1.0


def test_too_many_tests_for_the_timeout_is_invalid(verifier: CodeVerifier) -> None:
    reference = {"tests": [{"stdin": "", "stdout": ""}] * 100}
    result = score(verifier, fenced("pass"), reference, timeout_s=10)
    assert result.status == Status.INVALID_REQUEST
    assert result.details["field"] == "reference.tests"


def test_a_sandbox_that_cannot_start_is_a_verifier_error() -> None:
    verifier = CodeVerifier()
    verifier._pool = SandboxPool(1, SandboxConfig(python="/nonexistent/python3"))
    try:
        result = score(verifier, fenced("print(3)"), ADD_TESTS)
    finally:
        verifier.pool().close()
    assert (result.status, result.reason) == (Status.VERIFIER_ERROR, "sandbox_error")
