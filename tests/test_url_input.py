"""Audio by URL (issue 12, point 4): the download the service makes for `audio_url`, against a
real HTTP server on 127.0.0.1: size cap, time-out, redirects, refused addresses. Through
the whole application in test_service.py."""

from __future__ import annotations

import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from serve_app.outbound import FetchError, fetch

BODY = b"RIFF" + b"\x00" * 5000


class QuietServer(ThreadingHTTPServer):
    """The fetcher hangs up on oversized and slow downloads by design; socketserver would print
    each reset as a traceback on the test run's output, as though something had failed."""

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class Origin:
    """Serves a few paths as the tests need them, and counts requests."""

    def __init__(self):
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                outer.hits += 1
                path = self.path.split("?")[0]
                if path == "/song.wav":
                    self._send(200, BODY)
                elif path.startswith("/hop/"):  # /hop/N redirects N times, then to the song
                    n = int(path.rsplit("/", 1)[1])
                    self.send_response(302)
                    self.send_header("Location", f"/hop/{n - 1}" if n > 1 else "/song.wav")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif path == "/to-ftp":
                    self.send_response(301)
                    self.send_header("Location", "ftp://example.com/x.wav")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif path == "/huge-declared":
                    self.send_response(200)
                    self.send_header("Content-Length", str(10**9))
                    self.end_headers()
                elif path == "/huge-chunked":
                    self.send_response(200)
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    try:
                        for _ in range(100):
                            self.wfile.write(b"1000\r\n" + b"x" * 4096 + b"\r\n")
                        self.wfile.write(b"0\r\n\r\n")
                    except OSError:
                        pass
                elif path == "/trickle":
                    self.send_response(200)
                    self.send_header("Content-Length", "100")
                    self.end_headers()
                    try:
                        for _ in range(100):
                            self.wfile.write(b"x")
                            self.wfile.flush()
                            time.sleep(0.2)
                    except OSError:
                        pass
                elif path == "/stall":
                    time.sleep(5)
                else:
                    self._send(404, b"no")

            def _send(self, code, body):
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture(scope="module")
def origin():
    o = Origin()
    yield o
    o.close()


def get(url, max_bytes=100_000, timeout_s=5.0, max_redirects=3, allow_private=True):
    return fetch(url, max_bytes, timeout_s, max_redirects, allow_private)


def refused(code, *args, **kwargs) -> FetchError:
    with pytest.raises(FetchError) as e:
        get(*args, **kwargs)
    assert e.value.code == code, e.value.detail
    return e.value


def test_a_file_and_its_name_through_redirects(origin):
    assert get(f"{origin.base}/song.wav?sig=1") == (BODY, "song.wav")
    assert get(f"{origin.base}/hop/3") == (BODY, "song.wav")  # three redirects: allowed
    refused("url_redirects", f"{origin.base}/hop/4")
    refused("url_refused", f"{origin.base}/to-ftp")  # every hop is checked as the first


def test_the_size_cap_declared_or_streamed(origin):
    assert refused("url_too_large", f"{origin.base}/huge-declared").status == 413
    assert refused("url_too_large", f"{origin.base}/huge-chunked").status == 413
    assert refused("url_status", f"{origin.base}/missing").status == 422


def test_the_whole_download_has_a_time_limit(origin):
    for path in ("/stall", "/trickle"):  # nothing, or a byte at a time
        t0 = time.monotonic()
        refused("url_timeout", f"{origin.base}{path}", timeout_s=1.0)
        assert time.monotonic() - t0 < 3.0


def test_private_addresses_are_refused_unless_allowed_and_never_contacted(origin):
    before = origin.hits
    port = origin.server.server_port
    for url in (f"{origin.base}/song.wav", f"http://localhost:{port}/song.wav",
                f"https://127.0.0.1:{port}/song.wav", "https://169.254.169.254/latest/meta-data/",
                "https://10.0.0.1/a.wav", "https://[::1]/a.wav", "file:///etc/passwd"):
        refused("url_refused", url, allow_private=False)
    assert origin.hits == before
    refused("url_unreachable", "http://127.0.0.1:9/nothing.wav")  # allowed, but nobody listens
