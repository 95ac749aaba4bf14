"""`verifier-server validate-grader FILE`: checks an OpenAI grader JSON the way OpenAI's
validate endpoint does, offline: every problem as `FILE: path: message`, exit status 1; a
valid grader prints its kind and name, exit status 0. Whether a score_model's `model` names
a backend is checked when a request arrives (it depends on the server's config)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from verifier_server.verifiers.openai_grader.spec import grader_errors


def add_command(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser(
        "validate-grader", help="check an OpenAI grader JSON file (as openai_grader's params)"
    )
    parser.add_argument("file", metavar="FILE", help="the grader object, as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        print(f"{path}: cannot read a JSON grader: {exc}", file=sys.stderr)
        return 2
    errors = grader_errors(data)
    if errors:
        for error in errors:
            print(f"{path}: {error}", file=sys.stderr)
        return 1
    print(f"{path}: valid {data['type']} grader {data['name']!r}")
    return 0
