"""Advantage estimators, policy losses and per-token log-prob helpers."""
