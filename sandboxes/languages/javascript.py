"""JavaScript: Node.js, started per run (no compile step). No RLIMIT_AS: V8 reserves far more
address space than it uses; the memory cgroup bounds it instead."""

from __future__ import annotations

from dataclasses import dataclass

from sandboxes.limits import Limits, Program

SOURCE = "main.js"


@dataclass(frozen=True)
class JavaScript:
    name: str = "javascript"
    node: str = "/usr/bin/node"

    def compile_program(self, source: str) -> None:
        return None

    def run_program(self, source: str, artifact: bytes | None, stdin: bytes) -> Program:
        return Program(
            (self.node, f"/work/{SOURCE}"),
            files={SOURCE: source.encode(errors="surrogatepass")},
            stdin=stdin,
        )

    def run_limits(self, limits: Limits) -> Limits:
        return limits


JAVASCRIPT = JavaScript()
