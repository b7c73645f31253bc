"""Short-lived signed stem links: `…/stems/vocals.wav?token=…` fetches a stem without the API
key, so that a browser `<audio>` element or a plain HTTP client can use it.

token = `{expires}.{signature}`, signature = base64url(HMAC-SHA256(secret, "job/stem/expires")):
bound to one job and one stem file, valid until `expires` (Unix seconds). The secret is
`link_secret` (LOCOSERVE_LINK_SECRET) or, without one, a random key kept in `link-secret` in
the data folder, which every node shares, so every ingress replica signs and verifies alike.
Rotating it (deleting the file, or changing the setting) voids every link out there.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path


def load_secret(data_dir: str | Path, configured: str | None) -> bytes:
    if configured:
        return configured.encode()
    path = Path(data_dir) / "link-secret"
    try:  # the first replica to start writes it; the others read what it wrote
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # the writer may not have written it yet
            if secret := path.read_bytes().strip():
                return secret
            time.sleep(0.1)
        raise RuntimeError(f"{path} is empty; delete it to make a new link secret")
    with os.fdopen(fd, "wb") as f:
        secret = secrets.token_urlsafe(32).encode()
        f.write(secret)
    return secret


class LinkSigner:
    def __init__(self, secret: bytes, ttl_s: int):
        self.secret, self.ttl_s = secret, ttl_s

    def _mac(self, job_id: str, filename: str, expires: int) -> str:
        mac = hmac.new(self.secret, f"{job_id}/{filename}/{expires}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def expires(self, now: float | None = None) -> int:
        return int(now if now is not None else time.time()) + self.ttl_s

    def token(self, job_id: str, filename: str, expires: int) -> str:
        return f"{expires}.{self._mac(job_id, filename, expires)}"

    def check(self, job_id: str, filename: str, token: str, now: float | None = None) -> str | None:
        """None if the token is good for this job and file now, else why it is not."""
        expires, _, mac = token.partition(".")
        if not expires.isdigit() or not hmac.compare_digest(mac, self._mac(job_id, filename, int(expires))):
            return "the link's token is not valid for this file"
        if int(expires) < (now if now is not None else time.time()):
            return "the link has expired; fetch the job again for a fresh one"
        return None
