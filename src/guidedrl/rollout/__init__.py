"""Rollout generation: the padded ``Rollouts`` batch, the engine protocol, the transformers backend, and
the single teacher-forced forward that recomputes response log-probs for training."""
