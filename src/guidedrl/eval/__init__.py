"""Held-out evaluation: pass@k, greedy accuracy, length and diversity of correct solutions."""
