"""Fills in our verdict for every case of `peer_cases.json` (run by hand, not by pytest).

    PYTHONPATH=. .venv/bin/python tests/verifier_server/verifiers/math/conformance/update_table.py

Rows whose verdict differs from the peer's keep the `rule` already written for them; a new
difference is printed and left without one, so test_conformance fails until it is explained.
Prints the agreement per suite (for the README).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from test_conformance import CASES, TABLE, agreement, our_verdict


def main() -> None:
    for case in CASES:
        case["ours"] = our_verdict(case)
        if case["ours"] == case["peer"]:
            case.pop("rule", None)
        elif not case.get("rule"):
            print(f"unexplained: {case['suite']} {case['file']}:{case['line']} "
                  f"gold={case['gold']!r} answer={case['answer']!r} peer={case['peer']} "
                  f"ours={case['ours']}")  # fmt: skip
    TABLE.write_text(json.dumps(CASES, indent=1, ensure_ascii=False) + "\n")
    for suite, (agree, total) in sorted(agreement().items()):
        print(f"{suite}: {agree}/{total}")


if __name__ == "__main__":
    main()
