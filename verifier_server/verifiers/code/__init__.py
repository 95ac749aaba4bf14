"""The `code` verifier: programs run in `sandboxes`, judged by tests.

- verifier.py: the Verifier (params, extraction, scheduling of runs, results)
- reference.py: the item's tests (stdin/stdout, HumanEval, MBPP), validated up front
- compare.py: comparing a run's output with the expected one (outside the sandbox)
- harness.py: the program that runs inside the sandboxes for function tests, as the program's
  server and as the judge (read as bytes and sent into each run, never imported here)
"""
