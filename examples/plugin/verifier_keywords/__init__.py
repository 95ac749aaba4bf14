"""Example plugin package for verifier-rl (see README.md beside it)."""
