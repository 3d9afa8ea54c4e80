"""A preallocated KV cache for the built-in engine's decode loop.

transformers' ``DynamicCache`` grows every layer's keys and values by concatenation, one token per step: each
step copies the whole cache, so a response of R tokens copies O(R²) (37% of a 50M-parameter generation call).
Here each layer writes into buffers sized for prompt + ``max_new_tokens`` once and hands attention a view of
the filled part: the same keys and values, in the same shapes, as the growing cache would.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import Cache, DynamicLayer


class PreallocatedLayer(DynamicLayer):
    """One layer's keys and values in buffers of ``capacity`` positions; ``keys``/``values`` are views of the
    positions written so far, so everything that reads a growing layer reads this one the same way."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        b, h, _, dk = key_states.shape
        self.key_buffer = key_states.new_empty((b, h, self.capacity, dk))
        self.value_buffer = value_states.new_empty((b, h, self.capacity, value_states.shape[-1]))
        self._view(0)
        self.is_initialized = True

    def _view(self, length: int) -> None:
        self.keys, self.values = self.key_buffer[:, :, :length], self.value_buffer[:, :, :length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new positions after the filled ones; the filled part, as views."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start = self.keys.shape[-2]
        end = start + key_states.shape[-2]
        if end > self.capacity:
            raise ValueError(f"KV cache of {self.capacity} positions cannot take position {end}")
        self.key_buffer[:, :, start:end] = key_states
        self.value_buffer[:, :, start:end] = value_states
        self._view(end)
        return self.keys, self.values

    def batch_repeat_interleave(self, repeats: int) -> None:
        """Each row ``repeats`` times (the G samples of a prompt share its prefill)."""
        if self.is_initialized:
            length = self.keys.shape[-2]
            self.key_buffer = self.key_buffer.repeat_interleave(repeats, dim=0)
            self.value_buffer = self.value_buffer.repeat_interleave(repeats, dim=0)
            self._view(length)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep the rows ``indices`` (finished rows dropped from the batch)."""
        if self.is_initialized:
            length = self.keys.shape[-2]
            self.key_buffer, self.value_buffer = self.key_buffer[indices], self.value_buffer[indices]
            self._view(length)


def decode_cache(config: Any, capacity: int, preallocated: bool = True) -> Cache:
    """The cache of one decode call: preallocated for ``capacity`` positions when every layer attends to the
    whole sequence, else (sliding-window or hybrid layers, or ``preallocated`` off) transformers' growing one."""
    layer_types = getattr(config.get_text_config(decoder=True), "layer_types", None)
    plain = layer_types is None or all(t == "full_attention" for t in layer_types)
    if not (preallocated and plain):
        return DynamicCache(config=config)
    layers = config.get_text_config(decoder=True).num_hidden_layers
    return Cache(layers=[PreallocatedLayer(capacity) for _ in range(layers)])
