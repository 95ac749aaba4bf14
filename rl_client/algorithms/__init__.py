"""The algorithms of reasoning RL as pure tensor functions: advantages, losses, KL, presets;
for the rft and online DPO rounds, the DPO/IPO loss, winner and pair selection, the SFT loss."""
