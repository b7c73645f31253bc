"""End to end over HTTP against `serve.run` of the real application (real Ray, real SQLite,
real decoding, real CPU-size networks with random weights)."""

import io
import json
import shutil
import time
import zipfile

import numpy as np
import pytest
import soundfile as sf
from sqlmodel import Session, select

from service_fixture import CORS_ORIGIN, STRIPE_SECRET, start_service, wav_bytes

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def svc():
    service, stop = start_service()
    yield service
    stop()


@pytest.fixture(scope="module")
def db(svc):
    from entitlements import make_engine
    return make_engine(svc.db_url)


@pytest.fixture
def new_key(db):
    from entitlements.accounts import create_user
    count = iter(range(1000))

    def make(plan):
        return create_user(db, f"{plan}-{time.time_ns()}-{next(count)}@it", plan)[1]
    return make


def used(svc, key, capability="stem_split"):
    with svc.client(key) as c:
        return c.get("/api/me").json()["capabilities"][capability]["used"]


def events(db, status):
    from entitlements.schema import UsageEvent
    with Session(db) as s:
        return s.exec(select(UsageEvent).where(UsageEvent.status == status)).all()


def is_problem(r, status):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == status and body["type"].startswith("/problems/") and body["detail"]
    return body


def test_health_and_openapi(svc):
    with svc.client() as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        ready = c.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert {m["status"] for m in ready.json()["models"].values()} == {"HEALTHY"}
        spec = c.get("/api/openapi.json").json()
        assert "/api/audio/separate" in spec["paths"] and spec["openapi"].startswith("3.")
        assert {"/api/jobs", "/api/jobs/{job_id}/stems.zip", "/api/jobs/{job_id}/peaks",
                "/api/jobs/{job_id}/previews/{filename}"} <= set(spec["paths"])
        page = c.get("/")  # Locoserve Studio, with a policy that lets it load nothing from elsewhere
        assert page.status_code == 200 and "<title>Locoserve Studio</title>" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert c.get("/static/app.js").headers["content-type"].startswith("text/javascript")
        assert "description" in c.get("/problems/quota-exceeded").json()
        is_problem(c.get("/api/nothing-here"), 404)


def test_free_caller_gets_two_stems_on_cpu(svc):
    r = svc.submit(svc.keys["free"], seconds=3.0)
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["status"] == "done" and job["variant"] == "2stem" and job["device"] == "cpu"
    assert job["fallback"] is False  # cpu_only: CPU is the plan, not a fallback
    assert set(job["stems"]) == {"vocals", "instrumental"}
    assert job["random_weights"] is True and "random" in job["warning"]
    assert job["entitlement"]["limit"] == 10 and job["entitlement"]["source"] == "quota"
    assert r.headers["RateLimit-Policy"] == '"stem_split";q=10;w=86400'
    with svc.client(svc.keys["free"]) as c:
        audio = c.get(job["stems"]["vocals"])
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
    x, sr = sf.read(io.BytesIO(audio.content))
    assert sr == 44100 and x.shape == (3 * 44100, 2)


def test_lossy_stems_named_after_the_song(svc):
    key = svc.keys["pro"]
    job = svc.submit(key, seconds=2.0, stems=2, format="mp3", bitrate=192, filename="Mÿ Song: demo.wav").json()
    assert job["status"] == "done" and job["format"] == "mp3" and job["bitrate_kbps"] == 192
    assert job["source_name"] == "Mÿ Song_ demo"
    opus = svc.submit(key, seconds=1.5, stems=2, format="opus", filename="take 2.flac").json()
    assert opus["bitrate_kbps"] == 160  # the default
    with svc.client(key) as c:
        mp3 = c.get(job["stems"]["vocals"])
        ogg = c.get(opus["stems"]["instrumental"])
    assert mp3.headers["content-type"] == "audio/mpeg"
    # RFC 6266: an ASCII fallback for curl -OJ, and the UTF-8 name (RFC 5987) for browsers
    assert mp3.headers["content-disposition"] == (
        "attachment; filename=\"M_ Song_ demo-vocals.mp3\"; filename*=UTF-8''M%C3%BF%20Song_%20demo-vocals.mp3")
    x, sr = sf.read(io.BytesIO(mp3.content))
    assert sr == 44100 and x.shape == (2 * 44100, 2)
    assert 150 < len(mp3.content) * 8 / 2.0 / 1000 < 230
    assert ogg.headers["content-type"] == "audio/ogg"
    assert ogg.headers["content-disposition"].startswith('attachment; filename="take 2-instrumental.opus";')
    y, sr = sf.read(io.BytesIO(ogg.content))
    assert sr == 48000 and y.shape == (round(1.5 * 48000), 2)


def test_m4a_and_video_uploads(svc):
    from audio_fixtures import encode_av, music_like

    key = svc.keys["vip"]
    job = svc.submit(key, data=encode_av(music_like(2.0), 44100, "ipod", "aac"), filename="iPhone memo.m4a",
                     stems=2).json()
    assert job["status"] == "done" and abs(job["duration_s"] - 2.0) < 0.1 and job["source_name"] == "iPhone memo"
    before = used(svc, key)
    silent = encode_av(music_like(1.0), 44100, "mp4", None, video=True)
    assert is_problem(svc.submit(key, data=silent, filename="clip.mp4"), 422)["code"] == "no_audio_stream"
    m4a = encode_av(music_like(2.0), 44100, "ipod", "aac")
    assert is_problem(svc.submit(key, data=m4a[: len(m4a) // 2]), 422)["code"] == "truncated"
    assert used(svc, key) == before


def test_bad_bitrates_are_refused_and_cost_nothing(svc):
    key = svc.keys["vip"]
    before = used(svc, key)
    assert "lossless" in is_problem(svc.submit(key, format="wav", bitrate=320), 422)["detail"]
    assert "MPEG-1 Layer III" in is_problem(svc.submit(key, format="mp3", bitrate=100), 422)["detail"]
    assert used(svc, key) == before


def test_pro_caller_gets_five_stems_and_the_fallback_is_reported(svc):
    job = svc.submit(svc.keys["pro"], seconds=2.0).json()
    assert job["status"] == "done" and job["variant"] == "5stem"  # the plan's default
    assert set(job["stems"]) == {"vocals", "drums", "bass", "instruments", "fx"}
    assert job["device"] == "cpu" and job["fallback"] is True
    assert "CUDA" in job["fallback_reason"]
    two = svc.submit(svc.keys["pro"], seconds=1.0, stems=2).json()
    assert two["variant"] == "2stem" and two["fallback"] is False


def test_free_caller_asking_for_five_stems_is_refused_and_not_charged(svc):
    before = used(svc, svc.keys["free"])
    body = is_problem(svc.submit(svc.keys["free"], stems=5), 403)
    assert body["type"] == "/problems/plan-limit" and "5stem" in body["detail"]
    assert used(svc, svc.keys["free"]) == before


def test_bad_or_missing_key(svc):
    is_problem(svc.submit("lsk_not-a-real-key"), 401)
    is_problem(svc.submit(None), 401)
    with svc.client("lsk_wrong") as c:
        is_problem(c.get("/api/me"), 401)


def test_corrupt_and_unsupported_uploads_cost_nothing(svc):
    key = svc.keys["vip"]
    before = used(svc, key)
    wav = wav_bytes(2.0)
    assert is_problem(svc.submit(key, data=wav[: len(wav) // 2]), 422)["code"] == "truncated"
    assert is_problem(svc.submit(key, data=b"this is not audio at all" * 100), 415)["code"] == "unsupported"
    assert is_problem(svc.submit(key, data=b""), 422)["code"] == "empty"
    is_problem(svc.submit(key, format="mp4"), 422)
    is_problem(svc.submit(key, stems=3), 422)
    with svc.client(key) as c:
        is_problem(c.post("/api/audio/separate", content=wav, headers={"content-type": "audio/wav"}), 415)
    assert used(svc, key) == before


def test_oversized_upload_gets_413(svc):
    key = svc.keys["strict"]["free"]
    r = svc.submit(key, prefix="/strict", data=wav_bytes(13.0))  # ~2.3 MB over a 1 MiB cap
    is_problem(r, 413)
    ok = svc.submit(key, prefix="/strict", seconds=1.0)
    assert ok.status_code == 200
    assert all(url.startswith("/strict/api/jobs/") for url in ok.json()["stems"].values())  # the app's prefix


def test_results_are_deleted_after_their_retention(svc):
    key = svc.keys["strict"]["pro"]
    job = svc.submit(key, prefix="/strict", seconds=1.0, stems=2).json()  # this app keeps results 2 s
    url = job["stems"]["vocals"]
    with svc.client(key) as c:
        assert c.get(url).status_code == 200
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and c.get(f"/strict/api/jobs/{job['job_id']}").json()["stems"]:
            time.sleep(0.5)
        later = c.get(f"/strict/api/jobs/{job['job_id']}").json()
        assert later["stems"] is None and later["results_deleted_at"] and later["status"] == "done"
        assert later["archive"] is later["peaks"] is later["previews"] is None and "archive_link" not in later
        for gone in (url, job["archive"], job["archive_link"], job["peaks"], job["previews"]["vocals"]):
            is_problem(c.get(gone), 404)


def test_debug_metadata_only_where_allowed(svc):
    job = svc.submit(svc.keys["vip"], seconds=1.0, stems=2, debug=True).json()
    meta = job["metadata"]
    assert meta["variant"] == "2stem" and meta["device"] == "cpu" and meta["random_weights"] is True
    assert meta["chunk_samples"] == 18 * 44100 and meta["weights_sha256"] == "random"
    assert meta["batch"]["size"] == 1 and meta["precision"] == "fp32"  # the CPU's defaults
    assert meta["shifts"] == 1  # music runs once: twice the time on the free tier's CPU is not free
    # FiveStem's network goes by its device (issue 11): on this CPU-only machine the cpu size
    five = svc.submit(svc.keys["vip"], seconds=1.0, stems=5, debug=True).json()["metadata"]
    assert (five["variant"], five["device"], five["size"], five["size_note"]) == ("5stem", "cpu", "cpu", None)
    assert five["checkpoint"] is None  # random weights in this service
    assert "metadata" not in svc.submit(svc.keys["vip"], seconds=1.0, stems=2).json()
    strict = svc.submit(svc.keys["strict"]["vip"], prefix="/strict", seconds=1.0, stems=2, debug=True).json()
    assert strict["status"] == "done" and "metadata" not in strict


def test_quota_exhausted_gives_429_with_retry_after(svc, db):
    from entitlements import authorize_and_consume
    from entitlements.schema import User
    with Session(db) as s:
        uid = s.exec(select(User).where(User.email == "free@demo.locoserve")).one().id
    while True:  # use up today's free quota directly in the database
        try:
            authorize_and_consume(db, "stem_split", user_id=uid)
        except Exception:
            break
    body = is_problem(r := svc.submit(svc.keys["free"]), 429)
    assert 0 < int(r.headers["Retry-After"]) <= 86400
    assert r.headers["RateLimit"].startswith('"stem_split";r=0;t=')
    assert body["limit"] == 10 and body["remaining"] == 0 and body["reset_at"].endswith("Z")


def test_usage_recorded_before_inference_and_refunded_when_our_model_fails(svc, db):
    key = svc.keys["vip"]
    results = svc.data_dir / "results"
    before = used(svc, key)
    shutil.move(results, results.with_name("results.moved"))
    results.write_text("not a folder: the job cannot write its stems")
    try:
        r = svc.submit(key, seconds=1.0, stems=2)
    finally:
        results.unlink()
        shutil.move(results.with_name("results.moved"), results)
    body = is_problem(r, 500)
    assert body["refunded"] is True and body["job"]["status"] == "failed"
    released = [e for e in events(db, "released") if e.release_reason and "Error" in e.release_reason]
    assert released, "the failed job's usage event was not released"
    assert used(svc, key) == before  # recorded, then refunded


def test_async_flow_progress_and_download(svc):
    key = svc.keys["pro"]
    r = svc.submit(key, seconds=4.0, stems=2, wait=False, format="flac")
    assert r.status_code == 202 and r.headers["Location"] == f"/api/jobs/{r.json()['job_id']}"
    job = svc.wait_done(key, r.json()["job_id"])
    assert job["status"] == "done" and job["progress"] == 1.0 and job["timings"]["run_s"] > 0
    with svc.client(key) as c:
        stem = c.get(job["stems"]["instrumental"])
        assert stem.headers["content-type"] == "audio/flac"
        assert sf.read(io.BytesIO(stem.content))[0].shape == (4 * 44100, 2)
        is_problem(c.get(f"/api/jobs/{job['job_id']}/stems/drums.flac"), 404)


def test_another_users_job_is_not_found(svc):
    job = svc.submit(svc.keys["pro"], seconds=1.0, stems=2).json()
    with svc.client(svc.keys["vip"]) as other:
        is_problem(other.get(f"/api/jobs/{job['job_id']}"), 404)
        is_problem(other.get(job["stems"]["vocals"]), 404)
        is_problem(other.delete(f"/api/jobs/{job['job_id']}"), 404)


def test_idempotent_retry_returns_the_same_job_once_charged(svc):
    key = svc.keys["vip"]
    before = used(svc, key)
    data = wav_bytes(1.0, seed=42)
    a = svc.submit(key, data=data, stems=2, headers={"Idempotency-Key": "retry-1"})
    b = svc.submit(key, data=data, stems=2, headers={"Idempotency-Key": "retry-1"})
    assert a.json()["job_id"] == b.json()["job_id"] and b.headers["Idempotent-Replayed"] == "true"
    assert used(svc, key) == before + 1
    is_problem(svc.submit(key, data=wav_bytes(1.0, seed=43), stems=2, headers={"Idempotency-Key": "retry-1"}), 422)


def started(svc, key, job_id):
    return svc.wait_done(key, job_id)["started_at"]


def test_pro_job_runs_before_queued_free_jobs(svc, new_key):
    vip, free = svc.keys["vip"], new_key("free")
    blocker = svc.submit(vip, seconds=40.0, stems=2, wait=False).json()["job_id"]  # occupies the 2-stem slot
    time.sleep(0.5)
    queued = [svc.submit(free, seconds=1.0, wait=False).json()["job_id"] for _ in range(4)]
    pro = svc.submit(svc.keys["pro"], seconds=1.0, stems=2, wait=False).json()["job_id"]
    with svc.client(svc.keys["pro"]) as c:
        assert c.get(f"/api/jobs/{pro}").json()["queue_position"] == 0
    order = sorted([(started(svc, free, j), "free") for j in queued] +
                   [(started(svc, svc.keys["pro"], pro), "pro")])
    assert started(svc, vip, blocker) < order[0][0]
    assert [who for _, who in order] == ["pro", "free", "free", "free", "free"]


def test_vip_runs_before_a_pro_backlog_on_the_five_stem_slot(svc):
    pro = svc.keys["pro"]
    blocker = svc.submit(pro, seconds=25.0, wait=False).json()["job_id"]
    time.sleep(0.5)
    backlog = [svc.submit(pro, seconds=1.0, wait=False).json()["job_id"] for _ in range(2)]
    vip = svc.submit(svc.keys["vip"], seconds=1.0, stems=5, wait=False).json()["job_id"]
    t_vip = started(svc, svc.keys["vip"], vip)
    assert all(t_vip < started(svc, pro, j) for j in backlog)
    assert started(svc, pro, blocker) < t_vip


def test_cancel_a_queued_job_refunds_it(svc, db):
    key = svc.keys["vip"]
    blocker = svc.submit(key, seconds=30.0, stems=2, wait=False).json()["job_id"]
    time.sleep(0.5)
    before = used(svc, key)
    queued = svc.submit(key, seconds=1.0, stems=2, wait=False).json()["job_id"]
    assert used(svc, key) == before + 1
    with svc.client(key) as c:
        r = c.delete(f"/api/jobs/{queued}")
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        is_problem(c.delete(f"/api/jobs/{queued}"), 409)
        running = c.delete(f"/api/jobs/{blocker}")  # a running job is cancelled explicitly
        assert running.json()["status"] == "cancelled"
    assert used(svc, key) == before - 1  # both refunded


def test_clean_and_enhance(svc):
    key = svc.keys["pro"]
    clean = svc.submit(key, seconds=3.0, task="clean").json()
    assert clean["status"] == "done" and set(clean["stems"]) == {"speech", "noise"}
    enhanced = svc.submit(key, seconds=6.0, task="enhance", debug=True).json()
    assert enhanced["status"] == "done"
    assert enhanced["metadata"]["shifts"] == 2  # the speech model's two half-hop passes, as served
    report = {s["name"]: s for s in enhanced["metadata"]["output"]["stems"]}["speech"]
    assert abs(report["loudness_lufs"] - (-16.0)) < 0.5 and report["true_peak_dbtp"] <= -1.0
    with svc.client(key) as c:
        x, _ = sf.read(io.BytesIO(c.get(enhanced["stems"]["speech"]).content))
    from models.loudness import LoudnessMeter
    meter = LoudnessMeter(44100, true_peak=True)
    meter.add(x.T)
    assert abs(meter.integrated + 16.0) < 0.5 and 20 * np.log10(meter.true_peak) <= -1.0
    is_problem(svc.submit(key, task="clean", stems=2), 422)


def test_me_and_webhooks(svc):
    from entitlements.stripe_webhooks import sign
    with svc.client(svc.keys["pro"]) as c:
        me = c.get("/api/me").json()
        assert me["plan"] == "pro" and me["priority"] == "normal" and "audio_enhance" in me["capabilities"]
        event = json.dumps({"id": "evt_it_1", "type": "invoice.paid", "created": 1, "data": {"object": {}}}).encode()
        ok = c.post("/api/webhooks/stripe", content=event, headers={"Stripe-Signature": sign(event, STRIPE_SECRET)})
        assert ok.status_code == 200 and ok.json()["outcome"].startswith("ignored")
        bad = c.post("/api/webhooks/stripe", content=event, headers={"Stripe-Signature": sign(event, "whsec_x")})
        is_problem(bad, 400)


def test_cli_submit_through_the_api(svc, tmp_path):
    import subprocess
    import sys

    from audio_fixtures import encode_av, music_like, write

    lib = tmp_path / "in"
    lib.mkdir()
    write(lib / "Ünï song.wav", music_like(1.5))
    (lib / "memo.m4a").write_bytes(encode_av(music_like(1.0), 44100, "ipod", "aac"))
    (lib / "zz-bad.wav").write_bytes(b"RIFF" + b"junk" * 100)

    def submit(*args):
        return subprocess.run([sys.executable, "-m", "serve_app.cli", "submit", "--server", svc.url, "--out",
                               tmp_path / "out", *map(str, args)], capture_output=True, text=True, timeout=300)

    before = used(svc, svc.keys["pro"])
    r = submit(lib, "--key", svc.keys["pro"], "--stems", "2", "--format", "mp3", "--bitrate", "192")
    assert r.returncode == 1, r.stderr  # one file failed
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("locoserve: ")]
    assert len(errors) == 1 and "zz-bad.wav: 415 Unusable audio: not a recognised audio file" in errors[0]
    assert "2 of 3 files separated" in r.stderr
    x, sr = sf.read(tmp_path / "out" / "Ünï song" / "vocals.mp3")
    assert sr == 44100 and x.shape == (round(1.5 * 44100), 2)
    assert sf.info(tmp_path / "out" / "memo" / "instrumental.mp3").duration == pytest.approx(1.0, abs=0.05)
    assert used(svc, svc.keys["pro"]) == before + 2  # the bad file cost nothing

    r = submit(lib, "--key", "lsk_wrong")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("locoserve: ")]
    assert len(errors) == 1 and "401" in errors[0]  # said once: the other files were not tried
    assert "0 of 3 files separated" in r.stderr

    r = submit(lib / "memo.m4a", "--key", svc.keys["pro"], "--server", "http://127.0.0.1:9")
    assert r.returncode == 1 and "cannot reach http://127.0.0.1:9" in r.stderr and "Traceback" not in r.stderr


def test_job_list_newest_first_paginated_and_owner_only(svc, new_key):
    key, other = new_key("pro"), new_key("pro")
    ids = [svc.submit(key, seconds=1.0, stems=2).json()["job_id"] for _ in range(3)]
    svc.submit(other, seconds=1.0, stems=2)
    with svc.client(key) as c:
        first = c.get("/api/jobs", params={"limit": 2}).json()
        assert [j["job_id"] for j in first["jobs"]] == ids[::-1][:2]
        assert first["next"] == f"/api/jobs?limit=2&cursor={first['next_cursor']}"
        listed = first["jobs"][0]  # described as GET /api/jobs/{id} describes it, signed links included
        assert listed["stems"] and listed["archive"] and listed["links"] and listed["archive_link"]
        second = c.get(first["next"]).json()
        assert [j["job_id"] for j in second["jobs"]] == ids[:1] and second["next_cursor"] is None
        everything = c.get("/api/jobs").json()
        assert [j["job_id"] for j in everything["jobs"]] == ids[::-1]  # not the other key's job
        for bad in ({"limit": 0}, {"limit": 101}, {"limit": "x"}, {"cursor": "not-a-cursor"}):
            is_problem(c.get("/api/jobs", params=bad), 422)
    with svc.client(other) as c:
        assert ids[0] not in {j["job_id"] for j in c.get("/api/jobs").json()["jobs"]}
    with svc.client() as c:
        is_problem(c.get("/api/jobs"), 401)


def test_previews_peaks_and_zip_of_a_result(svc):
    from models.preview import PEAK_BUCKETS

    key = svc.keys["pro"]
    job = svc.submit(key, seconds=2.0, stems=2, format="flac", filename="Zip me.wav").json()
    assert job["status"] == "done"
    with svc.client(key) as c:
        stems = {name: c.get(url).content for name, url in job["stems"].items()}
        peaks = c.get(job["peaks"]).json()
        assert peaks["buckets"] == PEAK_BUCKETS and set(peaks["stems"]) == set(stems)
        for name, data in stems.items():
            x, sr = sf.read(io.BytesIO(data), dtype="float32")
            p = peaks["stems"][name]
            assert (p["frames"], p["sample_rate"]) == (len(x), sr) and len(p["min"]) == len(p["max"]) == PEAK_BUCKETS
            # each (min, max) pair is the stem's own extremes over its slice, both channels
            edges = -(-np.arange(PEAK_BUCKETS + 1) * len(x) // PEAK_BUCKETS)  # slice b: frames i with i·B // n == b
            slices = [x[a:b] for a, b in zip(edges[:-1], edges[1:])]
            assert np.allclose(p["max"], [s.max() for s in slices], atol=2e-3)
            assert np.allclose(p["min"], [s.min() for s in slices], atol=2e-3)

            preview = c.get(job["previews"][name])
            assert preview.status_code == 200 and preview.headers["content-type"] == "audio/mpeg"
            y, psr = sf.read(io.BytesIO(preview.content))
            assert psr == 44100 and y.shape == x.shape  # gapless: the same length as the stem
            assert len(preview.content) < len(data) / 4
        archive = c.get(job["archive"])
        assert archive.headers["content-type"] == "application/zip"
        assert archive.headers["content-disposition"].startswith('attachment; filename="Zip me-stems.zip";')
        with zipfile.ZipFile(io.BytesIO(archive.content)) as z:
            assert z.testzip() is None
            assert {n: z.read(n) for n in z.namelist()} == {f"Zip me-{n}.flac": d for n, d in stems.items()}
        is_problem(c.get(f"/api/jobs/{job['job_id']}/previews/drums.mp3"), 404)
        is_problem(c.get(f"/api/jobs/{job['job_id']}/previews/vocals.wav"), 404)
    with svc.client(svc.keys["vip"]) as other:
        for url in (job["peaks"], job["archive"], job["previews"]["vocals"]):
            is_problem(other.get(url), 404)
    # the archive's signed link needs no key, and its token opens that archive only
    with svc.client() as anyone:
        linked = anyone.get(job["archive_link"])
        assert linked.status_code == 200 and linked.content == archive.content
        token = job["archive_link"].split("?token=")[1]
        another = svc.submit(key, seconds=1.0, stems=2).json()
        assert is_problem(anyone.get(f"{another['archive']}?token={token}"), 403)["type"] == "/problems/invalid-link"
        stem_token = job["links"]["vocals"].split("?token=")[1]
        is_problem(anyone.get(f"{job['archive']}?token={stem_token}"), 403)  # a stem's token is for that stem
        is_problem(anyone.get(job["archive"]), 401)


def test_a_wait_that_runs_out_answers_202_and_the_job_goes_on(svc, db, new_key):
    key = new_key("vip")
    t0 = time.monotonic()
    r = svc.submit(key, seconds=90.0, stems=2, wait=1)  # ~10 s of work, a 1 s wait
    assert r.status_code == 202, r.text
    assert time.monotonic() - t0 < 30  # the upload and its decoding, plus the second
    job_id = r.json()["job_id"]
    assert r.headers["Location"] == f"/api/jobs/{job_id}" and r.json()["status"] in ("queued", "running")
    assert svc.wait_done(key, job_id)["status"] == "done"  # not cancelled by the wait's end
    # Prefer (RFC 7240): a job that ends in time is answered whole, and the header says so
    r = svc.submit(key, seconds=1.0, stems=2, headers={"Prefer": "wait=100000"})
    assert r.status_code == 200 and r.json()["status"] == "done", r.text
    assert r.headers["Preference-Applied"] == "wait=50"  # capped by max_wait_s
    r = svc.submit(key, seconds=1.0, stems=2, headers={"Prefer": "respond-async"})
    assert r.status_code == 202 and r.headers["Preference-Applied"] == "wait=0"
    assert svc.wait_done(key, r.json()["job_id"])["status"] == "done"
    is_problem(svc.submit(key, seconds=1.0, stems=2, wait="soon"), 422)


def test_a_client_that_disconnects_does_not_cancel_its_job(svc, db):
    import httpx
    from entitlements.accounts import create_user
    from serve_app.jobs import Job

    user, key = create_user(db, f"leaver-{time.time_ns()}@it", "vip")
    files = {"audio": ("in.wav", wav_bytes(60.0), "audio/wav")}
    with httpx.Client(base_url=svc.url, headers={"Authorization": f"Bearer {key}"}, timeout=3.0) as c:
        with pytest.raises(httpx.ReadTimeout):  # the default wait, given up by the client
            c.post("/api/audio/separate", files=files, data={"stems": "2"})

    def job():
        with Session(db) as s:
            return s.exec(select(Job).where(Job.user_id == user.id)).first()
    deadline = time.monotonic() + 60
    while job() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    done = svc.wait_done(key, job().id)
    assert done["status"] == "done", done  # only DELETE cancels
    assert used(svc, key) == 1


def test_signed_stem_links_need_no_key_and_are_bound_and_short_lived(svc):
    import httpx
    from serve_app.links import LinkSigner

    key = svc.keys["pro"]
    job = svc.submit(key, seconds=1.0, stems=2).json()
    link = job["links"]["vocals"]
    assert link.startswith(job["stems"]["vocals"] + "?token=") and job["links_expire_at"].endswith("Z")
    with svc.client(key) as c:  # a status poll signs fresh links too
        assert set(c.get(f"/api/jobs/{job['job_id']}").json()["links"]) == {"vocals", "instrumental"}
    with httpx.Client(base_url=svc.url, timeout=60) as anonymous:
        stem = anonymous.get(link)
        assert stem.status_code == 200 and stem.headers["content-type"] == "audio/wav"
        assert sf.read(io.BytesIO(stem.content))[0].shape == (44100, 2)
        assert is_problem(anonymous.get(link.replace("/vocals.wav", "/instrumental.wav")), 403)["type"] == \
            "/problems/invalid-link"
        other = svc.submit(key, seconds=1.0, stems=2).json()
        is_problem(anonymous.get(link.replace(job["job_id"], other["job_id"])), 403)
        is_problem(anonymous.get(job["stems"]["vocals"]), 401)  # no token: the key is needed
        signer = LinkSigner((svc.data_dir / "link-secret").read_bytes(), 60)
        expired = signer.token(job["job_id"], "vocals.wav", int(time.time()) - 1)
        body = is_problem(anonymous.get(f"{job['stems']['vocals']}?token={expired}"), 403)
        assert "expired" in body["detail"]


def test_a_webhook_receives_the_signed_end_of_the_job_and_retries_show(svc, db, new_key):
    from test_webhooks_delivery import Receiver

    from serve_app.jobs import Job
    from serve_app.webhooks import secret_for, verify

    receiver = Receiver(codes=[500])  # the first attempt fails: retried 0.5 s later
    try:
        key = new_key("pro")
        job = svc.submit(key, seconds=1.0, stems=2, webhook=receiver.url).json()
        assert job["status"] == "done"
        with svc.client(key) as c:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                hook = c.get(f"/api/jobs/{job['job_id']}").json()["webhook"]
                if hook["deliveries"] and hook["deliveries"][0]["status"] != "pending":
                    break
                time.sleep(0.2)
        assert hook["url"] == receiver.url
        (delivery,) = hook["deliveries"]
        assert delivery["status"] == "delivered" and delivery["type"] == "job.done"
        assert [a["status_code"] for a in delivery["attempts"]] == [500, 200]
        headers, body, _ = receiver.got[-1]
        sent = json.loads(body)
        assert headers["Locoserve-Event-Id"] == sent["id"] == delivery["event_id"]
        assert sent["job"]["job_id"] == job["job_id"] and sent["job"]["status"] == "done"
        with Session(db) as s:
            user_id = s.get(Job, job["job_id"]).user_id
        assert verify(secret_for(db, user_id), body, headers["Locoserve-Signature"])
    finally:
        receiver.close()
    # where the config does not allow loopback receivers, one is refused before any charge
    strict = svc.keys["strict"]["pro"]
    with svc.client(strict, "/strict") as c:
        before = c.get("/api/me").json()["capabilities"]["stem_split"]["used"]
    body = is_problem(svc.submit(strict, prefix="/strict", seconds=1.0, stems=2, webhook=receiver.url), 422)
    assert body["code"] == "webhook_refused" and "https" in body["detail"]
    body = is_problem(svc.submit(strict, prefix="/strict", seconds=1.0, stems=2,
                                 webhook="https://169.254.169.254/latest"), 422)
    assert "not a public address" in body["detail"]
    with svc.client(strict, "/strict") as c:
        assert c.get("/api/me").json()["capabilities"]["stem_split"]["used"] == before


def test_audio_by_url_from_a_local_server(svc, new_key, tmp_path):
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    (tmp_path / "My Song.wav").write_bytes(wav_bytes(2.0))
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(SimpleHTTPRequestHandler,
                                                                     directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        key = new_key("pro")
        with svc.client(key) as c:
            r = c.post("/api/audio/separate", data={"audio_url": f"{base}/My%20Song.wav", "stems": "2"})
            assert r.status_code == 200, r.text
            job = r.json()
            assert job["status"] == "done" and job["source_name"] == "My Song" and job["duration_s"] == 2.0
            body = is_problem(c.post("/api/audio/separate", data={"audio_url": f"{base}/missing.wav"}), 422)
            assert body["code"] == "url_status" and "404" in body["detail"]
            both = c.post("/api/audio/separate", data={"audio_url": f"{base}/My%20Song.wav"},
                          files={"audio": ("x.wav", wav_bytes(1.0), "audio/wav")})
            assert "not both" in is_problem(both, 422)["detail"]
        assert used(svc, key) == 1  # only the job that ran
        # where the config does not allow private addresses, the loopback server is never asked
        strict = svc.keys["strict"]["pro"]
        with svc.client(strict, "/strict") as c:
            before = c.get("/api/me").json()["capabilities"]["stem_split"]["used"]
            for url in (f"{base}/My%20Song.wav", "https://169.254.169.254/latest/meta-data/audio.wav"):
                body = is_problem(c.post("/api/audio/separate", data={"audio_url": url}), 422)
                assert body["code"] == "url_refused", body
            assert c.get("/api/me").json()["capabilities"]["stem_split"]["used"] == before
    finally:
        server.shutdown()


def test_cors_only_for_the_configured_origins(svc):
    key = svc.keys["pro"]
    job = svc.submit(key, seconds=1.0, stems=2).json()
    with svc.client() as c:
        ask = {"Origin": CORS_ORIGIN, "Access-Control-Request-Method": "POST",
               "Access-Control-Request-Headers": "authorization, prefer"}
        pre = c.options("/api/audio/separate", headers=ask)
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == CORS_ORIGIN
        assert "prefer" in pre.headers["access-control-allow-headers"].lower()
        stem = c.get(job["links"]["vocals"], headers={"Origin": CORS_ORIGIN})  # an <audio> element elsewhere
        assert stem.status_code == 200 and stem.headers["access-control-allow-origin"] == CORS_ORIGIN
        other = c.get(job["links"]["vocals"], headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        assert c.options("/api/audio/separate", headers=ask | {"Origin": "https://evil.example"}).status_code == 400
    with svc.client(svc.keys["strict"]["pro"], "/strict") as c:  # no origins configured: no CORS at all
        assert "access-control-allow-origin" not in c.get("/api/me", headers={"Origin": CORS_ORIGIN}).headers
