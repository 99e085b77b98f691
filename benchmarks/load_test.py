"""Load test of the running demo: many concurrent sessions for a while, through gradio_client.

Starts ``app.py --model CKPT`` on a free loopback port (as ``app_latency`` does: own process
group, stopped at the end whatever happens), waits until it answers and warms it up, then runs
``--clients`` clients for ``--seconds``, each in its own thread with its own Gradio session:

* each client first enrolls a speaker under a name no other client uses, then loops over verify
  (two clips), identify (one clip), enroll (another clip of its speaker) and, with probability
  ``--bad-fraction``, a deliberately bad request (a text file named .wav, a silent clip);
* every enroll result must list that client's speaker alone, and no identify result may name
  another client's speaker (sessions must not see each other's galleries);
* a bad request must be refused with the app's message; any other failure counts as failed;
* one upload over the app's size limit (``MAX_UPLOAD_MB``) must be refused, quickly.

Before the clock starts every client connects and sends one enroll, verify and identify
(checked, not timed), so that the app's thread pool, caches and allocator arenas are warm. The
app's resident memory (VmRSS of /proc/PID/status) is sampled every half second; the figures are
before the warm-up, at the start of the measured run, half-way, at the end and the maximum. Under
full concurrency RSS first rises (requests queued with their uploads, one malloc arena per busy
thread) and then levels off; "flat" means that the second half of the run grew it by at most
``--rss-slack-mb``, which a leak (memory per request or per session) would exceed. Latency is the wall
time of ``Client.predict``: upload, queueing behind other clients (the app runs
``QUEUE_CONCURRENCY`` requests at a time), work and download.

Exit status 1 when a request failed, sessions leaked, the oversize upload got through, or the
memory was not flat. Real speech comes from ``../shared/data/librispeech-251`` when present,
else from synthetic voiced clips (``--checkpoint`` without a trained model writes an untrained
one, so the run still exercises the whole app).
"""

from __future__ import annotations

import json
import random
import re
import signal
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from benchmarks import common
from benchmarks.app_latency import connect, free_port, start_app, stop_app, wait_ready
from speakerdemo.audio import SAMPLE_RATE

NAME = "load_test"
REQUEST_TIMEOUT = 300.0
DRAIN_TIMEOUT = 300.0  # after the deadline, in-flight requests get this long to finish
WARM_UP_TIMEOUT = 600.0  # for every client to connect and send its three warm-up requests
BAD_WORDS = {"not_audio": "Could not read", "silent": "silent"}


@dataclass
class Stats:
    """Everything the clients record, under one lock."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    refused_as_expected: int = 0
    leaks: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ok(self, api: str, seconds: float) -> None:
        with self.lock:
            self.latencies.setdefault(api, []).append(seconds)

    def fail(self, what: str) -> None:
        with self.lock:
            self.failures.append(what[:300])

    def leak(self, what: str) -> None:
        with self.lock:
            self.leaks.append(what[:300])

    @property
    def sent(self) -> int:
        return sum(map(len, self.latencies.values())) + len(self.failures) + self.refused_as_expected


@dataclass
class LoadResult:
    clients: int
    seconds: float
    stats: Stats
    rss_mb: dict[str, float]
    rss_samples: list[tuple[float, float]]
    oversize: str
    wall: float

    @property
    def all_latencies(self) -> list[float]:
        return [x for v in self.stats.latencies.values() for x in v]

    def percentile(self, q: float, api: str | None = None) -> float | None:
        values = self.stats.latencies.get(api, []) if api else self.all_latencies
        return float(np.percentile(values, q)) if values else None

    @property
    def growth_mb(self) -> float:
        """RSS growth over the whole measured run (warm-up excluded)."""
        return self.rss_mb["end"] - self.rss_mb["start"]

    @property
    def late_growth_mb(self) -> float:
        """RSS growth over the second half of the run, once queue, pools and arenas are full."""
        return self.rss_mb["end"] - self.rss_mb["half"]


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MiB, from /proc/PID/status (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def write_clips(folder: Path, data_root: Path, seconds: float, count: int = 6) -> tuple[list[str], dict[str, str]]:
    """Good clips (real speech when the corpus is there) and the deliberately bad ones."""
    corpus = data_root / "librispeech-251"
    if (corpus / "utterances.csv").is_file():
        signals = common.speech_clips(corpus, seconds, count)
        common.note(f"clips: {count} x {seconds:g} s of real speech from {corpus.name}")
    else:
        signals = [common.voiced(seconds, f0=100 + 25 * i, seed=i) for i in range(count)]
        common.note(f"clips: {count} x {seconds:g} s of synthetic voiced signal ({corpus} not found)")
    good = []
    for i, wav in enumerate(signals):
        path = folder / f"clip{i}.wav"
        sf.write(path, wav, SAMPLE_RATE, subtype="PCM_16")
        good.append(str(path))
    bad = {"not_audio": folder / "notes.wav", "silent": folder / "silent.wav"}
    bad["not_audio"].write_text("a shopping list, not a recording\n" * 40)
    sf.write(bad["silent"], np.zeros(2 * SAMPLE_RATE, np.float32), SAMPLE_RATE, subtype="PCM_16")
    return good, {k: str(v) for k, v in bad.items()}


def untrained_checkpoint(folder: Path, channels: int = 256) -> Path:
    """An untrained ECAPA-TDNN: enough to exercise the whole app under load (scores mean nothing)."""
    import torch

    from speakerdemo.encoder import SpeakerEncoder

    torch.manual_seed(0)
    path = folder / "untrained"
    SpeakerEncoder(encoder={"name": "ecapa_tdnn", "channels": channels}).save_pretrained(path)
    return path


def _error_text(err: Exception) -> str:
    return f"{type(err).__name__}: {err}"


def client_loop(
    index: int,
    url: str,
    good: list[str],
    bad: dict[str, str],
    names: list[str],
    holder: dict,
    stats: Stats,
    bad_fraction: float,
    downloads: Path,
    start: threading.Barrier,
) -> None:
    """One session: enroll its own speaker, then mixed requests until ``holder["deadline"]``.

    Warm-up first: the client connects, enrolls its speaker, verifies and identifies once (checked
    like every request, but not timed), then waits at ``start`` for the others, so that the
    measured run starts with every session open and the app's thread pool and allocator warm.
    """
    from gradio_client import handle_file

    rng = random.Random(index)
    me = names[index]
    others = [n for n in names if n != me]
    own_clips = [good[index % len(good)], good[(index + 1) % len(good)]]
    enrolled = 0
    measuring = False
    try:
        client = connect(url, downloads, REQUEST_TIMEOUT)
    except Exception as err:  # noqa: BLE001 - a client that cannot connect is a failed request
        stats.fail(f"connect: {_error_text(err)}")
        start.abort()  # the run cannot have all its sessions: stop the others too
        return

    def leaked(api: str, result: Any) -> None:
        text = json.dumps(result, default=str)
        seen = [n for n in others if n in text]
        if seen:
            stats.leak(f"{me} {api} shows {seen}")

    def enroll() -> None:
        nonlocal enrolled
        t0 = time.perf_counter()
        # The "speaker" is a name over two clips of different voices: keep both (the cohesion check
        # would leave the odd one out; what is measured here is serving, not enrolment).
        clip = handle_file(rng.choice(own_clips))
        table, _map, message = client.predict(me, None, [clip], True, api_name="/enroll")
        if measuring:
            stats.ok("enroll", time.perf_counter() - t0)
        enrolled += 1
        rows = table.get("data") if isinstance(table, dict) else table
        if [list(r) for r in rows] != [[me, enrolled]]:
            stats.leak(f"{me} enroll table is {rows}")
        leaked("enroll", [table, _map, message])

    def verify() -> None:
        a, b = rng.sample(good, 2)
        t0 = time.perf_counter()
        result = client.predict(handle_file(a), handle_file(b), 0.5, api_name="/verify")
        if measuring:
            stats.ok("verify", time.perf_counter() - t0)
        if "cosine similarity" not in str(result[2]).lower():
            stats.fail(f"verify answered {str(result[2])[:100]!r}")

    def identify() -> None:
        t0 = time.perf_counter()
        result = client.predict(handle_file(rng.choice(good)), 0.5, 5, api_name="/identify")
        if measuring:
            stats.ok("identify", time.perf_counter() - t0)
        best = re.search(r"Best match \*\*(.+?)\*\*", str(result[0]))
        if best is None or best.group(1) != me:
            stats.leak(f"{me} identify answered {str(result[0])[:120]!r}")
        leaked("identify", result)

    def bad_request() -> None:
        from gradio_client.exceptions import AppError

        kind = rng.choice(sorted(bad))
        try:
            client.predict(handle_file(rng.choice(good)), handle_file(bad[kind]), 0.5, api_name="/verify")
        except AppError as err:
            if BAD_WORDS[kind] in str(err):
                with stats.lock:
                    stats.refused_as_expected += 1
                return
            stats.fail(f"bad input ({kind}) refused with another message: {err}")
            return
        stats.fail(f"bad input ({kind}) was accepted")

    try:
        for request in (enroll, verify, identify):  # warm-up
            try:
                request()
            except Exception as err:  # noqa: BLE001 - reported, the client goes on
                stats.fail(f"warm-up {request.__name__}: {_error_text(err)}")
        try:
            start.wait(timeout=WARM_UP_TIMEOUT)
        except threading.BrokenBarrierError:
            stats.fail(f"{me}: not every client was ready within {WARM_UP_TIMEOUT:g} s")
            return
        deadline = holder["deadline"]
        measuring = True
        while time.perf_counter() < deadline:
            r = rng.random()
            if r < bad_fraction:
                request = bad_request
            else:
                request = verify if r < 0.45 else identify if r < 0.85 else enroll
            try:
                request()
            except Exception as err:  # noqa: BLE001 - reported, the loop goes on
                stats.fail(f"{request.__name__}: {_error_text(err)}")
    finally:
        client.close()


def oversize_upload(url: str, folder: Path, downloads: Path, limit_mb: int) -> str:
    """Send a (sparse) file just over the app's upload limit, twice: through gradio_client, which
    checks the limit it reads from the app's config before sending, and as a raw multipart POST to
    the upload route, which the server itself must refuse (413) while streaming.

    Returns how both went; 'ACCEPTED' in the text means the limit did not hold.
    """
    import httpx
    from gradio_client import handle_file

    path = folder / "oversize.wav"
    with open(path, "wb") as f:  # a header, then a hole: no disk space, no decoding work to do
        f.write(wav_header((limit_mb + 1) * 2**20))
        f.truncate((limit_mb + 1) * 2**20)
    client = connect(url, downloads, REQUEST_TIMEOUT)
    t0 = time.perf_counter()
    try:
        client.predict(handle_file(str(path)), api_name="/inspect")
        by_client = "client: ACCEPTED"
    except Exception as err:  # noqa: BLE001 - the refusal is what we want
        by_client = f"client: refused in {time.perf_counter() - t0:.2f} s ({type(err).__name__})"
    finally:
        client.close()
    t0 = time.perf_counter()
    try:
        with open(path, "rb") as f:
            response = httpx.post(
                f"{url}gradio_api/upload", files={"files": ("oversize.wav", f, "audio/wav")}, timeout=REQUEST_TIMEOUT
            )
        verdict = "ACCEPTED" if response.status_code == 200 else f"HTTP {response.status_code}"
    except httpx.HTTPError as err:
        verdict = f"connection closed ({type(err).__name__})"
    by_server = f"server: {verdict} in {time.perf_counter() - t0:.2f} s"
    return f"{by_client}; {by_server}"


def wav_header(total_bytes: int, sample_rate: int = SAMPLE_RATE) -> bytes:
    """A 16-bit mono PCM WAV header whose data chunk fills a file of ``total_bytes`` (the tests'
    oversized uploads use it too)."""
    import struct

    data = total_bytes - 44
    return (
        b"RIFF"
        + struct.pack("<I", total_bytes - 8)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", data)
    )


def run(
    checkpoint: Path,
    clients: int,
    seconds: float,
    folder: Path,
    data_root: Path,
    bad_fraction: float = 0.1,
    clip_seconds: float = 3.0,
) -> LoadResult:
    """Start the app, load it, stop it; the figures of the run."""
    from speakerdemo.ui import MAX_UPLOAD_MB

    good, bad = write_clips(folder, data_root, clip_seconds)
    downloads = folder / "downloads"
    downloads.mkdir(exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    log_path = folder / "app.log"
    samples: list[tuple[float, float]] = []
    with open(log_path, "w") as log:
        app = start_app(checkpoint, port, log)
        try:
            common.note(f"app.py (pid {app.pid}) answered after {wait_ready(url, app, log_path):.1f} s")
            rss = {"before warm-up": rss_mb(app.pid)}
            oversize = oversize_upload(url, folder, downloads, MAX_UPLOAD_MB)
            names = [f"client{i:02d}-{uuid.uuid4().hex[:8]}" for i in range(clients)]
            stats = Stats()
            holder: dict[str, float] = {}
            # The clock starts when the last client has warmed up (the barrier's action).
            barrier = threading.Barrier(
                clients, action=lambda: holder.update(deadline=time.perf_counter() + seconds, rss_start=rss_mb(app.pid))
            )
            threads = [
                threading.Thread(
                    target=client_loop,
                    daemon=True,
                    args=(i, url, good, bad, names, holder, stats, bad_fraction, downloads, barrier),
                )
                for i in range(clients)
            ]
            for t in threads:
                t.start()
            while "deadline" not in holder and any(t.is_alive() for t in threads):
                time.sleep(0.05)
            t0 = holder.get("deadline", time.perf_counter() + seconds) - seconds
            rss["start"] = holder.get("rss_start", rss_mb(app.pid))
            half = None
            while any(t.is_alive() for t in threads):
                now = time.perf_counter() - t0
                samples.append((now, rss_mb(app.pid)))
                if half is None and now >= seconds / 2:
                    half = samples[-1][1]
                if now > seconds + DRAIN_TIMEOUT:
                    stats.fail(
                        f"{sum(t.is_alive() for t in threads)} client(s) still busy {DRAIN_TIMEOUT:g} s "
                        "after the deadline"
                    )
                    break
                time.sleep(0.5)
            wall = time.perf_counter() - t0
            rss["half"] = half if half is not None else samples[-1][1]
            rss["end"] = rss_mb(app.pid)
            rss["max"] = max(v for _, v in samples)
            if app.poll() is not None:
                stats.fail(f"app.py exited with {app.returncode}")
        finally:
            stop_app(app)
    return LoadResult(clients, seconds, stats, rss, samples, oversize, wall)


def print_result(result: LoadResult) -> None:
    s = result.stats
    rows = [
        [api, len(v), common.fmt(1000 * np.percentile(v, 50), 0), common.fmt(1000 * np.percentile(v, 95), 0)]
        for api, v in sorted(s.latencies.items())
    ]
    rows.append(
        [
            "all",
            len(result.all_latencies),
            common.fmt(_ms(result.percentile(50)), 0),
            common.fmt(_ms(result.percentile(95)), 0),
        ]
    )
    common.print_table(["endpoint", "requests ok", "p50 ms", "p95 ms"], rows)
    print()
    common.print_table(
        ["figure", "value"],
        [
            ["clients x seconds", f"{result.clients} x {result.seconds:g} (wall {result.wall:.1f} s)"],
            ["requests sent (measured run)", s.sent],
            ["warm-up requests (checked, not timed)", 3 * result.clients],
            ["requests failed", len(s.failures)],
            ["bad inputs refused as expected", s.refused_as_expected],
            ["session leaks", len(s.leaks)],
            ["throughput (requests/s)", common.fmt(s.sent / result.wall if result.wall else None, 2)],
            [
                "p50 / p95 ms (all)",
                f"{common.fmt(_ms(result.percentile(50)), 0)} / {common.fmt(_ms(result.percentile(95)), 0)}",
            ],
            ["app RSS MiB before warm-up", common.fmt(result.rss_mb["before warm-up"], 1)],
            ["app RSS MiB at start (all clients warmed up)", common.fmt(result.rss_mb["start"], 1)],
            ["app RSS MiB half-way", common.fmt(result.rss_mb["half"], 1)],
            ["app RSS MiB at end", common.fmt(result.rss_mb["end"], 1)],
            ["app RSS MiB max", common.fmt(result.rss_mb["max"], 1)],
            ["oversize upload", result.oversize],
        ],
    )
    if result.rss_samples:
        step = max(1, len(result.rss_samples) // 12)
        timeline = ", ".join(f"{t:.0f}s {v:.0f}" for t, v in result.rss_samples[::step])
        common.note(f"app RSS MiB over the run: {timeline}, end {result.rss_mb['end']:.0f}")
    for failure in sorted(set(s.failures))[:5]:
        common.note(f"failed: {failure}")
    for leak in sorted(set(s.leaks))[:5]:
        common.note(f"LEAK: {leak}")


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else 1000 * seconds


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(
        __doc__, checkpoint="checkpoint folder (an untrained one is written when it does not exist)"
    )
    parser.add_argument("--clients", type=int, default=32, help="concurrent sessions")
    parser.add_argument("--seconds", type=float, default=120.0, help="length of the measured run")
    parser.add_argument("--bad-fraction", type=float, default=0.1, help="share of deliberately bad requests")
    parser.add_argument("--clip-seconds", type=float, default=3.0, help="length of the clips sent")
    parser.add_argument("--rss-slack-mb", type=float, default=64.0, help="largest flat RSS growth in the second half")
    args = parser.parse_args(argv)
    if args.quick:
        args.clients, args.seconds = 2, 5.0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(f"{NAME}: terminated"))  # so `finally` stops the app
    common.print_header(NAME, f"checkpoint: {args.checkpoint}")
    with tempfile.TemporaryDirectory(prefix="speakerdemo-load-") as tmp:
        folder = Path(tmp)
        checkpoint = args.checkpoint
        if not (checkpoint / "config.json").is_file():
            channels = 32 if args.quick else 256
            checkpoint = untrained_checkpoint(folder, channels)
            common.note(
                f"no checkpoint at {args.checkpoint}: using an untrained ECAPA-TDNN {channels} (scores mean nothing)"
            )
        common.note(f"{args.clients} clients for {args.seconds:g} s, {100 * args.bad_fraction:.0f} % bad requests")
        result = run(checkpoint, args.clients, args.seconds, folder, args.data, args.bad_fraction, args.clip_seconds)
    print_result(result)
    flat = result.late_growth_mb <= args.rss_slack_mb or args.quick  # a 5-s run says nothing about memory
    common.note(
        f"memory {'flat' if flat else 'NOT flat'}: {result.late_growth_mb:+.1f} MiB over the second half of the "
        f"run (slack {args.rss_slack_mb:g} MiB); {result.growth_mb:+.1f} MiB over the whole measured run"
    )
    problems = result.stats.failures or result.stats.leaks or "ACCEPTED" in result.oversize or not flat
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
