"""The client of served teachers against real HTTP servers on loopback that misbehave: one that is down, one
that answers garbage, one that is too slow. (Against a real ``vllm serve``: tests/test_vllm.py.)"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytest.importorskip("openai")
from guidedrl.config import ServerSpec, TeacherSource  # noqa: E402
from guidedrl.errors import RunError  # noqa: E402
from guidedrl.precision import Precision  # noqa: E402
from guidedrl.rollout.engine import Rollouts  # noqa: E402
from guidedrl.teachers.server import DiskCache, ServedTeacher, server_client, server_pool  # noqa: E402
from guidedrl.yaml_config import ConfigError  # noqa: E402
from loopback import free_port  # noqa: E402

MODELS = b'{"object": "list", "data": [{"id": "m", "object": "model"}]}'


@contextmanager
def http_server(answer: Callable[[str], bytes], calls: list[str], models: bytes = MODELS) -> Iterator[str]:
    """A real HTTP server on loopback (a thread per request): GET /v1/models answers ``models`` (model m); every
    POST is answered by ``answer``."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.reply(models)

        def do_POST(self) -> None:
            calls.append(self.path)
            self.rfile.read(int(self.headers["Content-Length"]))
            self.reply(answer(self.path))

        def reply(self, body: bytes) -> None:
            try:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except BrokenPipeError:  # the client gave up waiting (the slow server's test)
                pass

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}/v1"
    finally:
        httpd.shutdown()


def test_a_server_that_is_down_is_an_error_at_start() -> None:
    spec = ServerSpec(base_url=f"http://127.0.0.1:{free_port()}/v1", model="m", timeout_s=2, retries=0)
    with pytest.raises(ConfigError, match=r"guidance.teachers: the teacher server at http://127.0.0.1:\d+/v1 does "
                                          "not answer"):
        server_client(spec, None, "guidance.teachers")


def test_a_server_answering_garbage_is_a_counted_skip_after_its_retries() -> None:
    calls: list[str] = []
    with http_server(lambda path: b'{"choices": "not a list"}', calls) as url:  # healthy at start, then garbage
        spec = ServerSpec(base_url=url, model="m", timeout_s=5, retries=2, backoff_s=0.01)
        pool = server_pool(TeacherSource(kind="server", server=spec), 16, 0, Precision(), None)
        assert pool.solutions([{"prompt": "1+1\n"}]) == [[]]
        assert pool.skipped == 1 and len(calls) == 3  # the first try and two retries


def test_a_server_serving_another_model_is_an_error_at_start() -> None:
    with http_server(lambda path: b"{}", []) as url:
        with pytest.raises(ConfigError, match=r"teacher_signal.server: the server at .* serves \['m'\], not 'other'"):
            server_client(ServerSpec(base_url=url, model="other"), None, "teacher_signal.server")


def test_a_slow_server_times_out_into_a_counted_skip() -> None:
    def slow(path: str) -> bytes:
        time.sleep(1.5)
        return b'{"choices": [{"index": 0, "text": "late", "finish_reason": "stop"}]}'

    calls: list[str] = []
    with http_server(slow, calls) as url:
        spec = ServerSpec(base_url=url, model="m", timeout_s=0.5, retries=1, backoff_s=0.01)
        pool = server_pool(TeacherSource(kind="server", server=spec), 16, 0, Precision(), None)
        assert pool.solutions([{"prompt": "1+1\n"}, {"prompt": "2+2\n"}]) == [[], []]
        assert pool.skipped == 2 and len(calls) == 4


def test_teacher_log_probs_that_fail_stop_the_run_with_a_clear_error() -> None:
    rollouts = Rollouts.from_token_lists([[5, 6]], [[7, 2]], 0, 2)
    with http_server(lambda path: b'{"choices": [{"index": 0, "text": "x"}]}', []) as url:
        teacher = ServedTeacher(server_client(ServerSpec(base_url=url, model="m", retries=0), None, "x"))
        with pytest.raises(RunError, match="teacher_signal.server: .*no prompt_logprobs.*resume from its last "
                                           "checkpoint"):
            teacher.predict(rollouts)


def test_lengths_beyond_a_served_teachers_max_model_len_are_refused_at_start() -> None:
    from guidedrl.config import TeacherSignalConfig
    from guidedrl.teachers.signal import TeacherSignal

    listed = b'{"object": "list", "data": [{"id": "m", "object": "model", "max_model_len": 4096}]}'
    with http_server(lambda path: b"{}", [], listed) as url:
        cfg = TeacherSignalConfig(server=ServerSpec(base_url=url, model="m"))
        with pytest.raises(ValueError, match=r"= 5120 tokens exceed the served teacher's max_model_len \(4096\)"):
            TeacherSignal(None, None, cfg, frozenset({"teacher_logp"}), 1.0, 0, Precision(), longest=5120)
        assert TeacherSignal(None, None, cfg, frozenset({"teacher_logp"}), 1.0, 0, Precision(), longest=4096)


def test_a_cache_read_by_several_threads_at_once_is_never_seen_half_read(tmp_path: Path) -> None:
    """A resumed run's pool asks for every problem at once; the cache file is read at the first use, and a thread
    that came in while another was reading it saw a half-filled cache: a miss, a request to a server that may be
    down, a skip (35 of 40 such asks missed before the read was locked)."""
    path = tmp_path / "cache.jsonl"
    path.write_text("".join(json.dumps({"key": f"k{i}", "value": i}) + "\n" for i in range(20000)))
    for _ in range(5):
        cache, found = DiskCache(path), []
        barrier = threading.Barrier(8)

        def ask(cache: DiskCache = cache, found: list = found, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            found.append(cache.get("k19999"))

        threads = [threading.Thread(target=ask) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert found == [19999] * 8
