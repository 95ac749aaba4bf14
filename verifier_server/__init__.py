"""verifier-rl reward server: scores completions for RL over gRPC (see README)."""

from verifier_server.types import ChatMessage, Item, Result, RewardSpec, Status

__all__ = ["ChatMessage", "Item", "Result", "RewardSpec", "Status"]
__version__ = "0.1.0"
