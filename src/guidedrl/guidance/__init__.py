"""Guidance strategies: what happens to a scored group the student could not solve on its own."""
