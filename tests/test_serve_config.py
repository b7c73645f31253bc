"""`serve run serve_config.yaml` (the README's command) starts the service, seeds the demo
users and separates with the shipped checkpoints. Only the port and the data folder differ
from the file as shipped, so that the test cannot collide with anything running."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
import yaml

from service_fixture import free_port, wav_bytes

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]


def test_serve_run_config(tmp_path):
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    port = free_port()
    config["http_options"]["port"] = port
    path = tmp_path / "serve_config.yaml"
    path.write_text(yaml.safe_dump(config))
    env = dict(os.environ, LOCOSERVE_DATA_DIR=str(tmp_path / "data"), RAY_TMPDIR=tempfile.mkdtemp(prefix="ray"))
    serve = Path(sys.executable).with_name("serve")
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen([str(serve), "run", str(path)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline, healthy = time.monotonic() + 240, False
        while time.monotonic() < deadline and proc.poll() is None and not healthy:
            try:
                healthy = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
            except httpx.HTTPError:
                pass
            if not healthy:
                time.sleep(1)
        assert healthy, (tmp_path / "serve.log").read_text()[-3000:]
        keys = json.loads((tmp_path / "data" / "demo-keys.json").read_text())
        assert set(keys) == {"free", "pro", "vip"}
        r = httpx.post(f"http://127.0.0.1:{port}/api/audio/separate", headers={"Authorization": f"Bearer {keys['free']}"},
                       files={"audio": ("a.wav", wav_bytes(2.0), "audio/wav")}, timeout=120)
        assert r.status_code == 200, r.text
        job = r.json()
        assert job["device"] == "cpu" and "random_weights" not in job  # the shipped checkpoints
        assert (tmp_path / "data" / "locoserve.db").exists()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # serve run started Ray itself: this stops all of it
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
