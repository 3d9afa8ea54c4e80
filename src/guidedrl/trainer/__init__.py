"""The training loop and what it needs to be interrupted and resumed: data order, checkpoints, logs."""
