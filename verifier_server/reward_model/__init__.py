"""The parts of the `reward_model` verifier (verifier_server.verifiers.reward_model):
`encoding` (conversation -> tokens, shared with the trainer), `model` (loading and forward
passes; the only module that imports torch), `batcher` (cross-request micro-batching) and
`normalize` (sigmoid, running mean/std)."""
