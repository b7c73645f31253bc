"""The Ingress under faults and load, against the real application on a real local Ray
(issue 14, points 4 and 5).

An Ingress crash cannot answer the clients it was talking to (the proxy says a plain 500),
so what must hold is that nothing is lost with it: the jobs run on (their inputs lie in the
data folder, not in the dead process), and a client that retries with the same
Idempotency-Key gets the job it was charged for, never a second one. And large uploads
must not grow the Ingress by their size: they are spooled to disk and decoded from there.
"""

from __future__ import annotations

import os
import threading
import time

import httpx
import pytest

from ray_app import SETTLE_S, all_settled_once, new_key, ray_app, records, replica_actor, used, wait_for
from service_fixture import wav_bytes

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def app():
    yield from ray_app("ingress")


@pytest.fixture(scope="module")
def db(app):
    from entitlements import make_engine
    return make_engine(app[0].db_url)


def post(svc, key, data, idempotency_key, wait_s=50):
    """A waiting submission; a transport error is an answer too (the caller's connection broke)."""
    try:
        return svc.submit(key, data=data, stems=2, headers={"Idempotency-Key": idempotency_key,
                                                            "Prefer": f"wait={wait_s}"})
    except httpx.HTTPError as e:
        return e


def newest_job(svc, key):
    with svc.client(key) as c:
        jobs = c.get("/api/jobs").json()["jobs"]
    return jobs[0] if jobs else None


def test_an_ingress_crash_loses_no_job_and_a_retry_with_the_same_key_finds_it(app, db):
    import ray

    svc, _ = app
    key = new_key(db)
    # the running job: ~7 s of work (more on a loaded machine); the queued one waits for the
    # one TwoStem slot behind it
    requests = {"running": (wav_bytes(60.0, seed=1), "crash-running"), "queued": (wav_bytes(1.0, seed=2), "crash-queued")}
    answers, clients, ids = {}, {}, {}
    for name, (data, idem) in requests.items():
        clients[name] = threading.Thread(target=lambda n=name, d=data, i=idem: answers.__setitem__(n, post(svc, key, d, i)))
        clients[name].start()
        job = wait_for(lambda: (j := newest_job(svc, key)) and j["job_id"] not in ids.values() and j, 60)
        ids[name] = job["job_id"]
        if name == "running":
            wait_for(lambda: records(db, [ids["running"]])[0][0].progress > 0, 120)
    assert [j.status for j, _ in records(db, [ids["running"], ids["queued"]])] == ["running", "queued"]
    ray.kill(replica_actor("Ingress"), no_restart=True)
    killed = time.monotonic()
    for client in clients.values():
        client.join(SETTLE_S)
    # the dead Ingress could not answer: the proxy's 5xx or a broken connection, no job id
    for name, r in answers.items():
        assert isinstance(r, httpx.HTTPError) or r.status_code >= 500, (name, r.status_code, r.text)

    # the jobs go on without the Ingress: each ends within a minute, whoever answers its client
    ordered = [ids["running"], ids["queued"]]
    wait_for(lambda: all(j.status not in ("queued", "running") for j, _ in records(db, ordered)), SETTLE_S)
    assert time.monotonic() - killed < SETTLE_S

    # the remedy: the same request again, with the same Idempotency-Key, once Serve has a new
    # Ingress replica (until then the retry is itself a 5xx or a broken connection)
    def retried(name):
        r = post(svc, key, *requests[name], wait_s=0)
        return not isinstance(r, httpx.HTTPError) and r.status_code < 500 and r

    for name in requests:
        r = wait_for(lambda: retried(name), SETTLE_S, every=1.0)
        assert r.status_code == 200, r.text
        assert (r.json()["job_id"], r.json()["status"]) == (ids[name], "done"), (name, r.json())
        assert r.headers["Idempotent-Replayed"] == "true"

    rows = all_settled_once(svc, db, key, ordered)
    # the running job was finished by its own run; the queued one ran from its stored input
    # (it was failed as "the model replica failed" when its audio lived in the dead Ingress)
    assert [(j.status, j.attempts) for j, _ in rows] == [("done", None), ("done", None)], \
        [(j.status, j.attempts, j.error) for j, _ in rows]
    assert used(svc, key) == 2  # two jobs, two charges: the retries charged nothing
    assert not list((svc.data_dir / "inputs").iterdir())



UPLOADS, UPLOAD_SECONDS = 4, 850.0  # 16-bit stereo at 44.1 kHz: 143 MiB each, under pro's 1,800 s
RATE = 10 * 2**20  # bytes/s each client sends (80 Mbit/s: a fast link; see the test's docstring)
RSS_GROWTH_MIB = 128  # the bound: less than one upload (read whole and decoded whole, they grew it by ~3 GiB)


def memory_mib(pid: int) -> tuple[float, float]:
    """(RSS, USS) of a process in MiB: USS is its own memory, RSS adds the shared pages it
    touched (Ray's object store among them, through which the proxy hands it the body)."""
    with open(f"/proc/{pid}/statm") as f:
        rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    with open(f"/proc/{pid}/smaps_rollup") as f:
        uss = sum(int(line.split()[1]) * 1024 for line in f if line.startswith(("Private_Clean", "Private_Dirty")))
    return rss / 2**20, uss / 2**20


def pid_of(actor) -> int:
    import ray
    return ray.get(actor.__ray_call__.remote(lambda self: os.getpid()), timeout=30)


def big_wav(path, seconds: float) -> int:
    """A valid 16-bit stereo WAV of quiet noise, written in blocks (never whole in this process)."""
    import numpy as np
    import soundfile as sf

    rng, left = np.random.default_rng(5), int(seconds * 44100)
    with sf.SoundFile(path, "w", 44100, 2, "PCM_16", format="WAV") as f:
        while left:
            n = min(left, 1 << 20)
            f.write(rng.integers(-2000, 2000, (n, 2), dtype=np.int16))
            left -= n
    return path.stat().st_size


class Paced:
    """A file as a client sends it at `rate` bytes/s (httpx reads it in blocks, never whole)."""

    def __init__(self, path, rate: float):
        self.f, self.rate, self.sent, self.t0 = open(path, "rb"), rate, 0, None

    def fileno(self):  # httpx sizes the multipart body (Content-Length) from it
        return self.f.fileno()

    def seek(self, *args):
        return self.f.seek(*args)

    def tell(self):
        return self.f.tell()

    def read(self, n=-1):
        self.t0 = self.t0 or time.monotonic()
        ahead = self.sent / self.rate - (time.monotonic() - self.t0)
        if ahead > 0:
            time.sleep(ahead)
        block = self.f.read(n if n and n > 0 else 1 << 16)
        self.sent += len(block)
        return block

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def test_large_parallel_uploads_leave_the_ingress_memory_bounded(app, db, tmp_path):
    """Issue 14, point 5: 4 parallel 190 MB uploads took the Ingress from 385 to 796 MiB, each
    read whole into memory and decoded whole. Spooled to disk as they are parsed and checked
    from there block by block, 4 parallel uploads of 143 MiB must grow it by less than
    RSS_GROWTH_MIB: not even one of them may be held whole.

    The clients send at 10 MiB/s each: Serve's proxy reads a body as fast as it comes and the
    replica pulls it into an unbounded queue, so a body arriving faster than the Ingress parses
    it waits in memory whatever the application does (unpaced from this loaded machine's
    loopback: +658 MiB RSS, of which +351 MiB its own; README, Under faults)."""
    svc, _ = app
    key = new_key(db)
    size = big_wav(tmp_path / "big.wav", UPLOAD_SECONDS)
    warm = svc.submit(key, seconds=1.0, stems=2)  # the whole submit path once: its imports, its pools
    assert warm.status_code == 200, warm.text
    pid = pid_of(replica_actor("Ingress"))
    (rss0, uss0), peak, stop = memory_mib(pid), [0.0, 0.0], threading.Event()

    def sample():
        while not stop.wait(0.05):
            peak[:] = map(max, peak, memory_mib(pid))

    sampler = threading.Thread(target=sample)
    sampler.start()
    answers = [None] * UPLOADS

    def upload(i):
        with Paced(tmp_path / "big.wav", RATE) as f:
            answers[i] = svc.submit(key, data=f, stems=2, wait=False, filename=f"big{i}.wav")

    started = time.monotonic()
    clients = [threading.Thread(target=upload, args=(i,)) for i in range(UPLOADS)]
    for c in clients:
        c.start()
    for c in clients:
        c.join(120)
    took = time.monotonic() - started
    stop.set()
    sampler.join()
    for r in answers:
        assert r is not None and r.status_code == 202, r and r.text
        assert r.json()["duration_s"] == pytest.approx(UPLOAD_SECONDS, abs=0.01)
    print(f"\nIngress RSS {rss0:.0f} MiB before, {peak[0]:.0f} at most (+{peak[0] - rss0:.0f}); USS {uss0:.0f}, "
          f"{peak[1]:.0f} (+{peak[1] - uss0:.0f}); {UPLOADS} uploads of {size / 2**20:.0f} MiB in {took:.1f} s")
    assert peak[0] - rss0 < RSS_GROWTH_MIB, f"the Ingress grew by {peak[0] - rss0:.0f} MiB"

    ids = [r.json()["job_id"] for r in answers]
    with svc.client(key) as c:  # 14 min of audio each, not run here: cancelled and refunded
        for job_id in ids:
            assert c.delete(f"/api/jobs/{job_id}").status_code in (200, 202)
    rows = wait_for(lambda: (rows := records(db, [warm.json()["job_id"], *ids]))
                    and all(j.status not in ("queued", "running") for j, _ in rows) and rows, SETTLE_S)
    assert [(j.status, e.status) for j, e in rows] == [("done", "committed")] + [("cancelled", "released")] * UPLOADS
    assert used(svc, key) == 1
    assert not list((svc.data_dir / "inputs").iterdir())  # no spool file or input is left behind
