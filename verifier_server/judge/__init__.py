"""The parts of the `judge` verifier (verifier_server.verifiers.judge): `backend` (calls to an
OpenAI-compatible endpoint), `limits` (rate limit, backoff, circuit breaker), `rubrics`
(templates and quoting), `verdicts` (reading the reply) and `cache` (identical requests)."""
