"""The operator dashboard at ``/ui``: three static files shipped in the wheel (no build step,
no CDN), read once at start and served with a strict Content-Security-Policy. The page
itself holds no data: it calls the management API with the admin token the operator types
in, kept in the tab's ``sessionStorage`` (never in a URL or a cookie)."""

from __future__ import annotations

from importlib import resources
from typing import Any

FILES = {
    "/ui": ("index.html", b"text/html; charset=utf-8"),
    "/ui/app.js": ("app.js", b"text/javascript; charset=utf-8"),
    "/ui/style.css": ("style.css", b"text/css; charset=utf-8"),
}
_SECURITY = [
    # Only our own script and style; API calls to this origin; no frames, no plugins.
    (b"content-security-policy", b"default-src 'none'; script-src 'self'; style-src 'self'; "
     b"connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-cache"),
]


class Dashboard:
    def __init__(self) -> None:
        package = resources.files(__name__)
        self.bodies = {path: (package.joinpath(name).read_bytes(), ctype) for path, (name, ctype) in FILES.items()}

    async def serve(self, scope: dict, headers: Any, record: Any, receive: Any, send: Any) -> None:
        path = scope["path"].rstrip("/") or "/ui"
        body, ctype = self.bodies[path]
        head = [(b"content-type", ctype), (b"content-length", str(len(body)).encode()), *_SECURITY]
        await send({"type": "http.response.start", "status": 200, "headers": head})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
