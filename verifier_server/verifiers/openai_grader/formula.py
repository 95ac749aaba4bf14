"""`calculate_output` of a multi grader: arithmetic over the sub-graders' scores, parsed with
Python's `ast` and evaluated by walking a whitelist of nodes (never `eval`): numbers, the
graders' names, `+ - * / ^ **` (OpenAI writes powers as `^`), unary minus, parentheses and
the functions min, max, abs, floor, ceil, exp, sqrt, log; at most 1000 characters and 200
operations deep (a sum of n terms: n - 1). A division by zero, a math domain error or a negative
score to a fractional power gives 0.0 with reason `formula_undefined` in the verifier (the
scores came from the completion; the formula itself was checked when the request arrived)."""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping

_MAX_CHARS = 1000
_MAX_DEPTH = 200  # far below Python's recursion limit, which _check and evaluate recurse into
_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.Pow: operator.pow,
}  # fmt: skip
_FUNCTIONS: dict[str, Callable[..., float]] = {
    "min": lambda *xs: min(xs), "max": lambda *xs: max(xs), "abs": abs,  # min(a) is a
    "floor": math.floor, "ceil": math.ceil, "exp": math.exp, "sqrt": math.sqrt, "log": math.log,
}  # fmt: skip


class FormulaError(ValueError):
    """A formula that is not allowed arithmetic over the known names."""


def parse_formula(text: str, names: frozenset[str]) -> ast.expr:
    """The checked expression tree of `text`; raises FormulaError naming what is wrong."""
    if len(text) > _MAX_CHARS:
        raise FormulaError(f"longer than {_MAX_CHARS} characters")
    try:
        tree = ast.parse(text.replace("^", "**"), mode="eval").body
    except SyntaxError as exc:
        raise FormulaError(f"not a formula: {exc.msg}") from None
    _check(tree, names, 0)
    return tree


def evaluate(tree: ast.expr, values: Mapping[str, float]) -> float:
    """Raises ZeroDivisionError, ValueError or OverflowError for an undefined result."""
    match tree:
        case ast.Constant(value=value):
            return float(value)
        case ast.Name(id=name):
            return values[name]
        case ast.UnaryOp(op=ast.USub(), operand=operand):
            return -evaluate(operand, values)
        case ast.UnaryOp(op=ast.UAdd(), operand=operand):
            return evaluate(operand, values)
        case ast.BinOp(left=left, op=op, right=right):
            base, power = evaluate(left, values), evaluate(right, values)
            if isinstance(op, ast.Pow) and abs(power) > 64:
                raise OverflowError("exponent above 64")  # keeps the result a float
            result = _BINARY[type(op)](base, power)
            if isinstance(result, complex):  # (-1) ** 0.5: a sub-score can be negative
                raise ValueError(f"{base:g} ** {power:g} is not a real number")
            return float(result)
        case ast.Call(func=ast.Name(id=name), args=args):
            return float(_FUNCTIONS[name](*(evaluate(a, values) for a in args)))
    raise AssertionError(f"unchecked node {ast.dump(tree)}")


def _check(node: ast.expr, names: frozenset[str], depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise FormulaError(f"nested more than {_MAX_DEPTH} deep")
    depth += 1
    match node:
        case ast.Constant(value=value) if isinstance(value, int | float) and not isinstance(
            value, bool
        ):
            return
        case ast.Name(id=name):
            if name not in names:
                raise FormulaError(f"unknown name {name!r}; graders: {sorted(names)}")
        case ast.Call(func=ast.Name(id=name), args=args, keywords=[]):
            if name not in _FUNCTIONS:
                raise FormulaError(f"unknown function {name!r}; known: {sorted(_FUNCTIONS)}")
            variadic = name in ("min", "max")
            if not args or (not variadic and len(args) != 1):
                takes = "one or more arguments" if variadic else "one argument"
                raise FormulaError(f"{name}() takes {takes}")
            for arg in args:
                _check(arg, names, depth)
        case ast.BinOp(left=left, op=op, right=right) if type(op) in _BINARY:
            _check(left, names, depth)
            _check(right, names, depth)
        case ast.UnaryOp(op=ast.USub() | ast.UAdd(), operand=operand):
            _check(operand, names, depth)
        case _:
            raise FormulaError(f"{type(node).__name__} is not allowed in a formula")
