"""Training Bradley-Terry reward models for the `reward_model` verifier:
`python -m rl_client.reward_model.train --help`. Self-contained: it shares only the input
encoding and padding (`rm_encoding`) with the verifier, so a model is served exactly as it
was trained."""
