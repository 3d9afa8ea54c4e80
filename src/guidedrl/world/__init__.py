"""The embedded arithmetic world: problems, solution styles, tokenizer, tiny models, and the build that makes them."""
