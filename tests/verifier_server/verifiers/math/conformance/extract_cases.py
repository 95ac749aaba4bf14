"""Rebuilds `peer_cases.json` from the peers' own test files (run by hand, not by pytest).

    .venv/bin/python tests/verifier_server/verifiers/math/conformance/extract_cases.py \
        --math-verify DIR --mario DIR --nemo DIR --qwen DIR

Each DIR is a git checkout of the peer's repository; its HEAD commit is recorded with every
case. Only test *data* is taken: (gold, answer, the peer's expected verdict), read with `ast`
from literals, never the peers' code. Our verdicts and the rules behind deliberate
differences are filled in by `update_table.py`; a rebuild keeps the rules already written.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import subprocess
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
TABLE = HERE / "peer_cases.json"

MATH_VERIFY_FILES = [
    "tests/test_all.py", "tests/test_boxed.py", "tests/test_numina_cases.py",
    "tests/test_open_thoughts.py", "tests/test_strict.py", "tests/test_yujianll.py",
]  # fmt: skip


def _commit(repo: Path) -> str:
    return subprocess.check_output(["git", "-C", str(repo), "rev-parse", "HEAD"], text=True).strip()


def _show(repo: Path, path: str) -> str:
    return subprocess.check_output(["git", "-C", str(repo), "show", f"HEAD:{path}"], text=True)


_ARITHMETIC = (ast.Constant, ast.Tuple, ast.BinOp, ast.UnaryOp, ast.operator, ast.unaryop, ast.Load)


def _literal(node: ast.AST) -> Any:
    """A literal, or plain arithmetic on literals (NeMo-Skills writes `5 / 2`)."""
    try:
        return ast.literal_eval(node)
    except ValueError:
        if all(isinstance(n, _ARITHMETIC) for n in ast.walk(node)):
            code = compile(ast.Expression(node), "<case>", "eval")  # type: ignore[arg-type]
            return eval(code, {"__builtins__": {}})
        raise


def _argnames(node: ast.AST) -> list[str]:
    """pytest's argnames: "gold, pred, expected" or ("gold", "pred", "expected")."""
    value = _literal(node)
    return [n.strip() for n in value.split(",")] if isinstance(value, str) else list(value)


def math_verify(repo: Path) -> list[dict[str, Any]]:
    """Parametrized (gold, pred, expected) tuples of every test function."""
    cases = []
    for path in MATH_VERIFY_FILES:
        tree = ast.parse(_show(repo, path))
        for func in [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]:
            for deco in func.decorator_list:
                if not (
                    isinstance(deco, ast.Call) and getattr(deco.func, "attr", "") == "parametrize"
                ):
                    continue
                names = _argnames(deco.args[0])
                if not {"gold", "pred"} <= set(names):
                    continue
                for element in deco.args[1].elts:
                    try:
                        values = dict(zip(names, _literal(element), strict=True))
                    except ValueError:  # built by code (f-strings): not a literal case
                        continue
                    expected = values.get("expected", values.get("result", 1))
                    cases.append({
                        "suite": "math-verify", "repo": "huggingface/Math-Verify", "file": path,
                        "test": func.name, "line": element.lineno, "gold": values["gold"],
                        "answer": values["pred"], "peer": bool(expected),
                        **({"peer_options": {"strict": values["strict"]}}
                           if "strict" in values else {}),
                    })  # fmt: skip
    return cases


def mario(repo: Path) -> list[dict[str, Any]]:
    """`test_in = …; test_out = …` (or a loop over `test_pairs`) followed by an assertTrue /
    assertFalse of is_equiv, _test_is_equiv, _test_is_not_equiv or are_equal_under_sympy."""
    path = "math_evaluation/tests/test_is_equiv.py"
    tree = ast.parse(_show(repo, path))
    checks = ("_test_is_equiv", "_test_is_not_equiv", "is_equiv", "are_equal_under_sympy")
    cases = []
    for func in [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]:
        current: dict[str, Any] = {}
        loop: tuple[int, list[Any]] | None = None  # (last line of the loop, its pairs)
        in_order = sorted(
            (n for n in ast.walk(func) if hasattr(n, "lineno")),
            key=lambda n: (n.lineno, n.col_offset),
        )
        for node in in_order:
            target = node.targets[0] if isinstance(node, ast.Assign) else None
            if isinstance(target, ast.Name) and target.id in ("test_in", "test_out", "test_pairs"):
                current[target.id] = _literal(node.value)  # type: ignore[attr-defined]
            if isinstance(node, ast.For) and isinstance(node.iter, ast.Name):
                loop = (node.end_lineno or node.lineno, current[node.iter.id])
            if not (isinstance(node, ast.Call) and getattr(node.func, "attr", "") in (
                "assertTrue", "assertFalse")):  # fmt: skip
                continue
            inner = node.args[0]
            if getattr(getattr(inner, "func", None), "id", "") not in checks:
                continue
            verdict = node.func.attr == "assertTrue"
            if loop is not None and node.lineno <= loop[0]:
                pairs = [tuple(pair) for pair in loop[1]]
            else:
                pairs = [(current["test_in"], current["test_out"])]
            for answer, gold in pairs:
                cases.append({
                    "suite": "mario-eval", "repo": "MARIO-Math-Reasoning/MARIO_EVAL",
                    "file": path, "test": func.name, "line": node.lineno, "gold": gold,
                    "answer": answer, "peer": verdict,
                })  # fmt: skip
    cases.sort(key=lambda c: c["line"])
    return cases


def nemo(repo: Path) -> list[dict[str, Any]]:
    """`output_pair`s of test_correct_examples / test_incorrect_examples, both directions (the
    test asserts math_equal(a, b) and math_equal(b, a))."""
    path = "tests/test_math_equal.py"
    tree = ast.parse(_show(repo, path))
    cases = []
    for func in [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]:
        verdict = {"test_correct_examples": True, "test_incorrect_examples": False}.get(func.name)
        if verdict is None:
            continue
        for deco in func.decorator_list:
            for element in deco.args[1].elts:
                first, second = _literal(element)
                for gold, answer in ((first, second), (second, first)):
                    cases.append({
                        "suite": "nemo-skills", "repo": "NVIDIA/NeMo-Skills", "file": path,
                        "test": func.name, "line": element.lineno, "gold": gold,
                        "answer": answer, "peer": verdict,
                    })  # fmt: skip
    return cases


# Qwen2.5-Math's grader "test" is a list of (pred, gt) pairs in comments plus one live call,
# with no verdicts: the verdict recorded is the mathematical one, stated in the table's note.
_QWEN_TRUTH = {
    ("0.0833333333333333", "\\frac{1}{12}"): True, ("(1,4.5)", "(1,\\frac{9}{2})"): True,
    ("\\frac{x}{7}+\\frac{2}{7}", "\\frac{x+2}{7}"): True, ("\\sec^2(y)", "\\tan^2(y)+1"): True,
    ("-34x-45y+20z-100=0", "34x+45y-20z+100=0"): True, ("\\frac{100}{3}", "33.3"): False,
    ("(+5)(b+2)", "(a+5)(b+2)"): False, ("\\frac{1+\\sqrt{5}}{2}", "2"): False,
    ("\\frac{34}{16}+\\frac{\\sqrt{1358}}{16}", "4"): False, ("1", "1\\\\sqrt{19}"): False,
    ("(0.6,2.6667]", "(\\frac{3}{5},\\frac{8}{3}]"): True, ("x+1", "x+2n+1"): False,
    (
        "\\begin{pmatrix}-\\frac{7}{4}&-2\\\\4&\\frac{1}{4}\\end{pmatrix}",
        "(\\begin{pmatrix}-\\frac{7}{4}&-2\\\\4&\\frac{1}{4}\\\\\\end{pmatrix})",
    ): True,
    (
        "\\begin{pmatrix}\\frac{1}{3x^{2/3}}&0&0\\\\0&1&0\\\\-\\sin(x)&0&0\\end{pmatrix}",
        "(\\begin{pmatrix}\\frac{1}{3\\sqrt[3]{x}^2}&0&0\\\\0&1&0\\\\-\\sin(x)&0&0\\\\\\end{pmatrix})",
    ): True,
    (
        "-\\frac{8x^2}{9(x^2-2)^{5/3}}+\\frac{2}{3(x^2-2)^{2/3}}",
        "-\\frac{2(x^2+6)}{9(x^2-2)\\sqrt[3]{x^2-2}^2}",
    ): True,
    (
        "\\begin{pmatrix}0.290243531202435\\\\0.196008371385084\\\\-0.186381278538813\\end{pmatrix}",
        "(\\begin{pmatrix}0.29\\\\0.196\\\\-0.186\\\\\\end{pmatrix})",
    ): True,  # the gold is the prediction rounded
    (
        "\\frac{\\sqrt{\\sqrt{11}+\\sqrt{194}}}{2\\sqrt{33}+15}",
        "\\frac{\\sqrt{\\sqrt{11}+\\sqrt{194}}}{15+2\\sqrt{33}}",
    ): True,
}  # fmt: skip


def qwen(repo: Path) -> list[dict[str, Any]]:
    path = "evaluation/grader.py"
    text = _show(repo, path)
    body = text[text.index("def _test_math_equal") :]
    start = text.index("def _test_math_equal")
    pairs: list[tuple[str, str, int]] = []
    for m in re.finditer(r'math_equal\("((?:[^"\\]|\\.)*)", "((?:[^"\\]|\\.)*)"', body):
        pairs.append((_unescape(m[1]), _unescape(m[2]), m.start()))
    pending: dict[str, str] = {}  # `pred = …` and `gt = …`, in either order
    for m in re.finditer(r"(pred|gt)\s*=\s*(['\"])((?:(?!\2).)*)\2", body):
        pending[m[1]] = _unescape(m[3])
        if len(pending) == 2:
            pairs.append((pending["pred"], pending["gt"], m.start()))
            pending = {}
    cases = []
    for pred_text, gold, offset in pairs:
        truth = _QWEN_TRUTH.get((pred_text, gold))
        if truth is None:
            continue
        cases.append({
            "suite": "qwen2.5-math", "repo": "QwenLM/Qwen2.5-Math", "file": path,
            "test": "_test_math_equal", "line": text[: start + offset].count("\n") + 1,
            "gold": gold, "answer": pred_text, "peer": truth,
            "note": "the file lists the pair without a verdict; the mathematical one is recorded",
        })  # fmt: skip
    return cases


def _unescape(text: str) -> str:
    return ast.literal_eval(f'"{text}"')


def _key(case: dict[str, Any]) -> str:
    return json.dumps([case["file"], case["line"], case["gold"], case["answer"]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for flag in ("--math-verify", "--mario", "--nemo", "--qwen"):
        parser.add_argument(flag, type=Path, required=True)
    args = parser.parse_args()
    suites = [
        (args.math_verify, math_verify), (args.mario, mario), (args.nemo, nemo), (args.qwen, qwen),
    ]  # fmt: skip
    # A rebuilt table keeps the rules already written for its rows.
    old = json.loads(TABLE.read_text()) if TABLE.exists() else []
    rules = {_key(case): case["rule"] for case in old if case.get("rule")}
    cases = []
    for repo, reader in suites:
        commit = _commit(repo)
        for case in reader(repo):
            rule = rules.get(_key(case))
            cases.append({**case, "commit": commit, **({"rule": rule} if rule else {})})
    TABLE.write_text(json.dumps(cases, indent=1, ensure_ascii=False) + "\n")
    print(f"{len(cases)} cases -> {TABLE}")


if __name__ == "__main__":
    main()
