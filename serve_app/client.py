"""`locoserve submit FILE_OR_FOLDER... --server URL --key KEY`: the same batch as `separate`,
through the HTTP API of a running service: upload (streamed, with progress), follow the job
(queue position, progress), download the stems to `{out}/{track}/{stem}.{ext}`.

Standard library only (urllib), so the client needs nothing beyond the package itself. Each
job is submitted with `wait=false` and polled, so a slow job never depends on one long HTTP
request; Ctrl-C cancels the job in progress (it is refunded) before exiting.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

UPLOAD_BLOCK = 1 << 16
POLL_S = 0.5
TIMEOUT_S = 60


class ApiError(Exception):
    """An answer of the service we cannot go on with: one line for people."""

    def __init__(self, message: str, code: str = "api_error", fatal: bool = False):
        super().__init__(message)
        self.code, self.fatal = code, fatal


@dataclass
class Api:
    server: str
    key: str

    def _request(self, method: str, path: str, data=None, headers: dict | None = None) -> urllib.request.Request:
        url = urljoin(self.server.rstrip("/") + "/", path.lstrip("/"))
        return urllib.request.Request(url, data=data, method=method,
                                      headers={"Authorization": f"Bearer {self.key}", **(headers or {})})

    def open(self, method: str, path: str, data=None, headers: dict | None = None):
        try:
            return urllib.request.urlopen(self._request(method, path, data, headers), timeout=TIMEOUT_S)
        except urllib.error.HTTPError as e:
            raise _problem(e) from None
        except urllib.error.URLError as e:
            reason = getattr(e.reason, "strerror", None) or str(e.reason)
            raise ApiError(f"cannot reach {self.server}: {reason}; is the service running "
                           f"(serve run serve_config.yaml) and is --server right?", "unreachable", fatal=True) from None
        except (TimeoutError, ConnectionError) as e:
            raise ApiError(f"{self.server} did not answer: {e}", "unreachable", fatal=True) from None

    def json(self, method: str, path: str, data=None, headers: dict | None = None) -> tuple[int, dict]:
        with self.open(method, path, data, headers) as r:
            return r.status, json.loads(r.read() or b"{}")


def _problem(e: urllib.error.HTTPError) -> ApiError:
    """RFC 9457 problem details → 'STATUS Title: detail' (plus Retry-After where given)."""
    try:
        body = json.loads(e.read() or b"{}")
    except ValueError:
        body = {}
    detail = body.get("detail") or e.reason
    text = f"{e.code} {body.get('title') or e.reason}: {detail}"
    if e.headers.get("Retry-After"):
        text += f" (retry after {e.headers['Retry-After']} s)"
    # a bad key or an unreachable path fails every file alike: stop at the first
    return ApiError(text, body.get("code") or body.get("type", "").rsplit("/", 1)[-1] or str(e.code),
                    fatal=e.code in (401, 404, 405))


def multipart(path: Path, fields: dict[str, str], progress=None) -> tuple[str, int, object]:
    """A streamed multipart/form-data body: (content type, length, iterable of bytes)."""
    boundary = uuid.uuid4().hex
    head = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                    for k, v in fields.items())
    name = path.name.replace('"', "%22").replace("\r", " ").replace("\n", " ")
    head += (f'--{boundary}\r\nContent-Disposition: form-data; name="audio"; filename="{name}"\r\n'
             f"Content-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    size = path.stat().st_size

    def body():
        yield head
        sent = 0
        with open(path, "rb") as f:
            while block := f.read(UPLOAD_BLOCK):
                sent += len(block)
                if progress:
                    progress(sent, size)
                yield block
        yield tail

    return f"multipart/form-data; boundary={boundary}", len(head) + size + len(tail), body()


def submit_one(api: Api, task: str, path: Path, fields: dict[str, str], status) -> dict:
    """Upload, wait for the job to end; the finished job description."""
    ctype, length, body = multipart(path, fields, lambda sent, size: status(f"uploading {sent / size:4.0%}"))
    _, job = api.json("POST", f"/api/audio/{task}", body, {"Content-Type": ctype, "Content-Length": str(length)})
    job_id = job["job_id"]
    try:
        while job["status"] in ("queued", "running"):
            if job["status"] == "queued":
                position = job.get("queue_position")
                status(f"queued{f' (position {position})' if position is not None else ''}")
            else:
                status(f"running {job.get('progress', 0):4.0%} on {job.get('device') or '?'}")
            time.sleep(POLL_S)
            _, job = api.json("GET", f"/api/jobs/{job_id}")
    except KeyboardInterrupt:
        try:
            api.json("DELETE", f"/api/jobs/{job_id}")
            print(f"\nlocoserve: interrupted; job {job_id} cancelled (refunded)", file=sys.stderr)
        except ApiError:
            print(f"\nlocoserve: interrupted; job {job_id} may still run on the server", file=sys.stderr)
        raise
    if job["status"] != "done":
        raise ApiError(f"the job {job['status']}: {job.get('error') or 'no reason given'} (job {job_id})",
                       f"job_{job['status']}")
    return job


def download(api: Api, url: str, dest: Path) -> None:
    part = dest.with_name(f".{dest.name}.part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with api.open("GET", url) as r, open(part, "wb") as f:
            while block := r.read(UPLOAD_BLOCK):
                f.write(block)
        os.replace(part, dest)
    finally:
        if part.exists():
            part.unlink()


def run(args: argparse.Namespace) -> int:
    from models.naming import TemplateError, check_template, render
    from models.separate_cli import Output, collect, name_tracks
    from models.formats import EncodingError, check_encoding

    if not args.key:
        print("locoserve: no API key: pass --key KEY or set LOCOSERVE_API_KEY "
              "(a local install's demo keys are in data/demo-keys.json)", file=sys.stderr)
        return 2
    try:
        template = check_template(args.filename)
        check_encoding(args.format, args.bitrate)
    except (TemplateError, EncodingError) as e:
        print(f"locoserve: {e}", file=sys.stderr)
        return 2
    api = Api(args.server, args.key)
    out_root = Path(args.out)
    tracks = collect(args.inputs, out_root)
    name_tracks(tracks)
    out = Output(None, args.quiet, args.json)
    tty = sys.stderr.isatty() and not args.quiet
    started = time.monotonic()
    todo = [t for t in tracks if not t.error]

    for t in tracks:
        if t.error:
            out.line(f"locoserve: {t.source}: {t.error}", err=True)
    for i, t in enumerate(todo, 1):
        def status(text: str, i=i, t=t) -> None:
            if tty:
                sys.stderr.write(f"\r\x1b[K[{i}/{len(todo)}] {t.source}: {text}")
                sys.stderr.flush()

        fields = {"format": args.format, "wait": "false"}
        if args.stems:
            fields["stems"] = str(args.stems)
        if args.bitrate:
            fields["bitrate"] = str(args.bitrate)
        if args.normalize:
            fields["normalize"] = args.normalize
        t0 = time.monotonic()
        try:
            job = submit_one(api, args.task, t.path, fields, status)
            for stem, url in job["stems"].items():
                status(f"downloading {stem}")
                dest = out_root / render(template, track=t.name, stem=stem, ext=job["format"])
                download(api, url, dest)
                t.outputs[stem] = dest
        except ApiError as e:
            t.code, t.error = e.code, str(e)
            if tty:
                sys.stderr.write("\r\x1b[K")
            out.line(f"locoserve: {t.source}: {e}", err=True)
            if e.fatal:
                for rest in todo[i:]:
                    rest.code, rest.error = "not_submitted", "not submitted"
                break
            continue
        except OSError as e:
            t.code, t.error = "io_error", f"cannot read or write: {e.strerror or e}"
            out.line(f"locoserve: {t.source}: {t.error}", err=True)
            continue
        except KeyboardInterrupt:
            return 130
        if tty:
            sys.stderr.write("\r\x1b[K")
        names = ", ".join(str(p) for p in t.outputs.values())
        out.line(f"{t.source} → {names} ({job['duration_s']:.1f} s of audio in {time.monotonic() - t0:.1f} s, "
                 f"job {job['job_id']})")
        out.record({"file": t.source, "outputs": {k: str(v) for k, v in t.outputs.items()}, "job": job})
    for t in tracks:
        if t.error:
            out.record({"file": t.source, "error": {"code": t.code, "message": t.error}})
    failed = [t for t in tracks if t.error]
    if len(tracks) > 1 or failed:
        text = f"{len(tracks) - len(failed)} of {len(tracks)} files separated in {time.monotonic() - started:.0f} s"
        if failed:
            text += f"; failed: {', '.join(t.source for t in failed)}"
        out.line(text, err=True)
    return 1 if failed else 0


def register(sub: argparse._SubParsersAction) -> None:
    from models.naming import DEFAULT_TEMPLATE
    from models.formats import FORMATS

    p = sub.add_parser("submit", help="separate files through a running service's HTTP API",
                       description="Upload files (or folders' audio files) to a Locoserve service, wait for "
                                   "each job and download its stems to OUT/{track}/{stem}.{ext}.")
    p.add_argument("inputs", nargs="+", metavar="FILE_OR_FOLDER")
    p.add_argument("--server", default=os.environ.get("LOCOSERVE_SERVER", "http://127.0.0.1:8000"),
                   help="the service's base URL (default: $LOCOSERVE_SERVER or http://127.0.0.1:8000)")
    p.add_argument("--key", default=os.environ.get("LOCOSERVE_API_KEY"),
                   help="API key (default: $LOCOSERVE_API_KEY)")
    p.add_argument("--task", default="separate", choices=["separate", "clean", "enhance"])
    p.add_argument("--stems", type=int, choices=[2, 5], help="separate: 2 or 5 stems (default: the plan's)")
    p.add_argument("--out", "-o", default="separated")
    p.add_argument("--filename", default=DEFAULT_TEMPLATE, help="as for separate")
    p.add_argument("--format", default="wav", choices=FORMATS)
    p.add_argument("--bitrate", type=int, metavar="KBPS", help="mp3 and opus only")
    p.add_argument("--normalize", choices=["peak", "loudness"])
    p.add_argument("--json", action="store_true", help="one JSON record per file on stdout (JSON Lines)")
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(func=run)

