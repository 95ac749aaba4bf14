"""Logging set-up for `verifier-server serve`: plain text, or one JSON object a line with the
RPC's request id and caller (see verifier_server.access) on every record logged while an RPC
is handled."""

from __future__ import annotations

import json
import logging
import time
from typing import Literal

from verifier_server.access import caller_var, request_id_var

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _RpcContext(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.caller = caller_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "message", "request_id"?, "caller"?, "exception"?}`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("request_id", "caller"):
            value = getattr(record, key, "")
            if value:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(level: str, log_format: Literal["text", "json"]) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(_RpcContext())
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(_TEXT_FORMAT)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
