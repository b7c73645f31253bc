"""Locoserve Studio (the page at `/`) in a real browser: Debian's headless Chromium, driven by
Playwright, against the real service (real Ray and Serve, as in test_service.py): a key, an
upload, the job followed to done, the stems played in sync, muted, soloed, sought and
downloaded, and a refusal (429) shown as the problem's title and detail.

Skips, saying so, only where Chromium is not installed (`.ci/run` installs it). The
screenshot goes to $STUDIO_SCREENSHOT (docs/studio.png was made so) or the test's tmp dir.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import time
import uuid
import zipfile
from pathlib import Path

import pytest

from service_fixture import start_service, wav_bytes

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# skipped before the service starts: without a browser there is nothing here to run
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install "
                                                          "chromium; .ci/run installs it)")]


@pytest.fixture(scope="module")
def svc():
    service, stop = start_service()
    yield service
    stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, svc):
    context = browser.new_context(viewport={"width": 1100, "height": 900}, accept_downloads=True)
    page = context.new_page()
    errors, elsewhere = [], []
    page.on("pageerror", lambda e: errors.append(str(e)))
    # the service may run air-gapped: the page must not even try to load anything from elsewhere.
    # The page's CSP blocks such a load before it becomes a request, and says so on the console.
    page.on("console", lambda m: m.type == "error" and "Content Security Policy" in m.text and errors.append(m.text))
    page.on("request", lambda r: r.url.startswith((svc.url + "/", "data:", "blob:")) or elsewhere.append(r.url))
    yield page
    context.close()
    assert not errors, f"the page raised: {errors}"
    assert not elsewhere, f"the page asked for outside resources: {elsewhere}"


def new_key(svc, plan: str) -> str:
    from entitlements import make_engine
    from entitlements.accounts import create_user

    return create_user(make_engine(svc.db_url), f"studio-{uuid.uuid4().hex[:8]}@it", plan)[1]


def enter_key(page, svc, key: str) -> None:
    page.goto(svc.url + "/")
    page.fill("#key", key)
    page.click("#key-form button[type=submit]")
    page.wait_for_selector(".quota")


def seconds(text: str) -> float:
    """The position a transport's "m:ss.s / m:ss.s" shows; a malformed clock fails."""
    shown = re.fullmatch(r"(\d+):([0-5]\d\.\d) / \d+:[0-5]\d\.\d", text)
    assert shown, f"the clock shows {text!r}"
    return int(shown[1]) * 60 + float(shown[2])


def painted_fraction(page, selector: str) -> float:
    """How much of a canvas is drawn on: 0 for a blank one."""
    return page.eval_on_selector(selector, """c => {
        const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
        return n / (c.width * c.height);
    }""")


def until(page, js: str, timeout: float = 30.0) -> None:
    """Wait until the arrow function `js` is truthy in the page. Polled from here: Playwright's
    wait_for_function compiles its predicate with eval inside the page, which the page's CSP
    (no 'unsafe-eval') refuses, as it should."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(js):
        if time.monotonic() > deadline:
            raise TimeoutError(js)
        time.sleep(0.05)


def studio(page, what: str, *args):
    return page.evaluate(f"([a]) => window.locoserveStudio.{what}(a)", list(args) or [None])


def test_split_listen_mix_and_download(svc, page, tmp_path):
    key = new_key(svc, "pro")
    song = tmp_path / "Studio song.wav"
    song.write_bytes(wav_bytes(4.0, seed=7))
    enter_key(page, svc, key)
    assert "Pro plan" in page.text_content("#account")
    assert "200 of 200 left" in page.text_content(".quota[data-capability=stem_split]")
    assert "30 min" in page.text_content("#limits")  # the plan's limit, before any upload

    page.select_option("#task", "separate:2")
    page.select_option("#format", "flac")
    page.set_input_files("#file", str(song))
    until(page, "() => !document.getElementById('submit').disabled")
    page.click("#submit")
    page.wait_for_selector("#job-status[data-status=done]", timeout=180_000)
    assert page.text_content("#upload-text") == "Uploaded"
    assert "Done on cpu" in page.text_content("#job-status")

    from entitlements import make_engine  # noqa: F401 (the job as the API gives it, to compare with)
    import httpx
    with httpx.Client(base_url=svc.url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as api:
        job = api.get("/api/jobs", params={"limit": 1}).json()["jobs"][0]
        assert job["status"] == "done" and job["source_name"] == "Studio song" and job["format"] == "flac"

        # one row per stem, each with a waveform drawn from the peaks
        rows = page.eval_on_selector_all(".stem", "rs => rs.map(r => r.dataset.stem)")
        assert sorted(rows) == sorted(job["stems"]) == ["instrumental", "vocals"]
        page.wait_for_selector(".stem[data-stem=vocals] canvas[data-drawn=true]")
        for name in rows:
            assert painted_fraction(page, f".stem[data-stem={name}] canvas") > 0.05, name
        # the account was read again after the job
        until(page, "() => document.querySelector('.quota[data-capability=stem_split]')"
                     ".textContent.includes('199 of 200')")

        # play: the transport's clock runs; pause: it stops
        page.wait_for_selector("#play:not([disabled])", timeout=60_000)
        assert page.text_content("#time").endswith("0:04.0")
        page.click("#play")
        # read from the press on: the sources start 50 ms after it, and the clock once showed
        # "-1:60.0" until they did; an audio device under load may start late, so no fixed sleep
        deadline = time.monotonic() + 15
        while (t1 := seconds(page.text_content("#time"))) <= 0.5:
            assert time.monotonic() < deadline, "the clock did not run"
            time.sleep(0.005)
        assert t1 < 4.0 and studio(page, "playing")
        page.click("#play")  # pause
        paused = studio(page, "time")
        time.sleep(0.5)
        assert studio(page, "time") == paused and not studio(page, "playing")

        # space plays and pauses (focus on the page, not on a control)
        page.click("h1")
        page.keyboard.press("Space")
        until(page, "() => window.locoserveStudio.playing()")
        page.keyboard.press("Space")
        until(page, "() => !window.locoserveStudio.playing()")

        # a click on a waveform seeks there
        box = page.locator(".stem[data-stem=instrumental] canvas").bounding_box()
        page.mouse.click(box["x"] + box["width"] * 0.75, box["y"] + box["height"] / 2)
        until(page, "() => Math.abs(window.locoserveStudio.time() - 3.0) < 0.1")

        # mute and solo set the stems' gains in the audio graph
        assert studio(page, "gain", "vocals") == 1
        page.click(".stem[data-stem=vocals] button.muted")
        assert studio(page, "gain", "vocals") == 0 and studio(page, "gain", "instrumental") == 1
        page.click(".stem[data-stem=vocals] button.solo")  # soloed wins over muted
        assert studio(page, "gain", "vocals") == 1 and studio(page, "gain", "instrumental") == 0
        page.click(".stem[data-stem=vocals] button.solo")
        assert studio(page, "gain", "vocals") == 0

        # a stem's download is the API's file, under the API's name
        with page.expect_download() as got:
            page.click(".stem[data-stem=vocals] button.download")
        stem = api.get(job["stems"]["vocals"])
        assert got.value.suggested_filename == "Studio song-vocals.flac"
        assert Path(got.value.path()).read_bytes() == stem.content
        with page.expect_download() as got:
            page.click("#download-all")
        assert got.value.suggested_filename == "Studio song-stems.zip"
        with zipfile.ZipFile(io.BytesIO(Path(got.value.path()).read_bytes())) as z:
            assert z.read("Studio song-vocals.flac") == stem.content
            assert sorted(z.namelist()) == ["Studio song-instrumental.flac", "Studio song-vocals.flac"]

    # the engine's metadata, and the job in the recent list
    page.click("#details summary")
    assert "cpu" in page.text_content("#details-list")
    assert page.locator(f"#recent li[data-job='{job['job_id']}']").count() == 1
    shot = Path(os.environ.get("STUDIO_SCREENSHOT") or tmp_path / "studio.png")
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000

    # a phone's width: one column, nothing wider than the screen
    page.set_viewport_size({"width": 380, "height": 800})
    assert page.evaluate("document.documentElement.scrollWidth") <= 380
    assert painted_fraction(page, ".stem[data-stem=vocals] canvas") > 0.05  # redrawn at the new width

    # the key stays in the browser; a later visit reopens the result from the recent jobs
    page.reload()
    page.wait_for_selector(f"#recent li[data-job='{job['job_id']}'] button")
    # the account and the recent jobs load side by side; either may answer first
    until(page, "() => document.getElementById('account').textContent.includes('Pro plan')")
    page.click(f"#recent li[data-job='{job['job_id']}'] button")
    page.wait_for_selector("#play:not([disabled])", timeout=60_000)
    assert page.eval_on_selector_all(".stem", "rs => rs.length") == 2


def test_the_page_under_a_route_prefix(svc, page):
    key = svc.keys["strict"]["vip"]
    page.goto(svc.url + "/strict/")
    page.fill("#key", key)
    page.click("#key-form button[type=submit]")
    page.wait_for_selector(".quota")  # /strict/api/me answered this app's key
    assert "VIP plan" in page.text_content("#account")
    assert "Up to 1 MB" in page.text_content("#limits")  # this app's upload cap


def test_quota_used_up_is_shown_as_the_problem(svc, page, tmp_path):
    from entitlements import authorize_and_consume, make_engine
    from entitlements.errors import EntitlementError

    key = new_key(svc, "free")
    db = make_engine(svc.db_url)
    while True:  # use up today's free quota directly in the database
        try:
            authorize_and_consume(db, "stem_split", api_key=key)
        except EntitlementError:
            break
    song = tmp_path / "one more.wav"
    song.write_bytes(wav_bytes(1.0))
    enter_key(page, svc, key)
    assert "0 of 10 left" in page.text_content(".quota[data-capability=stem_split]")
    page.select_option("#task", "separate:5")  # not in the free plan: said before any upload
    assert "not in the Free plan" in page.text_content("#limits")
    assert page.is_disabled("#submit")
    page.select_option("#task", "separate:2")
    page.set_input_files("#file", str(song))
    page.click("#submit")
    message = page.wait_for_selector("#message:not([hidden])")
    text = message.text_content()
    refused = svc.submit(key, seconds=1.0)  # what the API answers the same request
    assert refused.status_code == 429
    problem = refused.json()
    assert text.startswith(f"{problem['title']}: {problem['detail']}"), text
    assert "(retry in " in text  # from Retry-After
    assert "0 of 10 left" in page.text_content(".quota[data-capability=stem_split]")  # nothing was charged


def test_running_queued_and_cancelled(svc, page, tmp_path):
    key = new_key(svc, "vip")
    long, short = tmp_path / "long.wav", tmp_path / "short.wav"
    long.write_bytes(wav_bytes(60.0))
    short.write_bytes(wav_bytes(1.0, seed=1))
    enter_key(page, svc, key)
    page.select_option("#task", "separate:2")
    page.set_input_files("#file", str(long))
    page.click("#submit")
    page.wait_for_selector("#job-status[data-status=running]", timeout=60_000)
    assert re.fullmatch(r"Running on cpu: \d+ %", page.text_content("#job-status"))
    running = page.evaluate("document.getElementById('job-title').textContent")
    assert "long" in running

    # a second job waits behind the first on the one 2-stem slot; the page follows it
    page.set_input_files("#file", str(short))
    page.click("#submit")
    page.wait_for_selector("#job-status[data-status=queued]", timeout=60_000)
    until(page, "() => document.getElementById('job-status').textContent === 'Queued, position 1'")
    page.click("#cancel")
    page.wait_for_selector("#job-status[data-status=cancelled]", timeout=60_000)
    assert page.text_content("#job-status") == "Cancelled (refunded)" and page.is_hidden("#cancel")

    # the running one, reopened from the recent jobs, is cancelled too
    page.wait_for_selector("#recent li[data-status=running] button")
    page.click("#recent li[data-status=running] button")
    page.wait_for_selector("#cancel:not([hidden])")
    page.click("#cancel")
    page.wait_for_selector("#job-status[data-status=cancelled]", timeout=60_000)
    with svc.client(key) as c:
        assert [j["status"] for j in c.get("/api/jobs").json()["jobs"]] == ["cancelled", "cancelled"]
        assert c.get("/api/me").json()["capabilities"]["stem_split"]["used"] == 0  # both refunded


def test_a_bad_key_is_said_as_the_problem(svc, page):
    page.goto(svc.url + "/")
    page.fill("#key", "lsk_not-a-key")
    page.click("#key-form button[type=submit]")
    message = page.wait_for_selector("#message:not([hidden])")
    with svc.client("lsk_not-a-key") as c:
        problem = c.get("/api/me").json()
    assert message.text_content() == f"{problem['title']}: {problem['detail']}"
    assert page.text_content("#account") == "No key" and page.is_disabled("#submit")
