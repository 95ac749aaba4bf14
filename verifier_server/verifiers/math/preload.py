"""Imported by the worker pool's forkserver (see registry.FORKSERVER_PRELOAD): warms the LaTeX
parser once there, so every worker forked from it, including one replacing a worker killed for
a timeout, starts with the parser's tables built instead of paying about half a second."""

from verifier_server.verifiers.math.verifier import MathVerifier

MathVerifier().warm_up()
