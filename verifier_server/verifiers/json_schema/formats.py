"""The `format` checks of the json_schema verifier (used when `check_formats` is set).

jsonschema's own checks let invalid values through: `email` only asks for an "@", `uuid` goes
through `uuid.UUID` (which drops hyphens and accepts braces, underscores and non-ASCII digits),
`idn-hostname` accepts empty labels and trailing dots. The checks here follow the RFCs the
JSON Schema spec names, agree with the official JSON Schema Test Suite's format tests (see
tests/verifier_server/verifiers/test_json_schema_suite.py for the listed exceptions), never
raise on any string (a lone surrogate included: a check that cannot read a value fails it), and
run in time linear in the value (fixed regexes without nested quantifiers, per-label loops).

- date: RFC 3339 full-date, ASCII digits, a real calendar day.
- email / idn-email: RFC 5321 Mailbox (RFC 6531 for idn-email: UTF-8 in the local part, an
  internationalized domain): a dot-atom or quoted local part, then a host name or an address
  literal `[1.2.3.4]` / `[IPv6:…]`.
- hostname: RFC 1123 labels (ASCII letters, digits, inner hyphens; 1-63 chars; at most 253 in
  all; no empty label, so no trailing dot); `xn--` labels must be valid IDNA2008 A-labels.
- idn-hostname: the same over IDNA2008 U-labels; U+3002, U+FF0E and U+FF61 separate labels
  like `.`.
- ipv4 / ipv6: Python's `ipaddress` (no leading zeros in IPv4), ASCII only, no IPv6 zone id.
- uuid: RFC 4122 hex-and-hyphens form, exactly 36 ASCII characters.
- regex: RE2 syntax (Python's `re` would recurse on deeply nested groups in model text), at
  most 1,000 characters: RE2's compile time grows with the pattern (90,000 characters of `\\PL`
  took 11 s), and one format check is one keyword evaluation, which the verifier's clock
  cannot interrupt.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import unicodedata
from collections.abc import Callable

import idna

from verifier_server.verifiers.text import RegexError, compile_re2

_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_LDH_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+")
_IDN_ATOM = re.compile(r"(?:[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]|[^\x00-\x7f])+")
_QUOTED = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"')
_IDN_QUOTED = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|[^\x00-\x7f]|\\[\x20-\x7e])*"')
_IDN_SEPARATORS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
_MAX_HOSTNAME = 253
_MAX_LOCAL_PART = 64
_MAX_REGEX_CHARS = 1000  # \PL repeated to this length compiles in ~0.3 s


def is_date(value: str) -> bool:
    if _DATE.fullmatch(value) is None:
        return False
    try:
        datetime.date.fromisoformat(value)
    except ValueError:
        return False
    return True


def is_uuid(value: str) -> bool:
    return _UUID.fullmatch(value) is not None


def is_ipv4(value: str) -> bool:
    return value.isascii() and _parses_as(ipaddress.IPv4Address, value)


def is_ipv6(value: str) -> bool:
    # "%eth0": a zone id is not part of the format
    return value.isascii() and "%" not in value and _parses_as(ipaddress.IPv6Address, value)


def _parses_as(address: Callable[[str], object], value: str) -> bool:
    try:
        address(value)
    except ValueError:
        return False
    return True


def _is_a_label(label: str) -> bool:
    try:
        idna.decode(label)
    except (idna.IDNAError, UnicodeError, ValueError):
        return False
    return True


def _is_ascii_label(label: str) -> bool:
    if _LDH_LABEL.fullmatch(label) is None:
        return False
    if label[2:4] == "--":  # RFC 5891 4.2.3.1: reserved for A-labels ("xn--")
        return label[:4].lower() == "xn--" and _is_a_label(label)
    return True


def is_hostname(value: str) -> bool:
    if not value.isascii() or len(value) > _MAX_HOSTNAME:
        return False
    return all(_is_ascii_label(label) for label in value.split("."))


def _is_bidi_domain_ok(labels: list[str]) -> bool:
    """RFC 5893 section 2: once any label holds right-to-left text, every label must satisfy
    the Bidi Rule (idna checks it only in the labels that hold such text)."""
    rtl = any(unicodedata.bidirectional(char) in ("R", "AL", "AN") for char in "".join(labels))
    if not rtl:
        return True
    try:
        return all(idna.check_bidi(label, check_ltr=True) for label in labels)
    except idna.IDNABidiError:
        return False


def is_idn_hostname(value: str) -> bool:
    labels = value.translate(_IDN_SEPARATORS).split(".")
    if any(not label for label in labels):
        return False  # empty, a leading or trailing separator, or two in a row
    try:
        encoded = idna.encode(".".join(labels))
        if not _is_bidi_domain_ok(labels):
            return False
    except (idna.IDNAError, UnicodeError, ValueError):
        return False
    if len(encoded) > _MAX_HOSTNAME:
        return False
    return all(_is_ascii_label(label) for label in encoded.decode("ascii").split("."))


def _is_address_literal(literal: str) -> bool:
    if not (literal.startswith("[") and literal.endswith("]")):
        return False
    inner = literal[1:-1]
    if inner[:5].lower() == "ipv6:":
        return is_ipv6(inner[5:])
    return is_ipv4(inner)


def _is_mailbox(value: str, *, international: bool) -> bool:
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain:
        return False
    atom, quoted = (_IDN_ATOM, _IDN_QUOTED) if international else (_ATOM, _QUOTED)
    if local.startswith('"'):
        local_ok = quoted.fullmatch(local) is not None
    else:  # dot-atom: no leading, trailing or doubled dot
        local_ok = all(atom.fullmatch(part) is not None for part in local.split("."))
    if not local_ok or len(local.encode("utf-8", "surrogatepass")) > _MAX_LOCAL_PART:
        return False
    if domain.startswith("["):
        return _is_address_literal(domain)
    if international:  # RFC 6531 domains are compared after NFC (the Test Suite agrees)
        return is_idn_hostname(unicodedata.normalize("NFC", domain))
    return is_hostname(domain)


def is_email(value: str) -> bool:
    return _is_mailbox(value, international=False)


def is_idn_email(value: str) -> bool:
    return _is_mailbox(value, international=True)


def is_re2_regex(value: str) -> bool:
    if len(value) > _MAX_REGEX_CHARS:
        return False
    try:
        compile_re2.__wrapped__(value)  # uncached: model text must not fill the pattern cache
    except RegexError:
        return False
    return True


FORMAT_CHECKS: dict[str, Callable[[str], bool]] = {
    "date": is_date,
    "email": is_email,
    "idn-email": is_idn_email,
    "hostname": is_hostname,
    "idn-hostname": is_idn_hostname,
    "ipv4": is_ipv4,
    "ipv6": is_ipv6,
    "uuid": is_uuid,
    "regex": is_re2_regex,
}
"""Format name -> check of a string value; other formats are annotations (always pass)."""
