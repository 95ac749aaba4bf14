"""rl_client: an online RL trainer (GRPO, DAPO, Dr. GRPO, RLOO, REINFORCE++, PPO) that gets its
rewards from verifier_server over gRPC. The loop is `rl_client.trainer.train`."""
