"""TRL's GRPOTrainer on the toy task, run by vs_trl.py inside .bench-venv-trl.

Reads a JSON job on argv[1], prints one JSON line: per-step wall times, time spent inside
`generate`, and the mean reward per step. The reward is an in-process Python function with the
same verdict as the server's `math` verifier gives on this task's integers: the content of the
last \\boxed{...} equals the reference."""

from __future__ import annotations

import json
import sys
import time

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import GRPOConfig, GRPOTrainer


def main() -> None:
    job = json.loads(sys.argv[1])
    if job["threads"] is not None:
        torch.set_num_threads(job["threads"])
    torch.manual_seed(job["seed"])
    with open(job["prompts"]) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    dataset = Dataset.from_list(
        [
            {
                "prompt": [
                    {"role": "system", "content": job["system_prompt"]},
                    {"role": "user", "content": row["prompt"]},
                ],
                "reference": row["reference"],
            }
            for row in rows
        ]
    )

    def last_box(text: str) -> str | None:
        start = text.rfind("\\boxed{")
        end = text.find("}", start)
        return text[start + len("\\boxed{") : end].strip() if start >= 0 and end >= 0 else None

    def boxed_equals_reference(completions: list, reference: list, **_: object) -> list[float]:
        return [
            1.0 if last_box(c[0]["content"]) == ref.strip() else 0.0
            for c, ref in zip(completions, reference, strict=True)
        ]

    model = AutoModelForCausalLM.from_pretrained(job["model"])
    tokenizer = AutoTokenizer.from_pretrained(job["model"])
    generate_s = [0.0]
    original_generate = model.generate

    def timed_generate(*args: object, **kwargs: object) -> object:
        began = time.perf_counter()
        try:
            return original_generate(*args, **kwargs)
        finally:
            generate_s[0] += time.perf_counter() - began

    model.generate = timed_generate  # type: ignore[method-assign]

    class StepTimes(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.generate: list[float] = []
            self.rewards: list[float] = []
            self._began = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            generate_s[0] = 0.0
            self._began = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter() - self._began)
            self.generate.append(generate_s[0])

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "reward" in logs:
                self.rewards.append(logs["reward"])

    config = GRPOConfig(
        output_dir=job["output"],
        max_steps=job["steps"],
        per_device_train_batch_size=job["prompts_per_step"] * job["group_size"],
        num_generations=job["group_size"],
        max_completion_length=job["max_new_tokens"],
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        learning_rate=job["lr"],
        lr_scheduler_type="constant",
        warmup_steps=0,
        beta=0.0,
        loss_type="grpo",
        num_iterations=1,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        seed=job["seed"],
        disable_tqdm=True,
    )
    callback = StepTimes()
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=boxed_equals_reference,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[callback],
    )
    trainer.train()
    print(
        "RESULT "
        + json.dumps(
            {"step_s": callback.times, "generate_s": callback.generate, "rewards": callback.rewards}
        )
    )


if __name__ == "__main__":
    main()
