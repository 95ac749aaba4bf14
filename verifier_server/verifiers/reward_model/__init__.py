"""The `reward_model` verifier: a served transformers sequence classifier.

- verifier.py: the Verifier (params, settings, normalisation, results)
- model.py: loading and forward passes (the only module here that imports torch)
- batcher.py: cross-request micro-batching
- normalize.py: sigmoid, running mean/std
The input encoding, shared with the reward-model trainer, is in `rm_encoding`.
"""
