"""The Python API: ``from guidedrl import TrainConfig, Trainer, load_config`` (and the registries), imported on
first use; the docs' Python quick start trains two steps on the micro world as written."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import guidedrl

ROOT = Path(__file__).resolve().parents[1]


def test_import_guidedrl_is_light_and_each_name_is_its_module_s() -> None:
    probe = ("import json, sys, guidedrl; light = 'torch' not in sys.modules and 'guidedrl.config' not in sys.modules; "
             "from guidedrl import Trainer; import guidedrl.trainer.loop as loop; "
             "print(json.dumps([light, 'torch' in sys.modules, Trainer is loop.Trainer]))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=300)
    assert json.loads(done.stdout) == [True, True, True]
    from guidedrl import config, registry, yaml_config
    assert guidedrl.TrainConfig is config.TrainConfig and guidedrl.load_config is yaml_config.load_config
    for name in guidedrl.REGISTRIES:
        assert getattr(guidedrl, name) is getattr(registry, name)
    assert {"TrainConfig", "Trainer", "load_config", "ADVANTAGES", "ADVANTAGE_ADDONS"} <= set(guidedrl.__all__)
    assert set(guidedrl.__all__) <= set(dir(guidedrl))
    with pytest.raises(AttributeError, match="module 'guidedrl' has no attribute 'Trainr'"):
        getattr(guidedrl, "Trainr")


def test_the_docs_python_quick_start_trains_two_steps(micro_world: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    page = (ROOT / "docs" / "getting-started.md").read_text()
    code = re.search(r"## From Python\n.*?```python\n(.*?)```", page, re.S).group(1)
    assert len(code.splitlines()) <= 12
    (tmp_path / "worlds").mkdir()
    (tmp_path / "worlds" / "default").symlink_to(micro_world)  # the quick start's default world, at test size
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "docs/getting-started.md", "exec"), scope)
    run = tmp_path / "runs" / "quickstart"
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
             if "reward" in json.loads(line)]
    assert steps == [1, 2] and (run / "final" / "model.safetensors").is_file()
    assert scope["summary"] == json.loads((run / "summary.json").read_text())
    assert isinstance(scope["trainer"], guidedrl.Trainer) and scope["cfg"].steps == 2
