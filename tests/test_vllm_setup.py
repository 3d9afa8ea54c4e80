"""The vLLM engine's start-up decisions, which need no vLLM to check (``tests/test_vllm.py`` runs the engine
itself): the releases and environments it refuses, where its engine starts, how long a sequence it holds, when it
sleeps, and the folder it starts from (a model built in memory: a copy, gone once vLLM has started)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM

from guidedrl.config import RolloutConfig, VLLMSection
from guidedrl.rollout.vllm_engine import (
    check_in_process,
    check_version,
    import_vllm,
    model_folder,
    model_len,
    placement,
    sleeps,
)
from guidedrl.world.tokenizer import build_tokenizer
from guidedrl.world.zoo import make_model
from guidedrl.yaml_config import ConfigError


def test_vllm_told_to_run_its_engine_in_a_subprocess_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The weight sync hands vLLM tensors of the training process: a user's =1 is an error, not a silent hang."""
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    with pytest.raises(ConfigError, match=r"^VLLM_ENABLE_V1_MULTIPROCESSING=1: .*unset VLLM_ENABLE_V1_MULTIPROCESSING "
                                          r"or set it to 0$"):
        import_vllm()
    check_in_process({"VLLM_ENABLE_V1_MULTIPROCESSING": "0"})
    check_in_process({})


@pytest.mark.parametrize("version", ["0.11.0", "0.15.1"])
def test_a_vllm_older_than_the_reload_api_is_refused_naming_its_version(version: str) -> None:
    with pytest.raises(ConfigError, match=rf"needs vLLM >= 0\.16\.0, .*; vLLM {re.escape(version)} is installed"):
        check_version(version)


@pytest.mark.parametrize("version", ["0.16.0", "0.32.0", "1.0.0"])
def test_a_vllm_with_the_reload_api_is_accepted(version: str) -> None:
    check_version(version)


def test_one_process_engine_on_a_gpu_other_than_the_first_is_refused() -> None:
    """One process: vLLM starts on the first visible GPU, so cuda:N (N ≠ 0) is refused with what to set instead.
    Several processes: each rank's engine starts on its LOCAL_RANK's device (vLLM's external launcher)."""
    with pytest.raises(ConfigError, match=r"^device: cuda:1 with rollout.engine: vllm: .*CUDA_VISIBLE_DEVICES=1.* "
                                          r"and set device: cuda$"):
        placement(torch.device("cuda:1"), {})
    for device in ("cpu", "cuda", "cuda:0"):
        assert placement(torch.device(device), {"WORLD_SIZE": "1"}) == {}
    for device in ("cpu", "cuda:3"):
        assert placement(torch.device(device), {"WORLD_SIZE": "2"}) == {"distributed_executor_backend":
                                                                          "external_launcher"}


def test_sleep_mode_is_on_by_default_on_a_gpu_and_refused_on_a_cpu() -> None:
    assert sleeps(VLLMSection(), torch.device("cuda:0"))
    assert not sleeps(VLLMSection(), torch.device("cpu"))
    assert not sleeps(VLLMSection(sleep_mode=False), torch.device("cuda"))
    with pytest.raises(ConfigError, match=r"^rollout.vllm.sleep_mode: .* this run is on cpu"):
        sleeps(VLLMSection(sleep_mode=True), torch.device("cpu"))


def test_vllm_holds_the_runs_longest_sequence_not_the_models_context() -> None:
    """A 128k-context model at 1k + 3k tokens: vLLM sizes its KV cache for 4096, not 131072."""
    run = RolloutConfig(max_prompt_length=1024, max_new_tokens=3072)
    assert model_len(run, 131072) == 4096
    assert model_len(run, 2048) == 2048  # never past the model's context
    assert model_len(run, None) == 4096
    # no max_prompt_length: prompts are cut at the context minus the response budget, so the context is the bound
    assert model_len(RolloutConfig(max_new_tokens=3072), 32768) == 32768
    assert model_len(RolloutConfig(max_prompt_length=1024, vllm=VLLMSection(max_model_len=5000)), 32768) == 5000


def test_vllm_starts_from_the_policys_config_and_links_to_its_weights_in_a_folder_removed_after_the_start(
        tmp_path: Path) -> None:
    """A loaded model: its config as loaded (``model_overrides`` included) and links to its weight files, none
    copied. A model built in memory: a copy of its weights in vLLM's dtype. Either folder is gone after the start."""
    tokenizer = build_tokenizer()
    in_memory = make_model(tokenizer, "micro", seed=0)
    with model_folder(in_memory, tokenizer, torch.bfloat16) as folder:
        weights = load_file(Path(folder) / "model.safetensors")
        assert weights and {w.dtype for w in weights.values()} == {torch.bfloat16}  # vLLM's dtype, not fp32
        assert (Path(folder) / "config.json").exists() and (Path(folder) / "tokenizer_config.json").exists()
    assert not Path(folder).exists()
    in_memory.save_pretrained(tmp_path / "model")
    overridden = AutoConfig.from_pretrained(tmp_path / "model", max_position_embeddings=4096)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "model", config=overridden)
    with model_folder(loaded, tokenizer, torch.bfloat16) as folder:
        started = Path(folder)
        assert (started / "model.safetensors").is_symlink()
        assert (started / "model.safetensors").resolve() == (tmp_path / "model" / "model.safetensors").resolve()
        assert AutoConfig.from_pretrained(started).max_position_embeddings == 4096
    assert not started.exists() and (tmp_path / "model" / "model.safetensors").exists()
