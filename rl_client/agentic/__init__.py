"""Agentic multi-turn rollouts: an environment, a tool-calling loop, token in and token out.

The tool-call format (Hermes / Qwen style): a model turn calls tools by writing, anywhere in
its text, one or more blocks

    <tool_call>{"name": "python", "arguments": {"code": "print(6 * 7)"}}</tool_call>

The turn stops at the first `</tool_call>` (it is a stop string), the calls run (async, each
with a timeout), and their outputs come back as one tool message, rendered by
`AgentSettings.observation_template` (ChatML by default). A turn without a tool call ends the
episode: its text is the final answer, the only text the reward server scores. A malformed
call (not JSON, no "name", an unknown tool) is answered with an error message, so the model
can learn to fix it; it does not end the episode.

Token in, token out: the context of each turn is the previous turn's context plus the exact
tokens the engine sampled, plus the tokens of the rendered tool output; earlier turns are
never decoded and re-tokenised. Tool-output tokens are masked out of the loss
(`Completion.loss_mask`), and carry logprob 0 (never read).
"""
