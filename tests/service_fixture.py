"""A real local Ray with the real Serve application, started by the tests and torn down after.

The engines are the real CPU-size networks with random weights (no trained checkpoint is
needed to test the service), each replica on half a CPU so that two applications fit on a
2-core machine: `main` (debug allowed, demo users, Stripe secret) and `strict` (debug not
allowed, a 1 MiB upload cap).
"""

from __future__ import annotations

import io
import json
import random
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf

STRIPE_SECRET = "whsec_integration"
CORS_ORIGIN = "https://app.example"


# Ray's workers take 10002-19999 and every Ray process binds or connects from the kernel's
# ephemeral range, so a port the kernel hands out (bind to 0) can be taken again by Ray
# between this check and the proxy's bind (CI saw 'Failed to bind to address' once). Ports
# above the workers' and below the ephemeral range are left to the tests.
TEST_PORTS = range(20000, 32768)


def _ephemeral_ports() -> range:
    try:
        lo, hi = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return range(lo, hi + 1)
    except (OSError, ValueError):
        return range(32768, 61000)


def free_port() -> int:
    ephemeral = _ephemeral_ports()
    candidates = [p for p in TEST_PORTS if p not in ephemeral]
    for port in random.sample(candidates, min(200, len(candidates))):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # a machine whose ephemeral range covers ours: the kernel's pick
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wav_bytes(seconds: float, sr: int = 44100, seed: int = 0, fmt: str = "WAV", channels: int = 2) -> bytes:
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    x = np.stack([0.2 * np.sin(2 * np.pi * (220 + 110 * c) * t) + 0.05 * rng.standard_normal(n)
                  for c in range(channels)], axis=1).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, x, sr, format=fmt, subtype="PCM_16" if fmt == "WAV" else None)
    return buf.getvalue()


@dataclass
class Service:
    url: str
    data_dir: Path
    db_url: str
    keys: dict

    def client(self, key: str | None = None, prefix: str = "") -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url + prefix, headers=headers, timeout=120)

    def submit(self, key: str, seconds: float = 2.0, task: str = "separate", prefix: str = "", data=None,
               headers: dict | None = None, filename: str = "in.wav", **fields) -> httpx.Response:
        files = {"audio": (filename, data if data is not None else wav_bytes(seconds), "audio/wav")}
        form = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in fields.items()}
        with self.client(key, prefix) as c:
            return c.post(f"/api/audio/{task}", files=files, data=form, headers=headers or {})

    def wait_done(self, key: str, job_id: str, prefix: str = "", timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        with self.client(key, prefix) as c:
            while time.monotonic() < deadline:
                job = c.get(f"/api/jobs/{job_id}").json()
                if job["status"] not in ("queued", "running"):
                    return job
                time.sleep(0.2)
        raise TimeoutError(job_id)


def start_service() -> tuple[Service, callable]:
    import ray
    from ray import serve

    from serve_app.app import build_app

    root = Path(tempfile.mkdtemp(prefix="locoserve-it-"))
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             _temp_dir=tempfile.mkdtemp(prefix="ray"))
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    common = dict(random_weights=True, two_stem_cpus=0.5, five_stem_cpus=0.5, housekeeping_s=1.0,
                  chunk_seconds=18.0, overlap_seconds=1.75)
    main = dict(common, data_dir=str(root / "main"), database_url=f"sqlite:///{root / 'main' / 'db.sqlite'}",
                allow_debug=True, seed_demo_users=True, stripe_webhook_secrets=[STRIPE_SECRET],
                # receivers and audio URLs on 127.0.0.1; webhooks retried fast
                webhook_allow_private=True, webhook_first_retry_s=0.5, url_allow_private=True,
                cors_origins=[CORS_ORIGIN])
    strict = dict(common, data_dir=str(root / "strict"),
                  database_url=f"sqlite:///{root / 'strict' / 'db.sqlite'}",
                  allow_debug=False, seed_demo_users=True, max_upload_mb=1.0, results_ttl_s=2)
    serve.run(build_app(main), name="main", route_prefix="/")
    serve.run(build_app(strict), name="strict", route_prefix="/strict")
    keys = json.loads((root / "main" / "demo-keys.json").read_text())
    keys["strict"] = json.loads((root / "strict" / "demo-keys.json").read_text())
    service = Service(f"http://127.0.0.1:{port}", root / "main", main["database_url"], keys)

    def stop():
        ray.shutdown()

    return service, stop


def open_slow_upload(port: int, key: str):
    """A multipart upload that declares 100 kB and has sent only its headers so far."""
    boundary = "slowslowslow"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"audio\"; filename=\"x.wav\"\r\n"
            "Content-Type: audio/wav\r\n\r\n").encode()
    request = (f"POST /api/audio/separate HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
               f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: 100000\r\n\r\n").encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.sendall(request + head)
    return s


def status_of(sock) -> int:
    try:
        line = sock.recv(4096).split(b"\r\n", 1)[0]
        return int(line.split()[1])
    except (OSError, IndexError, ValueError):
        return 0
