"""`read_upload` over real HTTP (uvicorn, raw sockets): a body that stalls or trickles is cut
with 408; a file of any size is spooled to disk, so it passes whatever the memory budget (which
only an `audio_url` download takes). No Ray: the ingress calls exactly this function; its
integration tests are in test_api_local.py and test_ingress_faults.py."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from service_fixture import free_port, wav_bytes
from serve_app.admission import Admission, MemoryBudget, UploadGate
from serve_app.uploads import Pace, UploadError, read_upload

PACE = Pace(idle_s=2.0, min_rate=1000.0, grace_s=1.0)
BUDGET = 200_000  # bytes


received = []  # what the test sent, to compare with the spool file


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import uvicorn

    spool = tmp_path_factory.mktemp("spool")
    gate, budget = UploadGate(per_key=100, total=100), MemoryBudget(BUDGET)

    async def upload(request: Request):
        gate.enter("k")
        admission = Admission(gate, "k", budget)
        try:
            got = await read_upload(request, 10_000_000, PACE, admission, spool_dir=spool)
            try:
                return JSONResponse({"bytes": got.size, "same": got.path.read_bytes() == received[-1],
                                     "held": budget.held, "spooled": [p.name for p in spool.iterdir()]})
            finally:
                got.discard()
        except UploadError as e:
            return JSONResponse({"slug": e.slug, "spooled": [p.name for p in spool.iterdir()]}, status_code=e.status)
        finally:
            admission.release()

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(Starlette(routes=[Route("/up", upload, methods=["POST"])]),
                                        host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.05)
    yield port
    srv.should_exit = True
    thread.join(timeout=10)


def open_upload(port: int) -> socket.socket:
    boundary = "b0undary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"audio\"; filename=\"x.wav\"\r\n"
            "Content-Type: audio/wav\r\n\r\n").encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(f"POST /up HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
              f"Content-Length: 100000\r\n\r\n".encode() + head)
    return s


def status(s: socket.socket) -> int:
    return int(s.recv(4096).split(b"\r\n", 1)[0].split()[1])


def test_a_trickling_body_is_cut_once_the_grace_has_passed(server):
    t0 = time.monotonic()  # before the head goes out, as the server's grace starts on it
    s = open_upload(server)
    try:
        for _ in range(40):  # 1 byte every 0.2 s: 5 bytes/s, far below 1000
            s.send(b"R")
            time.sleep(0.2)
            s.setblocking(False)
            try:
                if s.recv(1, socket.MSG_PEEK):
                    break
            except BlockingIOError:
                pass
            finally:
                s.setblocking(True)
        s.settimeout(10)
        assert status(s) == 408
        assert 0.95 <= time.monotonic() - t0 < 8.0  # cut soon after the 1 s grace, not at the idle timeout
    finally:
        s.close()


def test_a_stalled_body_is_cut_after_the_idle_timeout(server):
    # The clock starts before the head is sent: the server's idle timer starts when it has read
    # the head, so a clock started after sendall can see 1.99997 s (a CI run did). The lower
    # bound keeps 50 ms for the event loop's timer granularity; an early cut (no idle wait) fails.
    t0 = time.monotonic()
    s = open_upload(server)
    try:
        assert status(s) == 408
        assert 1.95 <= time.monotonic() - t0 < 6.0
    finally:
        s.close()


def test_an_upload_is_spooled_to_disk_whatever_the_memory_budget(server):
    url = f"http://127.0.0.1:{server}/up"
    for data in (wav_bytes(0.5), wav_bytes(12.0)):  # ~88 kB; ~2 MB, past the 200 kB budget
        received.append(data)
        r = httpx.post(url, files={"audio": ("a.wav", data, "audio/wav")})
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["bytes"], body["same"], body["held"]) == (len(data), True, 0), body
        assert len(body["spooled"]) == 1 and body["spooled"][0].startswith(".upload-"), body


@pytest.mark.parametrize("case", ["other field", "bad option", "two files"])
def test_a_refused_upload_leaves_no_spool_file(server, case):
    url = f"http://127.0.0.1:{server}/up"
    data = wav_bytes(6.0)  # past one write batch: its spool file exists before the refusal
    received.append(data)
    files = {"audio": ("a.wav", data, "audio/wav")}
    form = {}
    if case == "other field":
        files = {"file": ("a.wav", data, "audio/wav")}
    elif case == "bad option":
        form = {"stems": "3"}
    else:
        files = [("audio", ("a.wav", data, "audio/wav")), ("audio", ("b.wav", data, "audio/wav"))]
    r = httpx.post(url, files=files, data=form)
    assert r.status_code in (400, 422), r.text
    assert r.json()["spooled"] == []
