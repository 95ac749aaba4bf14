"""Builds the distributions into dist/: `verifier-rl` (server, trainer, client) and
`verifier-rl-client` (the client alone: grpcio and protobuf only).

    python tools/build_dists.py [--outdir dist] [--no-isolation]

The client distribution is staged in a temporary directory from `clients/python/` (its
pyproject and README) and the client's modules copied from the one source tree, so nothing of
the client is kept twice in the repository.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Everything `import verifier_server.client` loads: tests/test_packaging.py imports it in a venv
# that holds only this, so a module missing here fails there.
CLIENT_FILES = (
    "verifier_server/__init__.py",
    "verifier_server/py.typed",
    "verifier_server/types.py",
    "verifier_server/convert.py",
    "verifier_server/client.py",
    "verifier_server/_proto",
)


def build(source: Path, outdir: Path, isolation: bool) -> None:
    command = [sys.executable, "-m", "build", "--outdir", str(outdir), str(source)]
    if not isolation:
        command.insert(3, "--no-isolation")
    subprocess.run(command, check=True)


def stage_client(into: Path) -> Path:
    stage = into / "verifier-rl-client"
    shutil.copytree(ROOT / "clients" / "python", stage)
    shutil.copy(ROOT / "LICENSE", stage / "LICENSE")
    for name in CLIENT_FILES:
        source, target = ROOT / name, stage / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, target)
    return stage


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outdir", type=Path, default=ROOT / "dist", help="where to write (dist/)")
    parser.add_argument(
        "--no-isolation",
        action="store_true",
        help="build with this environment's setuptools instead of a fresh one from the index",
    )
    args = parser.parse_args(argv)
    outdir = args.outdir.resolve()
    build(ROOT, outdir, not args.no_isolation)
    with tempfile.TemporaryDirectory() as tmp:
        build(stage_client(Path(tmp)), outdir, not args.no_isolation)
    for path in sorted(outdir.iterdir()):
        print(f"{path.stat().st_size:>10,}  {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
