"""Locoserve Studio: the web page at `/`, static files shipped in the package (`web/`).

The page is plain HTML, CSS and JavaScript with no build step and no external resource (the
service may run air-gapped); its Content-Security-Policy allows only this origin, so a
stray external reference fails loudly in development instead of silently at a customer's.
The route prefix of the application is written into the page, so it also works under one
(e.g. `/strict/`).
"""

from __future__ import annotations

import html
from functools import lru_cache
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

WEB_DIR = Path(__file__).parent / "web"
CSP = ("default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; connect-src 'self'; "
       "style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


@lru_cache(maxsize=1)
def _index() -> str:
    return (WEB_DIR / "index.html").read_text()


def _root(request: Request) -> str:
    return request.scope.get("root_path", "").rstrip("/")


async def index(request: Request) -> Response:
    root = _root(request)
    if root and not request.url.path.endswith("/"):  # /strict → /strict/: the page's relative URLs need it
        return RedirectResponse(f"{root}/", status_code=308)
    page = _index().replace("{{root}}", html.escape(root, quote=True))
    return HTMLResponse(page, headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"})


class _Static(StaticFiles):
    async def get_response(self, path: str, scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["Cache-Control"] = "no-cache"  # revalidated (ETag): a new version shows at once
        return response


def routes() -> list:
    return [Route("/", index, methods=["GET"]),
            Mount("/static", app=_Static(directory=WEB_DIR), name="static")]
