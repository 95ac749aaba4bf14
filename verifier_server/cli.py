"""`verifier-server serve|list|check|demo|validate-grader`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from verifier_server.config import ConfigError, ServerConfig, load_config
from verifier_server.registry import Registry, RegistryError
from verifier_server.verifiers.openai_grader.validate import add_command as add_validate_grader


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="verifier-server", description="Reward and verification server for LLM RL."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    _add_serve(commands)
    listing = commands.add_parser("list", help="print the verifiers, named rewards and params")
    listing.add_argument(
        "--json", action="store_true", help="print JSON Schemas instead of a table"
    )
    _common(listing)
    check = commands.add_parser("check", help="validate a config file and report every problem")
    _common(check, config_required=True)
    demo = commands.add_parser(
        "demo", help="start a server, score the bundled sample batch, print a table, stop"
    )
    demo.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    add_validate_grader(commands)
    return parser


def _add_serve(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`serve` and its flags, which override the config file's settings."""
    serve = commands.add_parser(
        "serve", help="run the gRPC server (and HTTP/JSON with --http-port) until SIGTERM"
    )
    serve.add_argument("--host", help="address to bind (default 127.0.0.1: loopback only)")
    serve.add_argument("--port", type=int, help="TCP port (default 50051; 0 picks a free port)")
    serve.add_argument("--unix", metavar="PATH", help="also listen on a Unix domain socket")
    serve.add_argument("--workers", type=int, help="worker processes (default: one per core)")
    serve.add_argument("--tls-cert", metavar="PEM", help="TLS certificate chain (with --tls-key)")
    serve.add_argument("--tls-key", metavar="PEM", help="TLS private key (with --tls-cert)")
    serve.add_argument(
        "--tls-client-ca", metavar="PEM", help="require client certificates signed by this CA"
    )
    serve.add_argument(
        "--auth-tokens-file",
        metavar="FILE",
        help="require a bearer token from FILE (one a line, `label token` or `token`)",
    )
    serve.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    serve.add_argument(
        "--http-port",
        type=int,
        help="also serve HTTP/JSON on this port (0 picks one): POST /v1/score, GET "
        "/v1/verifiers, GET /healthz, POST /v1/openrlhf/REWARD (OpenRLHF --remote_rm_url); "
        "same limits, TLS and tokens as gRPC; deadline from header X-Timeout-S",
    )
    serve.add_argument(
        "--log-format",
        choices=["text", "json"],
        help="json: one JSON object a line, with request ids",
    )
    _sandbox_flags(serve)
    _common(serve)


def _sandbox_flags(serve: argparse.ArgumentParser) -> None:
    """`serve`'s overrides of the `sandbox` settings."""
    serve.add_argument(
        "--sandbox-slots", type=int, help="warm sandbox slots per worker (sandbox.slots)"
    )
    serve.add_argument(
        "--sandbox-uid-base", type=int, help="first outside uid/gid of sandboxes (sandbox.uid_base)"
    )
    serve.add_argument(
        "--sandbox-uid-count", type=int, help="outside uids/gids for sandboxes (sandbox.uid_count)"
    )
    serve.add_argument(
        "--sandbox-cgroup-parent",
        metavar="CGROUP",
        help="cgroup under which sandbox cgroups are made, e.g. / (sandbox.cgroup_parent)",
    )


def _common(parser: argparse.ArgumentParser, config_required: bool = False) -> None:
    parser.add_argument(
        "--config", required=config_required, metavar="FILE", help="YAML or TOML config"
    )
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE and register its Verifier classes (repeatable)",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "run", None):  # commands that need no config: validate-grader
        return int(args.run(args))
    if args.command == "demo":
        from verifier_server.demo import run_demo

        return run_demo(workers=args.workers)
    try:
        config = load_config(args.config)
        config = _with_overrides(config, args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from verifier_server import logs

    logs.configure(args.log_level, config.server.log_format)
    try:
        registry = Registry.load(config.plugins)
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.command == "check":
        return _check(config, registry, args.config)
    if args.command == "list":
        return _list(config, registry, as_json=args.json)
    return _serve(config, registry)


def _with_overrides(config: ServerConfig, args: argparse.Namespace) -> ServerConfig:
    server: dict[str, object] = {
        key: getattr(args, key)
        for key in ("host", "port", "unix", "workers", "metrics_port", "http_port", "log_format")
        if getattr(args, key, None) is not None
    }
    tls_flags = [getattr(args, k, None) for k in ("tls_cert", "tls_key", "tls_client_ca")]
    if any(tls_flags):
        cert, key, client_ca = tls_flags
        if not (cert and key):
            raise ConfigError("--tls-cert and --tls-key: give both")
        server["tls"] = {"cert_file": cert, "key_file": key, "client_ca_file": client_ca}
    if getattr(args, "auth_tokens_file", None):
        previous = config.server.auth.model_dump() if config.server.auth else {}
        server["auth"] = {**previous, "tokens_file": args.auth_tokens_file, "tokens_env": None}
    plugins = [*config.plugins, *[p for p in args.plugin if p not in config.plugins]]
    sandbox = {
        key: getattr(args, f"sandbox_{key}")
        for key in ("slots", "uid_base", "uid_count", "cgroup_parent")
        if getattr(args, f"sandbox_{key}", None) is not None
    }
    updated = config.model_dump()
    updated["server"].update(server)
    updated["sandbox"].update(sandbox)
    updated["plugins"] = plugins
    try:
        return ServerConfig.model_validate(updated)
    except Exception as exc:
        raise ConfigError(f"command-line flags: {exc}") from None


def _check(config: ServerConfig, registry: Registry, path: str) -> int:
    from verifier_server.lifecycle import settings_problems
    from verifier_server.resolver import Resolver

    problems = Resolver(registry, config).check_config() + settings_problems(registry, config)
    if problems:
        print(f"{path}: {len(problems)} problem(s)", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(
        f"{path}: OK ({len(config.rewards)} named reward(s), "
        f"verifiers: {', '.join(registry.names())})"
    )
    return 0


def _list(config: ServerConfig, registry: Registry, as_json: bool) -> int:
    from verifier_server.composite import CompositeParams

    entries = [
        (name, cls.description, cls.params_schema(), cls.execution)
        for name, cls in registry.items()
    ]
    entries.append(
        (
            "composite",
            "Weighted sums, min/max and gates, inline.",
            CompositeParams.model_json_schema(),
            "-",
        )
    )
    entries += [(name, r.description, {}, "reward") for name, r in sorted(config.rewards.items())]
    if as_json:
        print(
            json.dumps(
                {name: {"description": d, "params_schema": s} for name, d, s, _ in entries},
                indent=2,
            )
        )
        return 0
    for name, description, schema, execution in entries:
        print(f"{name}  [{execution}]  {description}")
        for param, spec in schema.get("properties", {}).items():
            default = f" = {json.dumps(spec['default'])}" if "default" in spec else ""
            kind = (
                spec.get("type")
                or "/".join(str(a.get("type", a.get("const", "?"))) for a in spec.get("anyOf", []))
                or "object"
            )
            if "enum" in spec:
                kind = "|".join(map(str, spec["enum"]))
            print(f"    {param}: {kind}{default}  {spec.get('description', '')}")
    return 0


def _serve(config: ServerConfig, registry: Registry) -> int:
    import uvloop

    from verifier_server.startup import serve

    try:
        uvloop.run(serve(config, registry))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
