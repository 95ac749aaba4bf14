"""Units written after an answer (`5 \\text{ kg}`, `9.8\\,\\mathrm{m/s^2}`, `12 cm`): split off
and kept, never silently dropped.

A unit sympy.physics.units knows is a quantity: `5000 \\text{ g}` equals `5 \\text{ kg}`, and
`5 \\text{ g}` does not. A unit it does not know (`apples`, `dollars`) is compared by its
written name (a word without case or plural, a symbol of up to three letters as written: `MW`
is not `mW`), and never equals one it knows (`Mm` is not `mm`). Text after a number that
qualifies it (`5 \\text{ or more}`, `2 \\text{ (or 3)}`) is not a unit: the answer is
unparseable rather than the qualifier dropped.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import sympy
from sympy.physics import units as u

_BASE = (u.meter, u.kilogram, u.second, u.ampere, u.kelvin, u.mole, u.candela)
# Common spellings sympy does not know (it knows `kg`, `km`, `ft`, `hour`, `meters`, ...).
_ALIASES = {
    "lb": "pound", "lbs": "pound", "pounds": "pound", "hr": "hour", "hrs": "hour",
    "min": "minute", "mins": "minute", "sec": "second", "secs": "second", "yr": "year",
    "yrs": "year", "mph": "mile/hour", "kph": "km/hour", "kmh": "km/hour", "in": "inch",
    "inches": "inch", "week": "7*day", "weeks": "7*day", "wk": "7*day",
}  # fmt: skip
# Words that qualify a number rather than name a unit: dropping them would accept a hedge.
_QUALIFIERS = frozenset(
    [
        "or",
        "and",
        "more",
        "less",
        "than",
        "least",
        "most",
        "not",
        "about",
        "approximately",
        "roughly",
        "nearly",
        "over",
        "under",
        "to",
        "plus",
        "minus",
        "times",
        "maybe",
        "either",
    ]
)
_TEXT_UNIT = re.compile(
    r"(?:\\[,;: ]|~|\s)*\\(?:text|mathrm|textrm|textnormal|textbf|textit|mbox|operatorname|rm)\s*"
    r"\{(?P<unit>[^{}]*)\}(?P<power>\s*\^\s*(?:\{\s*-?\d\s*\}|\d))?\s*$"
)
_BARE_UNIT = re.compile(
    r"(?<=[\d}.$])\s*(?P<unit>[A-Za-z]{2,}(?:\s*/\s*[A-Za-z]+)?)(?P<power>\s*\^\s*(?:\{\s*-?\d\s*\}|\d))?\s*$"
)
_UNIT_WORDS = re.compile(r"[A-Za-z][A-Za-z .·/*\-]*(?:\^-?\d)?(?:\s*/\s*[A-Za-z]+(?:\^-?\d)?)*")


class NotAUnit(Exception):
    """Text after the number qualifies it (`or more`); the answer cannot be read as written."""


@dataclass(frozen=True, slots=True)
class Unit:
    """A written unit: `name` normalised for comparison; `scale` and `base` its value in SI
    base units (`km` -> 1000, meter) when sympy knows it, else None."""

    name: str
    scale: Fraction | None
    base: Any


def split_unit(text: str) -> tuple[str, Unit | None]:
    """(magnitude text, unit) when `text` ends in a unit, else (text, None). A unit in
    `\\text{}` (or `\\mathrm{}`, ...) may be any word; an unwrapped word (`12 cm`) must be a
    unit sympy knows, since `2ab` is a product, not 2 of the unit "ab"."""
    match = _TEXT_UNIT.search(text)
    if match is None:
        match = _BARE_UNIT.search(text)
        if match is not None and _unit(_name(match)).scale is None:
            return text, None
    if match is None or not text[: match.start()].strip():
        return text, None
    written = match["unit"].strip()
    if not written:
        return text[: match.start()].strip(), None
    if not _UNIT_WORDS.fullmatch(written) or _QUALIFIERS & set(re.findall(r"[a-z]+", written)):
        raise NotAUnit(f"{written!r} after the number is not a unit")
    return text[: match.start()].strip(), _unit(_name(match))


def _name(match: re.Match[str]) -> str:
    power = re.sub(r"[\s{}^]", "", match["power"] or "")
    return re.sub(r"\s+", "", match["unit"].strip()) + (f"^{power}" if power else "")


@functools.lru_cache(maxsize=1024)
def _unit(name: str) -> Unit:
    quantity = _quantity(name)
    if quantity is None:
        return Unit(_unknown_name(name), None, None)
    converted = u.convert_to(quantity, list(_BASE))
    scale, base = converted.as_coeff_Mul()
    if not isinstance(scale, sympy.Rational | sympy.Float) or base.atoms(u.Quantity) - set(_BASE):
        return Unit(_unknown_name(name), None, None)
    return Unit(name, Fraction(str(sympy.nsimplify(scale))), base)


def _unknown_name(name: str) -> str:
    """A unit sympy does not know, for comparison by name: a word (`Apples`, `dollars`) without
    case or plural; a symbol of up to three letters as written (`MW` is not `mW`)."""
    return name.lower().rstrip("s") if len(name) > 3 else name


def _quantity(name: str) -> Any:
    """The sympy quantity for `km/h`, `m/s^2`, `cm^3`, `kg*m`; None if any part is unknown."""
    numerator, *denominators = re.split(r"/", name)
    value: Any = sympy.Integer(1)
    for index, part in enumerate([numerator, *denominators]):
        for token in re.split(r"[*·.\-]", part) if part else []:
            factor = _token(token)
            if factor is None:
                return None
            value = value * factor if index == 0 else value / factor
    return None if value == 1 else value


def _token(token: str) -> Any:
    base, _, power = token.partition("^")
    if not base:
        return None
    alias = _ALIASES.get(base)
    if alias is not None:
        return _alias(alias) ** int(power or 1)
    if len(base) > 3 and base[0].isupper():  # `Hours`, `Meters`: words, not prefixed symbols
        base = base.lower()
    quantity = getattr(u, base, None)
    if quantity is None and base.endswith("s"):  # weeks, days: sympy knows week, day
        quantity = getattr(u, base[:-1], None)
    if not isinstance(quantity, u.Quantity) or base.startswith("_"):
        return None
    return quantity ** int(power or 1)


def _alias(spelled: str) -> Any:
    """`mile/hour`, `7*day`: a sympy quantity from an alias's spelling."""
    count, _, spelled = spelled.rpartition("*")
    parts = spelled.split("/")
    value = getattr(u, parts[0])
    value = value / getattr(u, parts[1]) if len(parts) > 1 else value
    return value * int(count) if count else value


def conversion(gold: Unit, answer: Unit) -> Fraction | None:
    """The factor that turns the answer's magnitude into the gold's unit, or None when the two
    units are not the same kind of quantity (or unknown units with different names)."""
    if gold.scale is None and answer.scale is None:
        return Fraction(1) if gold.name == answer.name else None
    if gold.scale is None or answer.scale is None:
        return None  # a unit sympy knows is not one it does not (`Mm` is not `mm`, `M` not `m`)
    if gold.base != answer.base:
        return None
    return answer.scale / gold.scale
