"""Latency of the running demo, as its users see it: ``verify`` and ``identify`` through gradio_client.

Starts ``app.py --model CKPT`` on a free loopback port (in its own process group, stopped at the
end whatever happens), waits until it answers, sends one untimed request to each endpoint
(first requests pay one-off costs), then runs each concurrency level in turn: that many clients,
each in its own thread with its own Gradio session, send their requests one after another. A
request's latency is the wall time of ``Client.predict`` (upload of the 5-s clips, queueing
behind other clients, embedding, plots, download of the result). Each client enrols one
speaker once (timed, one sample per client) so that ``identify`` has a gallery to search.

The app serves ``QUEUE_CONCURRENCY`` requests at a time; the rest wait in its queue, so p95 at
16 clients mostly measures queueing. Requests stop when ``--budget`` seconds of measuring have
passed; the table says how many were made.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from benchmarks import common
from speakerdemo.audio import SAMPLE_RATE
from speakerdemo.checkpoint import BACKENDS

NAME = "app_latency"
START_TIMEOUT = 180.0  # seconds for the app to import gradio and torch and load the model
REQUEST_TIMEOUT = 120.0
PR_SET_PDEATHSIG = 1


@dataclass
class Phase:
    """Latencies of one endpoint at one concurrency level."""

    api: str
    clients: int
    backend: str = "auto"
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wall: float = 0.0

    def percentile(self, q: float) -> float | None:
        return float(np.percentile(self.latencies, q)) if self.latencies else None


def free_port() -> int:
    """A port nothing listens on right now (the app binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the app's process: get SIGTERM when the benchmark dies, even by SIGKILL (Linux prctl)."""
    try:
        ctypes.CDLL("libc.so.6").prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def start_app(checkpoint: Path, port: int, log: Any, backend: str = "auto") -> subprocess.Popen:
    """``app.py`` in a new process group, so that stopping it also stops anything it started.

    It is tied to this process' life as well: a smoke test that kills the benchmark at its
    timeout must not leave a server behind.
    """
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [
            sys.executable,
            str(common.REPO_ROOT / "app.py"),
            "--model",
            str(checkpoint),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--device",
            "cpu",
            "--backend",
            backend,
        ],
        cwd=common.REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )


def wait_ready(url: str, app: subprocess.Popen, log_path: Path) -> float:
    """Seconds until the app answers HTTP 200; exits with its log's tail if it dies or hangs."""
    start = time.perf_counter()
    while time.perf_counter() - start < START_TIMEOUT:
        if app.poll() is not None:
            sys.exit(f"error: app.py exited with {app.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return time.perf_counter() - start
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    sys.exit(f"error: app.py did not answer within {START_TIMEOUT:.0f} s:\n{log_path.read_text()[-3000:]}")


def stop_app(app: subprocess.Popen) -> None:
    """SIGTERM to the app's process group, SIGKILL if it is still there after 10 s."""
    if app.poll() is not None:
        return
    os.killpg(app.pid, signal.SIGTERM)
    try:
        app.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(app.pid, signal.SIGKILL)
        app.wait()


def write_clips(corpus: Path, folder: Path, seconds: float) -> list[str]:
    """Four clips of real speech from four LibriSpeech readers, as 16-bit WAV files."""
    paths = []
    for i, clip in enumerate(common.speech_clips(corpus, seconds, 4)):
        path = folder / f"clip{i}.wav"
        sf.write(path, clip, SAMPLE_RATE, subtype="PCM_16")
        paths.append(str(path))
    return paths


def run_phase(
    phase: Phase, clients: list[Any], request: Callable[[Any], Any], per_client: int, deadline: float
) -> None:
    """Each client in its own thread sends ``per_client`` requests back to back (until the deadline)."""
    lock = threading.Lock()
    barrier = threading.Barrier(len(clients))

    def worker(client: Any) -> None:
        barrier.wait()
        for _ in range(per_client):
            if time.perf_counter() > deadline:
                return
            start = time.perf_counter()
            try:
                request(client)
            except Exception as err:  # a failed request is a result to report, not a crash
                with lock:
                    phase.errors.append(f"{type(err).__name__}: {err}"[:200])
                continue
            with lock:
                phase.latencies.append(time.perf_counter() - start)

    threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in clients]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    phase.wall = time.perf_counter() - start


def connect(url: str, downloads: Path, timeout: float = REQUEST_TIMEOUT) -> Any:
    """A quiet gradio_client session with the app: files it returns go under ``downloads``."""
    from gradio_client import Client

    return Client(
        url, verbose=False, analytics_enabled=False, download_files=str(downloads), httpx_kwargs={"timeout": timeout}
    )


def measure(
    url: str, clips: list[str], levels: list[int], per_client: int, budget: float, downloads: Path
) -> list[Phase]:
    """verify, enroll and identify at every concurrency level, within ``budget`` seconds in all."""
    from gradio_client import handle_file

    deadline = time.perf_counter() + budget
    a, b, enrol, query = clips

    def verify(client: Any) -> Any:
        return client.predict(handle_file(a), handle_file(b), 0.5, api_name="/verify")

    def enroll(client: Any) -> Any:
        return client.predict("speaker", None, [handle_file(enrol)], api_name="/enroll")

    def identify(client: Any) -> Any:
        return client.predict(handle_file(query), 0.5, 5, api_name="/identify")

    new_client = partial(connect, url, downloads)
    warm = new_client()  # the first requests pay one-off costs (imports, plot templates): not timed
    for request in (verify, enroll, identify):
        request(warm)
    warm.close()
    phases = []
    for level in levels:
        clients = [new_client() for _ in range(level)]
        for api, request, count in (
            ("verify", verify, per_client),
            ("enroll", enroll, 1),
            ("identify", identify, per_client),
        ):
            phase = Phase(api, level)
            run_phase(phase, clients, request, count, deadline)
            phases.append(phase)
            common.note(
                f"{api} x{level} clients: {len(phase.latencies)} done, {len(phase.errors)} failed in {phase.wall:.1f} s"
            )
        for client in clients:
            client.close()
    return phases


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__, checkpoint="checkpoint folder")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16], help="concurrency levels")
    parser.add_argument("--requests", type=int, default=8, help="requests per client per endpoint")
    parser.add_argument("--seconds", type=float, default=5.0, help="clip length")
    parser.add_argument("--budget", type=float, default=210.0, help="seconds of requests at most, all levels")
    parser.add_argument(
        "--backends", nargs="+", default=["auto"], choices=BACKENDS, help="app.py --backend of each run, in order"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.clients, args.requests, args.budget = [1, 2], 2, 10.0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(f"{NAME}: terminated"))  # so `finally` stops the app
    common.print_header(NAME, f"checkpoint: {args.checkpoint}")
    corpus = common.data_or_skip(args.data, "librispeech-251")
    if corpus is None:
        return 0
    if not (args.checkpoint / "config.json").is_file():
        sys.exit(f"error: no checkpoint at {args.checkpoint} (train one, or pass --checkpoint FOLDER)")
    phases: list[Phase] = []
    with tempfile.TemporaryDirectory(prefix="speakerdemo-bench-") as tmp:
        folder = Path(tmp)
        clips = write_clips(corpus, folder, args.seconds)
        for backend in args.backends:  # one app after the other: side by side in one run
            port = free_port()
            url = f"http://127.0.0.1:{port}/"
            log_path = folder / f"app-{backend}.log"
            with open(log_path, "w") as log:
                app = start_app(args.checkpoint, port, log, backend)
                try:
                    common.note(
                        f"app.py --backend {backend} answered after {wait_ready(url, app, log_path):.1f} s; "
                        f"{args.seconds:g}-s clips, {args.requests} requests per client, budget {args.budget:g} s"
                    )
                    measured = measure(url, clips, args.clients, args.requests, args.budget, folder)
                finally:
                    stop_app(app)
            phases += [Phase(p.api, p.clients, backend, p.latencies, p.errors, p.wall) for p in measured]
    common.print_table(
        ["backend", "endpoint", "clients", "requests", "failed", "p50 ms", "p95 ms", "requests/s"],
        [
            [
                p.backend,
                p.api,
                p.clients,
                len(p.latencies),
                len(p.errors),
                common.fmt(_ms(p.percentile(50)), 0),
                common.fmt(_ms(p.percentile(95)), 0),
                common.fmt(len(p.latencies) / p.wall if p.wall else None, 2),
            ]
            for p in phases
        ],
    )
    for p in phases:
        for error in sorted(set(p.errors))[:3]:
            common.note(f"{p.api} x{p.clients} failed: {error}")
    for single in (p for p in phases if p.api == "verify" and p.clients == 1):
        common.note(
            f"--backend {single.backend}: verify p50 at 1 client: {common.fmt(_ms(single.percentile(50)), 0)} ms "
            "(target <= 300 ms on 2 cores)"
        )
    fewest = {(p.backend, p.api): p.percentile(50) for p in phases if p.clients == min(args.clients)}
    print(f"\np50 relative to {min(args.clients)} client(s) (how latency grows with load):")
    common.print_table(
        ["backend", "endpoint", "clients", "p50 ratio"],
        [
            [p.backend, p.api, p.clients, common.ratio(p.percentile(50), fewest.get((p.backend, p.api)))]
            for p in phases
            if p.api != "enroll"
        ],
    )
    first = args.backends[0]
    if len(args.backends) > 1:
        print(f"\np50 relative to --backend {first} (same endpoint and clients):")
        base = {(p.api, p.clients): p.percentile(50) for p in phases if p.backend == first}
        common.print_table(
            ["backend", "endpoint", "clients", "p50 ratio"],
            [
                [p.backend, p.api, p.clients, common.ratio(p.percentile(50), base.get((p.api, p.clients)))]
                for p in phases
                if p.backend != first
            ],
        )
    return 1 if any(p.errors for p in phases) else 0


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else 1000 * seconds


if __name__ == "__main__":
    sys.exit(main())
