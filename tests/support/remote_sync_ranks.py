"""One rank of a torchrun job (2 processes, gloo) sharing remote vLLM servers, for
test_vllm_remote.py. Every rank has its own engine over the same servers; rank 0 pushes the
weights, the other waits for its outcome. Each rank writes what it saw to OUT/rank{r}.json:
the sync's timing, the logprob drift after it, the server its single group went to, and the
error of a sync that one server fails."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch
from engine_parity import drift, perturb, sample_prompts

from rl_client.config import ModelConfig
from rl_client.distributed import close_world, init_world
from rl_client.engines.base import SamplingParams
from rl_client.engines.vllm_remote import RemoteEngineError, RemoteVLLMEngine
from rl_client.models import load_policy, load_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--urls", nargs="+", required=True)
    parser.add_argument("--silent-url", required=True)  # accepts and never answers
    parser.add_argument("--weights-dir", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    world = init_world(torch.device("cpu"))
    tokenizer = load_tokenizer(args.model)
    model = load_policy(ModelConfig(path=args.model), torch.device("cpu"))
    perturb(model, seed=11)  # the same on every rank: an update every rank has made
    engine = RemoteVLLMEngine(
        args.urls, tokenizer, weights_dir=args.weights_dir, rank=world.rank, leader=world.is_main
    )
    timing = engine.push_weights(model.state_dict().items() if world.is_main else None)
    mean, largest = drift(engine, model)
    before = list(engine.requests_sent)
    engine.generate(sample_prompts(tokenizer)[:1], SamplingParams(n=2, max_new_tokens=4))
    group_server = [a - b for a, b in zip(engine.requests_sent, before, strict=True)].index(2)
    engine.close()

    failing = RemoteVLLMEngine(
        [args.urls[0], args.silent_url],
        tokenizer,
        weights_dir=args.weights_dir,
        model=engine.model,
        sync_timeout_s=0.5,
        rank=world.rank,
        leader=world.is_main,
    )
    try:
        failing.push_weights(model.state_dict().items() if world.is_main else None)
        error = None
    except RemoteEngineError as exc:
        error = str(exc)
    failing.close()
    report = {
        "timing": dataclasses.asdict(timing),
        "drift": [mean, largest],
        "group_server": group_server,
        "error": error,
    }
    Path(args.out, f"rank{world.rank}.json").write_text(json.dumps(report))
    close_world()


if __name__ == "__main__":
    main()
