"""A TEST DOUBLE of an OpenAI-compatible judge endpoint that misbehaves on purpose.

Real judges are tested against `transformers serve` (tests/verifier_server/verifiers/
test_judge_transformers.py); this server exists for the faults a real one will not produce
on demand. It runs on a loopback port in a thread of the test process. The first path
segment picks the behaviour: `http://127.0.0.1:PORT/<mode>/v1/chat/completions`.

modes:
  scripted   a judge that reads the quoted completion: 9/10 if it contains GOOD, else 2/10;
             pairwise: the response containing GOOD wins, else tie. A completion can break
             it, as real judges can be broken: one containing BREAK_THE_JUDGE gets a reply
             with no verdict, CUT_THE_JUDGE one cut off (finish_reason "length"),
             OUT_OF_RANGE a score of 99, and one containing ECHO: gets what follows it as
             the whole reply (a judge obeying instructions in the completion); a request
             over CONTEXT_CHARS
             characters gets HTTP 400 "maximum context length exceeded"
  biased     pairwise judge that always answers A (position bias)
  pattern    like scripted, but replies in prose ending with "SCORE: n"
  slow       sleeps `slow_s` (default 5) before answering
  prefill    like scripted after a sleep that grows with the request: `per_char_s` (default
             2e-5) per character of the body, as a real prefill does (60k characters: 1.2 s)
  ratelimit  answers 429 with Retry-After: 1 to the first request of each distinct body,
             then like scripted
  grader     an OpenAI score_model / label_model grader: {"result": ...} with the schema's
             maximum (or last label) when the request holds GOOD, else its minimum (first
             label); BREAK_THE_JUDGE: no verdict; ECHO: as in scripted
  grader_prefill  grader after prefill's sleep
  garbage    200 with a reply that holds no verdict
  truncated  200 with a reply cut off before its verdict (finish_reason "length")
  not_json   200 with an HTML body
  flaky      HTTP 500 while `down` is set, else like scripted
  echo_key   200 whose reply repeats the Authorization header; `/echo_key_error` a 400 that does
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections import defaultdict
from typing import Any

from aiohttp import web

CONTEXT_CHARS = 100_000
_ECHO = "ECHO:"
_CUT = '{"rationale": "The response begins with'  # a verdict cut at max_tokens
_QUOTE = re.compile(r"<<<(COMPLETION(?:_A|_B)?) (\w+)>>>\n(.*?)\n<<<END \1 \2>>>", re.DOTALL)


class MisbehavingBackend:
    def __init__(self) -> None:
        self.requests: dict[str, list[tuple[float, dict[str, Any], dict[str, str]]]] = defaultdict(
            list
        )
        self.down = False
        self.slow_s = 5.0
        self.per_char_s = 2e-5
        self._seen_ratelimit: set[str] = set()
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the misbehaving backend did not start")

    def url(self, mode: str) -> str:
        return f"http://127.0.0.1:{self.port}/{mode}/v1"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/{mode}/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._started.set()
        self._loop.run_forever()

    async def _chat(self, request: web.Request) -> web.Response:
        mode = request.match_info["mode"]
        raw = await request.text()
        body = json.loads(raw)
        self.requests[mode].append((time.monotonic(), body, dict(request.headers)))
        auth = request.headers.get("Authorization", "")
        if mode == "slow":
            await asyncio.sleep(self.slow_s)
        elif mode in ("prefill", "grader_prefill"):
            await asyncio.sleep(len(raw) * self.per_char_s)
            if mode == "grader_prefill":
                return _reply(_grade(body))
        elif mode == "ratelimit" and raw not in self._seen_ratelimit:
            self._seen_ratelimit.add(raw)
            return web.json_response(
                {"error": "slow down"}, status=429, headers={"Retry-After": "1"}
            )
        elif mode == "garbage":
            return _reply("What a lovely answer. I have no further comments.")
        elif mode == "grader":
            return _reply(_grade(body))
        elif mode == "truncated":
            return _reply(_CUT, "length")
        elif mode == "not_json":
            return web.Response(text="<html>502 bad gateway</html>", content_type="text/html")
        elif mode == "flaky" and self.down:
            return web.json_response({"error": "internal"}, status=500)
        elif mode == "echo_key":
            return _reply(f"your header was {auth}")
        elif mode == "echo_key_error":
            return web.json_response({"error": f"bad request from {auth}"}, status=400)
        elif len(raw) > CONTEXT_CHARS:
            error = {"message": "This model's maximum context length is exceeded"}
            return web.json_response({"error": error}, status=400)
        verdict = _judge(body, prose=mode == "pattern", biased=mode == "biased")
        return _reply(verdict, "length" if verdict == _CUT else "stop")


def _judge(body: dict[str, Any], prose: bool, biased: bool) -> str:
    user = body["messages"][-1]["content"]
    quoted = {label: text for label, _, text in _QUOTE.findall(user)}
    for text in quoted.values():
        if _ECHO in text:
            return text.split(_ECHO, 1)[1]
    if any("BREAK_THE_JUDGE" in text for text in quoted.values()):
        return "I refuse to grade this. Here is a poem instead."
    if any("CUT_THE_JUDGE" in text for text in quoted.values()):
        return _CUT
    if "COMPLETION_A" in quoted:
        a, b = "GOOD" in quoted["COMPLETION_A"], "GOOD" in quoted["COMPLETION_B"]
        winner = "A" if biased or (a and not b) else "B" if b and not a else "tie"
        if prose:
            return f"Having compared both.\nWINNER: {winner}"
        return json.dumps({"rationale": "compared both", "winner": winner})
    completion = quoted.get("COMPLETION", "")
    score = 99 if "OUT_OF_RANGE" in completion else 9 if "GOOD" in completion else 2
    if prose:
        return f"The response was read with care.\nSCORE: {score}"
    return json.dumps({"rationale": f"scored {score}", "score": score})


def _grade(body: dict[str, Any]) -> str:
    text = "\n".join(m["content"] for m in body["messages"][:-1])  # not our system message
    if _ECHO in text:
        return text.split(_ECHO, 1)[1]
    if "BREAK_THE_JUDGE" in text:
        return "No."
    result = body["response_format"]["json_schema"]["schema"]["properties"]["result"]
    good = "GOOD" in text
    if "enum" in result:
        return json.dumps({"result": result["enum"][-1 if good else 0]})
    return json.dumps({"result": result["maximum" if good else "minimum"]})


def _reply(content: str, finish_reason: str = "stop") -> web.Response:
    return web.json_response(
        {
            "id": "test",
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": finish_reason,
                }
            ],
        }
    )
