"""Requests the service makes to addresses its callers name (webhooks; later, audio URLs).

A caller must not make the service reach what only the service can reach: loopback,
link-local (the cloud metadata endpoint 169.254.169.254 among them), private, shared (CGNAT),
multicast and reserved addresses are refused unless the config allows them (`allow_private`,
set for local tests and `serve_config.yaml`, never in the cluster config), and so is plain
http. The check is made on every address the name resolves to *at connect time*, in the
connection itself, so a name that resolves to a public address when the request is accepted
and to a private one later (DNS rebinding) is still refused. Redirects are not followed.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
from urllib.parse import urlsplit

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
