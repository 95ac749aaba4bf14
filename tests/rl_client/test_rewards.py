"""RewardService's start-up errors say which server failed."""

from __future__ import annotations

import socket

import pytest

from rl_client.rewards import RewardService
from verifier_server.client import RewardClientError


def test_a_server_that_never_answers_is_named() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"  # bound, not listening: refused
        with pytest.raises(
            RewardClientError, match=rf"^{address}: server not SERVING after 0\.5 s$"
        ):
            RewardService(address, ready_timeout_s=0.5)
