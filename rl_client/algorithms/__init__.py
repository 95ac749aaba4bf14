"""The algorithms of reasoning RL as pure tensor functions: advantages, losses, KL, presets."""
