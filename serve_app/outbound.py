"""Requests the service makes to addresses its callers name: webhooks, and audio by URL.

A caller must not make the service reach what only the service can reach: loopback,
link-local (the cloud metadata endpoint 169.254.169.254 among them), private, shared (CGNAT),
multicast and reserved addresses are refused unless the config allows them (`allow_private`,
set for local tests and `serve_config.yaml`, never in the cluster config), and so is plain
http. The check is made on every address the name resolves to *at connect time*, in the
connection itself, so a name that resolves to a public address when the request is accepted
and to a private one later (DNS rebinding) is still refused. Webhooks follow no redirects;
an audio download follows a few, each target checked as the first.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from urllib.parse import unquote, urljoin, urlsplit

MAX_RESPONSE_READ = 64 * 1024  # a receiver's answer is read this far, to free the connection


class Refused(Exception):
    """The URL or the address it resolves to is not allowed; the message says why, for the caller."""


def _allowed(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_url(url: str, allow_private: bool) -> tuple[str, str, int, str]:
    """(scheme, host, port, path with query) of a URL the service may call; Refused otherwise.
    The addresses are checked when connecting (see the module's docstring)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise Refused(f"not a valid URL ({e})") from None
    if parts.scheme not in ("https", "http"):
        raise Refused("the URL must be https")
    if parts.scheme == "http" and not allow_private:
        raise Refused("the URL must be https (plain http is allowed only where the service's config says so)")
    if not parts.hostname:
        raise Refused("the URL has no host")
    if parts.username or parts.password:
        raise Refused("the URL must not carry credentials")
    if not allow_private:
        try:  # a literal address can be refused now; a name, when it is resolved to connect
            if not _allowed(ipaddress.ip_address(parts.hostname)):
                raise Refused(f"{parts.hostname} is not a public address")
        except ValueError:
            if parts.hostname.lower() == "localhost" or parts.hostname.lower().endswith(".localhost"):
                raise Refused(f"{parts.hostname} is not a public address") from None
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80), path


def check_resolved(url: str, allow_private: bool) -> None:
    """Refuse a URL whose name resolves to an address not allowed now (a clear answer when the
    request is made; the connection checks again). Blocking: call it in a thread."""
    _, host, port, _ = check_url(url, allow_private)
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise Refused(f"{host} could not be resolved ({e.strerror})") from None
    for *_, addr in infos:
        ip = ipaddress.ip_address(addr[0].split("%", 1)[0])
        if not _allowed(ip):
            raise Refused(f"{host} resolves to {ip}, which is not a public address")


def connect(host: str, port: int, timeout: float, allow_private: bool) -> socket.socket:
    """A TCP connection to the first allowed address `host` resolves to, checked now."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise Refused(f"{host} could not be resolved ({e.strerror})") from None
    error: Exception | None = None
    for family, type_, proto, _, addr in infos:
        ip = ipaddress.ip_address(addr[0].split("%", 1)[0])
        if not allow_private and not _allowed(ip):
            error = Refused(f"{host} resolves to {ip}, which is not a public address")
            continue
        sock = socket.socket(family, type_, proto)
        sock.settimeout(timeout)
        try:
            sock.connect(addr)
            return sock
        except OSError as e:
            sock.close()
            error = e
    raise error if error is not None else Refused(f"{host} has no address")


class _Checked(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, timeout: float, allow_private: bool):
        super().__init__(host, port, timeout=timeout)
        self.allow_private = allow_private

    def connect(self) -> None:
        self.sock = connect(self.host, self.port, self.timeout, self.allow_private)


class _CheckedTLS(_Checked):
    default_port = 443

    def connect(self) -> None:
        super().connect()
        self.sock = ssl.create_default_context().wrap_socket(self.sock, server_hostname=self.host)


def post(url: str, body: bytes, headers: dict, timeout: float, allow_private: bool) -> int:
    """POST and return the status code; Refused, or OSError/HTTPException on a network fault.
    Blocking: call it in a thread."""
    scheme, host, port, path = check_url(url, allow_private)
    conn = (_CheckedTLS if scheme == "https" else _Checked)(host, port, timeout, allow_private)
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        response.read(MAX_RESPONSE_READ)
        return response.status
    finally:
        conn.close()


class FetchError(Exception):
    """A URL the service could not take audio from; `status` and `code` say how to answer."""

    def __init__(self, status: int, code: str, detail: str):
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


def fetch(url: str, max_bytes: int, timeout_s: float, max_redirects: int, allow_private: bool) -> tuple[bytes, str]:
    """GET `url` into memory: (body, the last URL's file name). At most `max_bytes` (a declared
    larger Content-Length is refused before reading), `timeout_s` in all, `max_redirects`
    redirects, each target checked as the first. FetchError otherwise. Blocking."""
    deadline = time.monotonic() + timeout_s
    for _ in range(max_redirects + 1):
        try:
            scheme, host, port, path = check_url(url, allow_private)
        except Refused as e:
            raise FetchError(422, "url_refused", str(e)) from None
        left = deadline - time.monotonic()
        if left <= 0:
            raise FetchError(422, "url_timeout", f"the download did not finish within {timeout_s:g} s")
        conn = (_CheckedTLS if scheme == "https" else _Checked)(host, port, left, allow_private)
        try:
            conn.request("GET", path, headers={"User-Agent": "Locoserve/1", "Accept": "audio/*, video/*, */*"})
            response = conn.getresponse()
            if response.status in (301, 302, 303, 307, 308) and response.getheader("Location"):
                url = urljoin(url, response.getheader("Location"))
                continue
            if response.status != 200:
                raise FetchError(422, "url_status", f"the URL answered {response.status} {response.reason}")
            declared = response.getheader("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise FetchError(413, "url_too_large", f"the URL's file is {int(declared)} bytes; the limit is "
                                                           f"{max_bytes}")
            chunks, got = [], 0
            while block := response.read1(1 << 16):  # what has arrived: a trickle cannot outlast the deadline
                got += len(block)
                if got > max_bytes:
                    raise FetchError(413, "url_too_large", f"the URL's file exceeds the limit of {max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise FetchError(422, "url_timeout", f"the download did not finish within {timeout_s:g} s")
                chunks.append(block)
            name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
            return b"".join(chunks), name
        except Refused as e:
            raise FetchError(422, "url_refused", str(e)) from None
        except socket.timeout:
            raise FetchError(422, "url_timeout", f"the download did not finish within {timeout_s:g} s") from None
        except (OSError, http.client.HTTPException) as e:
            raise FetchError(422, "url_unreachable", f"the URL could not be fetched ({type(e).__name__}: {e})"[:300]) \
                from None
        finally:
            conn.close()
    raise FetchError(422, "url_redirects", f"the URL redirected more than {max_redirects} times")
