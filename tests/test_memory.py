"""Memory at Qwen's real vocabulary (151,936 tokens), measured on this CPU: one step of GRPO, AMPO, Guide and
TGPO stays under a bound set by the token budget, at least 4× below what the step's B×R×V fp32 logits alone
would take, and near the memory estimate; the same GRPO step with whole-batch forwards and full logits does
not. The steps run in a fresh process (bench/memory_peak.py), whose peak resident memory is read from Linux.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from memory_peak import measure  # noqa: E402

MIB = 1024 ** 2
ESTIMATE_FACTOR = 1.5  # the measured rise and the estimate's update phase agree within this factor


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's resettable peak (VmHWM)")
def test_a_step_stays_under_its_token_budget_bound_and_full_logits_do_not() -> None:
    results = measure(["grpo", "ampo", "guide", "tgpo", "grpo:naive"])
    *chunked, naive = results
    for r in results:
        print(f"{r['method']}{' naive' if r['naive'] else ''}: peak +{r['peak_rise_bytes'] / MIB:.0f} MiB, "
              f"B×R×V fp32 logits {r['full_logits_bytes'] / MIB:.0f} MiB, "
              f"estimate {r['estimate_update_bytes'] / MIB:.0f} MiB")
    bound = min(r["full_logits_bytes"] for r in results) / 4
    for r in chunked:
        assert r["peak_rise_bytes"] < bound, r
        estimate = r["estimate_update_bytes"]
        assert estimate / ESTIMATE_FACTOR < r["peak_rise_bytes"] < estimate * ESTIMATE_FACTOR, r
    by_method = {r["method"]: r for r in chunked}
    assert by_method["ampo"]["inserted"] > 0 and by_method["guide"]["hinted_rate"] > 0  # guidance really acted
    assert naive["peak_rise_bytes"] > bound * 4  # whole-batch forwards: above the B×R×V logits themselves
