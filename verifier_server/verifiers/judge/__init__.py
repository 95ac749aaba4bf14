"""The `judge` verifier: an LLM judge over OpenAI-compatible endpoints.

- verifier.py: the Verifier (params, settings, scoring, fault attribution)
- backend.py: calls to an endpoint (HTTP, deadlines, structured output)
- limits.py: rate limit, backoff, circuit breaker
- rubrics.py: templates and quoting of the completion
- verdicts.py: reading the judge's reply
- cache.py: identical requests answered once
"""
