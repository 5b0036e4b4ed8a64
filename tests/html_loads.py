"""What an HTML page or a stylesheet loads, and whether it comes from another host: the
checks behind "no page loads anything from another host" (tests/test_offline_pages.py for
the server's pages, tests/test_docs_reference.py for the built user guide).

Only loads count (script, stylesheet, image, frame, ... and CSS ``url()``/``@import``);
plain links (``<a href>``) do not, since following one is the reader's choice.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

# Attributes whose URL the browser fetches (or submits to), by tag.
LOADING_ATTRS = {
    "script": ("src",),
    "link": ("href",),
    "img": ("src", "srcset"),
    "source": ("src", "srcset"),
    "iframe": ("src",),
    "frame": ("src",),
    "embed": ("src",),
    "object": ("data",),
    "video": ("src", "poster"),
    "audio": ("src",),
    "track": ("src",),
    "input": ("src",),
    "form": ("action",),
    "base": ("href",),
}
CSS_URL = re.compile(r"""url\(\s*['"]?([^'")\s]+)|@import\s+['"]([^'"]+)['"]""", re.I)
LOCAL_SCHEMES = ("data", "blob", "about", "javascript", "")


class Loads(HTMLParser):
    """The URLs an HTML page loads (``urls``: tag attributes, inline ``<style>`` and
    ``style=""`` CSS, a meta refresh target) and its stylesheets (``stylesheets``)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.stylesheets: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        rel = values.get("rel", "").lower().split()
        for name in LOADING_ATTRS.get(tag, ()):
            if name in values and not (tag == "link" and rel in (["canonical"], ["alternate"])):
                found = values[name]
                parts = found.split(",") if name == "srcset" else [found]
                self.urls += [p.strip().split(" ")[0] for p in parts if p.strip()]
        if tag == "link" and "stylesheet" in rel:
            self.stylesheets.append(values.get("href", ""))
        if tag == "meta" and values.get("http-equiv", "").lower() == "refresh":
            target = re.search(r"url\s*=\s*(\S+)", values.get("content", ""), re.I)
            if target:
                self.urls.append(target.group(1).strip("'\""))
        if "style" in values:
            self.urls += css_urls(values["style"])
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.urls += css_urls(data)


def page_loads(html: str) -> Loads:
    parser = Loads()
    parser.feed(html)
    parser.close()
    return parser


def css_urls(css: str) -> list[str]:
    """The URLs a stylesheet loads (``url(...)`` and ``@import``)."""
    return [a or b for a, b in CSS_URL.findall(css)]


def foreign(base: str, url: str, origin: str) -> bool:
    """Whether ``url``, relative to ``base``, points at another origin than ``origin``
    (``scheme://host[:port]``). data:, blob:, about: and javascript: URLs are local; for a
    ``file://`` base give the origin ``file://``."""
    resolved = urlsplit(urljoin(base, url))
    if resolved.scheme in LOCAL_SCHEMES:
        return False
    return f"{resolved.scheme}://{resolved.netloc}" != origin
