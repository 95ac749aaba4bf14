"""What the reward model server and the reward-model trainer must agree on, in one neutral
place: how a (prompt, completion) pair becomes tokens (`encoding`) and how a batch of them is
padded (`padding`). `verifier_server.verifiers.reward_model` serves with it and
`rl_client.reward_model` trains with it, so a model is served exactly as it was trained;
neither reaches into the other.
"""
