"""verifier-rl's trainer side: an online RL client that scores through verifier_server.

The RL trainer (GRPO, DAPO, Dr. GRPO, RLOO, REINFORCE++, PPO) is `rl_client.trainer.train`;
`rl_client.reward_model` trains reward models."""
