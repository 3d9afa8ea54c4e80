"""The math-verify worker process: says ``ready`` once its imports are done, then reads JSON lines
``[gold, prediction]`` on stdin and writes ``true``/``false``.

Run as ``python -m guidedrl.verify_worker`` by :mod:`guidedrl.rewards`, which kills it when a check overruns.
"""

from __future__ import annotations

import json
import sys


def main() -> None:
    """Answer each request line with whether math-verify finds the prediction equal to the gold answer."""
    from math_verify import parse, verify

    verify(parse("$1$"), parse("\\boxed{1}"), timeout_seconds=None)  # first-call imports happen before "ready"
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    for line in sys.stdin:
        try:
            gold, pred = json.loads(line)
            ok = bool(verify(parse(f"${gold}$"), parse(f"\\boxed{{{pred}}}"), timeout_seconds=None))
        except Exception:  # noqa: BLE001 — any failure on untrusted text is a wrong answer
            ok = False
        sys.stdout.write("true\n" if ok else "false\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
