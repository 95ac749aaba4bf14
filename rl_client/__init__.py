"""verifier-rl's trainer side: an online RL client that scores through verifier_server."""
