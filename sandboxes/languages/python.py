"""Python: the system interpreter (/usr/bin/python3), warm in each slot (runner="python").

The compile step is a syntax check (compile() in the sandbox), so a SyntaxError is a
compile error rather than a runtime error of every test.
"""

from __future__ import annotations

from dataclasses import dataclass

from sandboxes.languages import with_address_space
from sandboxes.limits import Limits, Program

SOURCE = "main.py"
_CHECK = b"import sys\ncompile(open(sys.argv[1], 'rb').read(), sys.argv[1], 'exec')\n"


@dataclass(frozen=True)
class Python:
    name: str = "python"

    def compile_program(self, source: str) -> Program:
        return Program(
            ("/work/check_syntax.py", f"/work/{SOURCE}"),
            files={"check_syntax.py": _CHECK, SOURCE: source.encode(errors="surrogatepass")},
            runner="python",
        )

    def run_program(self, source: str, artifact: bytes | None, stdin: bytes) -> Program:
        return Program(
            (f"/work/{SOURCE}",),
            files={SOURCE: source.encode(errors="surrogatepass")},
            stdin=stdin,
            runner="python",
        )

    def run_limits(self, limits: Limits) -> Limits:
        return with_address_space(limits)


PYTHON = Python()
