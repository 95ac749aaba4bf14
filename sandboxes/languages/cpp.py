"""C++: g++ (C++17, -O2) compiles in the sandbox; the binary comes back as an artifact and
is written into each test run's fresh /work."""

from __future__ import annotations

from dataclasses import dataclass

from sandboxes.languages import with_address_space
from sandboxes.limits import Limits, Program

SOURCE = "main.cpp"
BINARY = "a.out"


@dataclass(frozen=True)
class Cpp:
    name: str = "cpp"
    compiler: str = "/usr/bin/g++"
    flags: tuple[str, ...] = ("-std=c++17", "-O2", "-pipe")

    def compile_program(self, source: str) -> Program:
        return Program(
            (self.compiler, *self.flags, "-o", f"/work/{BINARY}", f"/work/{SOURCE}"),
            files={SOURCE: source.encode(errors="surrogatepass")},
            collect=BINARY,
            toolchain=True,
        )

    def run_program(self, source: str, artifact: bytes | None, stdin: bytes) -> Program:
        if artifact is None:
            raise ValueError("C++ needs the compiled binary")
        return Program((f"/work/{BINARY}",), files={BINARY: artifact}, stdin=stdin)

    def run_limits(self, limits: Limits) -> Limits:
        return with_address_space(limits)


CPP = Cpp()
