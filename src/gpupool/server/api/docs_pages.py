"""The API's documentation pages, served offline: ``/docs`` (Swagger UI) and ``/redoc``
(ReDoc), with every file they load coming from this server.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, which a machine without internet
cannot reach (the page stays blank). Here the assets come from installed packages instead:
Swagger UI's bundle and stylesheet and ReDoc's standalone bundle from ``fastapi-offline``
(a dependency; Swagger UI is Apache-2.0, ReDoc MIT), and two small start-up scripts from
``gpupool/web/apidocs``.

Contract of :func:`install_docs_pages`:

- ``GET /docs`` and ``GET /redoc`` answer an HTML page whose scripts and stylesheet are paths
  on this server (``/docs/assets/...``) and which has no inline script; the response carries
  a Content-Security-Policy that lets the page load nothing from another host.
- ``GET /docs/assets/{name}`` serves exactly the files of :data:`ASSETS` (404 otherwise),
  with the :data:`PATCHES` that take out the bundles' own loads from other hosts.
- Paths honour the ASGI ``root_path`` (a server behind a proxy at a prefix).
- The routes are left out of the OpenAPI schema. Install them before the console's
  catch-all mount at ``/`` (routes match in order).
"""

from __future__ import annotations

import html
from functools import cache
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from gpupool.web import static_dir

DOCS_PATH = "/docs"
REDOC_PATH = "/redoc"
ASSETS_PATH = "/docs/assets"

_VENDOR = Path(str(files("fastapi_offline") / "static"))
_OWN = static_dir().parent / "apidocs"

ASSETS: dict[str, tuple[Path, str]] = {
    "swagger-ui-bundle.js": (_VENDOR / "swagger-ui-bundle.js", "text/javascript"),
    "swagger-ui.css": (_VENDOR / "swagger-ui.css", "text/css"),
    "redoc.standalone.js": (_VENDOR / "redoc.standalone.js", "text/javascript"),
    "swagger-init.js": (_OWN / "swagger-init.js", "text/javascript"),
    "redoc-init.js": (_OWN / "redoc-init.js", "text/javascript"),
}
"""name under ``/docs/assets/`` -> (file, media type): everything the two pages load."""

PATCHES: dict[str, tuple[tuple[bytes, bytes], ...]] = {
    # ReDoc's sidebar shows Redocly's logo from their CDN (no option turns it off); an empty
    # src loads nothing and makes ReDoc drop the image (its onError hides it).
    "redoc.standalone.js": ((b'"https://cdn.redoc.ly/redoc/logo-mini.svg"', b'""'),),
}
"""Byte replacements made to an asset as it is served, each removing a load from another
host that the asset would otherwise make. A replacement that no longer matches (a new
version of the package) changes nothing; tests/test_offline_pages.py then sees the load."""

# Swagger UI and ReDoc set inline styles (hence 'unsafe-inline' for styles only); ReDoc runs
# its search in a worker made from a blob: URL. Nothing may come from another host.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
    "worker-src 'self' blob:; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'self'"
)

_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <meta name="referrer" content="no-referrer">
  <title>{title}</title>
  <link rel="icon" href="data:,">
{head}</head>
<body>
  <div id="{root_id}" data-openapi-url="{openapi_url}"></div>
{scripts}</body>
</html>
"""


def _page(title: str, root_id: str, openapi_url: str, assets: str, styles: list[str],
          scripts: list[str]) -> HTMLResponse:
    at = html.escape(assets, quote=True)
    head = "".join(f'  <link rel="stylesheet" href="{at}/{name}">\n' for name in styles)
    tags = "".join(f'  <script src="{at}/{name}"></script>\n' for name in scripts)
    body = _PAGE.format(title=html.escape(title), head=head, root_id=root_id,
                        openapi_url=html.escape(openapi_url, quote=True), scripts=tags)
    return HTMLResponse(body, headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY})


def install_docs_pages(app: FastAPI) -> None:
    """Add ``/docs``, ``/redoc`` and ``/docs/assets/{name}`` to ``app`` (see the module).
    Does nothing when the app serves no OpenAPI schema (``openapi_url=None``)."""
    openapi_url = app.openapi_url
    if openapi_url is None:
        return
    title = app.title

    def prefix(request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    @app.get(DOCS_PATH, include_in_schema=False)
    def swagger_ui(request: Request) -> HTMLResponse:
        root = prefix(request)
        return _page(f"{title} API - Swagger UI", "swagger-ui", root + openapi_url,
                     root + ASSETS_PATH, ["swagger-ui.css"],
                     ["swagger-ui-bundle.js", "swagger-init.js"])

    @app.get(REDOC_PATH, include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        root = prefix(request)
        return _page(f"{title} API - ReDoc", "redoc", root + openapi_url, root + ASSETS_PATH,
                     [], ["redoc.standalone.js", "redoc-init.js"])

    @app.get(ASSETS_PATH + "/{name}", include_in_schema=False)
    def asset(name: str) -> Response:
        found = ASSETS.get(name)
        if found is None:
            raise HTTPException(404, f"no documentation asset {name!r}; "
                                     f"there are: {', '.join(sorted(ASSETS))}")
        path, media_type = found
        if name in PATCHES:
            return Response(_patched(name), media_type=media_type)
        return FileResponse(path, media_type=media_type)


@cache
def _patched(name: str) -> bytes:
    """The asset ``name`` with its :data:`PATCHES` applied (read once)."""
    data = ASSETS[name][0].read_bytes()
    for old, new in PATCHES[name]:
        data = data.replace(old, new)
    return data
