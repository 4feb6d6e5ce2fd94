"""Our HTTP/1.1 protocol beside uvicorn's httptools protocol and h11, on the same bytes.

Every corpus case goes over a real socket to three uvicorn servers in this event loop (ours,
``http="httptools"``, ``http="h11"``), each serving the recording app of http_differential.py.
Outcomes (statuses in order, close or keep-alive, what the app saw) must be equal, except for
the differences listed below, each with what we do and the RFC section that says why; a
listed difference that no longer differs fails too, so the tables stay true.

Then: every short request split at every byte gives the same outcome (ours and uvicorn's),
and hypothesis mutates the corpus (splits, inserted header lines, case changes, byte edits)
to check that ours is never less strict than uvicorn's: the requests our app sees are always
a prefix of the ones uvicorn's app sees, and ours never stalls or sends a broken response.
"""

from __future__ import annotations

import re

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from http_differential import PROTOCOLS, Outcome, Seen, Server, start, stop

pytestmark = pytest.mark.asyncio(loop_scope="module")

H = b"Host: t\r\n"


def _get(path: bytes = b"/", extra: bytes = b"", version: bytes = b"1.1") -> bytes:
    return b"GET %s HTTP/%s\r\n%s%s\r\n" % (path, version, H, extra)


def _post(body: bytes, extra: bytes = b"", path: bytes = b"/p") -> bytes:
    return b"POST %s HTTP/1.1\r\n%sContent-Length: %d\r\n%s\r\n%s" % (path, H, len(body), extra, body)


def _chunked(chunks: bytes, extra: bytes = b"") -> bytes:
    return b"POST /c HTTP/1.1\r\n%sTransfer-Encoding: chunked\r\n%s\r\n%s" % (H, extra, chunks)


# name -> the bytes a client sends on one connection
CORPUS: dict[str, bytes] = {
    # -- valid ------------------------------------------------------------------------------
    "get": _get(b"/a?x=1&y=%20z"),
    "get-percent-path": _get(b"/a%2Fb%20c"),
    "get-many-headers": _get(b"/", b"".join(b"X-H%d: v%d\r\n" % (i, i) for i in range(60))),
    "get-mixed-case-names": _get(b"/", b"x-MiXeD: 1\r\nCONTENT-type: text/plain\r\n"),
    "get-empty-value": _get(b"/", b"X-Empty:\r\nX-Spaces:   \r\n"),
    "get-ows-around-value": _get(b"/", b"X-A:  v  \r\nX-B:\tw\t\r\n"),
    "get-long-url-4k": _get(b"/" + b"a" * 4000),
    "get-leading-crlf": b"\r\n" + _get(),
    "head": b"HEAD /h HTTP/1.1\r\n" + H + b"\r\n",
    "options-star": b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n",
    "post": _post(b"hello"),
    "post-empty": _post(b""),
    "post-chunked": _chunked(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"),
    "post-chunked-extension": _chunked(b"3;name=value\r\nabc\r\n0\r\n\r\n"),
    "post-chunked-trailer": _chunked(b"3\r\nabc\r\n0\r\nX-Trailer: t\r\nHost: evil\r\n\r\n"),
    "post-expect-100": _post(b"hello", b"Expect: 100-continue\r\n"),
    "http10": b"GET /old HTTP/1.0\r\n\r\n",
    "http10-keep-alive": b"GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" + _get(b"/next"),
    "absolute-form": b"GET http://t/abs?q=1 HTTP/1.1\r\n" + H + b"\r\n",
    "absolute-form-https-port": b"GET https://t:8443/abs HTTP/1.1\r\n" + H + b"\r\n",
    "absolute-form-empty-path": b"GET http://t?q=1 HTTP/1.1\r\n" + H + b"\r\n",
    "fragment": _get(b"/p?q=1#frag"),
    "upgrade-without-connection-option": _get(b"/u", b"Upgrade: h2c\r\n") + _get(b"/next"),
    "pipeline": _get(b"/1") + _post(b"abc", path=b"/2") + b"HEAD /3 HTTP/1.1\r\n" + H + b"\r\n" + _get(b"/4"),
    "pipeline-chunked-then-get": _chunked(b"1\r\na\r\n0\r\n\r\n") + _get(b"/after"),
    "connection-close-then-request": _get(b"/1", b"Connection: close\r\n") + _get(b"/2"),
    "connection-close-then-garbage": _get(b"/1", b"Connection: close\r\n") + b"GARBAGE\r\n\r\n",
    "http10-then-request": b"GET /old HTTP/1.0\r\n\r\n" + _get(b"/2"),
    "413-body-read-whole": _post(b"abc", path=b"/413"),
    "partial-head": b"GET /p HTTP/1.1\r\nHost: t\r\n",
    "partial-body": b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc",
    # -- limits -----------------------------------------------------------------------------
    "url-too-long": _get(b"/" + b"a" * 9000),
    "too-many-headers": _get(b"/", b"".join(b"X-H%d: v\r\n" % i for i in range(101))),
    "header-bytes-too-many": _get(b"/", b"".join(b"X-Big%d: %s\r\n" % (i, b"v" * 4000) for i in range(9))),
    "413-before-body": b"POST /413 HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000,
    # -- Host, versions, targets, methods ---------------------------------------------------
    "no-host": b"GET / HTTP/1.1\r\n\r\n",
    "two-hosts": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "http10-no-host": b"GET / HTTP/1.0\r\n\r\n",
    "http10-transfer-encoding": b"POST /p HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "http11-version-2": b"GET / HTTP/2.0\r\n" + H + b"\r\n",
    "http-0.9-version": b"GET / HTTP/0.9\r\n" + H + b"\r\n",
    "http-1.2": b"GET / HTTP/1.2\r\n" + H + b"\r\n",
    "no-version": b"GET /\r\n\r\n",
    "lowercase-method": b"get / HTTP/1.1\r\n" + H + b"\r\n",
    "unknown-method": b"FOO / HTTP/1.1\r\n" + H + b"\r\n",
    "asterisk-not-options": b"GET * HTTP/1.1\r\n" + H + b"\r\n",
    "absolute-form-ftp": b"GET ftp://t/f HTTP/1.1\r\n" + H + b"\r\n",
    "authority-form-get": b"GET t:80 HTTP/1.1\r\n" + H + b"\r\n",
    "connect": b"CONNECT t:443 HTTP/1.1\r\nHost: t:443\r\n\r\n",
    "connect-then-request": b"CONNECT t:443 HTTP/1.1\r\nHost: t:443\r\n\r\n" + _get(b"/after"),
    "upgrade-h2c-then-request": _get(b"/u", b"Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n") + _get(b"/next"),
    "upgrade-websocket": _get(b"/ws", b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"),
    "url-space": b"GET /a b HTTP/1.1\r\n" + H + b"\r\n",
    "url-non-ascii": b"GET /\xc3\xa9 HTTP/1.1\r\n" + H + b"\r\n",
    "url-del": b"GET /\x7f HTTP/1.1\r\n" + H + b"\r\n",
    # -- framing and smuggling --------------------------------------------------------------
    "cl-and-te": b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te-and-cl": b"POST /p HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
    "cl-duplicate-same": b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    "cl-duplicate-different": b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
    "cl-list": b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 3, 3\r\n\r\nabc",
    "cl-plus": b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: +3\r\n\r\nabc",
    "cl-minus": b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: -3\r\n\r\nabc",
    "cl-hex": b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 0x3\r\n\r\nabc",
    "cl-space-inside": b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 1 2\r\n\r\nabc",
    "cl-huge": b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999999999999\r\n\r\nabc",
    "te-chunked-identity": _chunked(b"0\r\n\r\n").replace(b"chunked", b"chunked, identity"),
    "te-identity": b"POST /p HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: identity\r\n\r\nabc",
    "te-gzip-chunked": _chunked(b"3\r\nabc\r\n0\r\n\r\n").replace(b"chunked", b"gzip, chunked"),
    "te-uppercase": _chunked(b"3\r\nabc\r\n0\r\n\r\n").replace(b"chunked", b"CHUNKED"),
    "te-xchunked": _chunked(b"0\r\n\r\n").replace(b"chunked", b"xchunked"),
    "te-duplicate": _chunked(b"0\r\n\r\n", b"Transfer-Encoding: chunked\r\n"),
    "te-obs-fold": b"POST /p HTTP/1.1\r\nHost: t\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
    "obs-fold": _get(b"/", b"X-A: a\r\n b\r\n"),
    "bare-lf": b"GET / HTTP/1.1\nHost: t\n\n",
    "bare-lf-in-headers": b"GET / HTTP/1.1\r\nHost: t\nX-A: b\r\n\r\n",
    "bare-cr": b"GET / HTTP/1.1\rHost: t\r\n\r\n",
    "space-before-colon": b"GET / HTTP/1.1\r\nHost : t\r\n\r\n",
    "leading-space-header": b"GET / HTTP/1.1\r\n Host: t\r\n\r\n",
    "nul-in-value": _get(b"/", b"X-A: a\x00b\r\n"),
    "nul-in-name": _get(b"/", b"X-\x00A: b\r\n"),
    "ctl-in-value": _get(b"/", b"X-A: a\x01b\r\n"),
    "del-in-value": _get(b"/", b"X-A: a\x7fb\r\n"),
    "empty-header-name": _get(b"/", b": b\r\n"),
    "chunk-size-invalid": _chunked(b"zz\r\nabc\r\n0\r\n\r\n"),
    "chunk-size-huge": _chunked(b"ffffffffffffffffffff\r\nabc\r\n0\r\n\r\n"),
    "chunk-size-0x": _chunked(b"0x3\r\nabc\r\n0\r\n\r\n"),
    "chunk-size-negative": _chunked(b"-3\r\nabc\r\n0\r\n\r\n"),
    "chunk-size-space": _chunked(b"3 \r\nabc\r\n0\r\n\r\n"),
    "chunk-data-too-long": _chunked(b"3\r\nabcd\r\n0\r\n\r\n"),
    "chunk-missing-crlf": _chunked(b"3\r\nabc0\r\n\r\n"),
    "chunk-bare-lf": _chunked(b"3\nabc\n0\n\n"),
    "chunk-extension-bad": _chunked(b"3;a=\"\x01\"\r\nabc\r\n0\r\n\r\n"),
    # -- pipelines with a bad request after good ones ---------------------------------------
    "pipeline-then-garbage": _get(b"/1") + _get(b"/2") + b"GARBAGE\r\n\r\n",
    "pipeline-then-no-host": _get(b"/1") + b"GET /2 HTTP/1.1\r\n\r\n",
    "pipeline-then-bad-chunk": _get(b"/1") + _chunked(b"zz\r\n"),
    "pipeline-then-long-url": _get(b"/1") + _get(b"/" + b"u" * 9000),
    "post-then-smuggled-cl-te": _post(b"abc")
    + b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
}

# Where ours differs from uvicorn's httptools protocol: case -> (what ours does: statuses,
# then "close" or "open"; why). Ours is always the stricter or the more exact one.
_LIMIT_URL = "RFC 9110 §15.5.15: a target over Limits.max_url_bytes (default 8 KiB, as nginx)"
_LIMIT_FIELDS = "RFC 6585 §5: over Limits.max_headers (100) or Limits.max_header_bytes (32 KiB)"
_EARLY = ("RFC 9110 §10.1.1, RFC 9112 §9.6: answered before the body was read, the connection closes "
          "instead of reading the rest")
_NO_HOST = "RFC 9112 §3.2: a request without exactly one Host MUST get 400 (the 1.0 exception: none)"
_HTTP10_TE = "RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 is faulty framing: 400, close"
_VERSION = "RFC 9110 §15.6.6: HTTP/1.0 and 1.1 only (llhttp parses 0.9 and 2.0 request lines)"
_ASTERISK = "RFC 9112 §3.2.4: the asterisk form is for a server-wide OPTIONS only"
_NOT_OURS = "RFC 9112 §3.2.2, RFC 9110 §7.4: an absolute target must be http(s)"
_CONNECT = "RFC 9110 §9.3.6: not a proxy: 405 with an empty Allow (§10.2.1), as nginx, then close"
_UPGRADE = ("RFC 9110 §7.8: the upgrade is ignored and the request answered; what follows an upgrade "
            "request may not be HTTP/1.1, so the connection closes (uvicorn keeps it open, reads nothing)")
_IN_ORDER = "RFC 9112 §9.3.2: the requests before the bad one are answered first, in order"
_TE_END = "RFC 9112 §6.3: chunked is not the final coding: 400 before the app is called"
_TE_501 = "RFC 9112 §6.1: a transfer coding we do not implement (gzip): 501, not the coded bytes as the body"
VS_UVICORN: dict[str, tuple[str, str]] = {
    "post-chunked-trailer": ("200 open", "RFC 9112 §7.1.2: trailer fields stay out of the header section "
                             "(uvicorn appends them to scope['headers'], a second Host among them)"),
    "absolute-form-empty-path": ("200 open", "RFC 9112 §3.2.2, RFC 9110 §4.2.3: an empty path is '/' "
                                 "(uvicorn fails on it: 400)"),
    "url-too-long": ("414 close", _LIMIT_URL),
    "too-many-headers": ("431 close", _LIMIT_FIELDS),
    "header-bytes-too-many": ("431 close", _LIMIT_FIELDS),
    "413-before-body": ("413 close", _EARLY),
    "no-host": ("400 close", _NO_HOST),
    "two-hosts": ("400 close", _NO_HOST),
    "http10-transfer-encoding": ("400 close", _HTTP10_TE),
    "http11-version-2": ("505 close", _VERSION),
    "http-0.9-version": ("505 close", _VERSION),
    "no-version": ("505 close", _VERSION),
    "asterisk-not-options": ("400 close", _ASTERISK),
    "absolute-form-ftp": ("400 close", _NOT_OURS),
    "connect": ("405 close", _CONNECT + " (uvicorn cannot parse the target: 400)"),
    "connect-then-request": ("405 close", _CONNECT),
    "upgrade-h2c-then-request": ("200 close", _UPGRADE),
    "upgrade-websocket": ("200 close", _UPGRADE),
    "te-identity": ("400 close", _TE_END),
    "te-xchunked": ("400 close", _TE_END),
    "te-gzip-chunked": ("501 close", _TE_501),
    "pipeline-then-garbage": ("200 200 400 close", _IN_ORDER + " (uvicorn sends only the 400)"),
    "pipeline-then-no-host": ("200 400 close", _IN_ORDER + "; " + _NO_HOST),
    "pipeline-then-bad-chunk": ("200 400 close", _IN_ORDER),
    "pipeline-then-long-url": ("200 414 close", _IN_ORDER + "; " + _LIMIT_URL),
    "post-then-smuggled-cl-te": ("200 400 close", _IN_ORDER),
}

# Where ours differs from h11 (through uvicorn's h11 protocol), the same way.
_H11_PATH = "RFC 9112 §3.2.2: path and query come from an absolute target (h11's path is the whole URI)"
_LLHTTP = "llhttp refuses it, as uvicorn does"
VS_H11: dict[str, tuple[str, str]] = {
    "get-leading-crlf": ("200 open", "RFC 9112 §2.2: an empty line before the request line SHOULD be ignored"),
    "absolute-form": ("200 open", _H11_PATH),
    "absolute-form-https-port": ("200 open", _H11_PATH),
    "absolute-form-empty-path": ("200 open", _H11_PATH),
    "fragment": ("200 open", "RFC 9110 §4.2.5: a fragment is never part of the path (h11 keeps '#frag')"),
    "url-too-long": ("414 close", _LIMIT_URL),
    "too-many-headers": ("431 close", _LIMIT_FIELDS),
    "header-bytes-too-many": ("431 close", _LIMIT_FIELDS),
    "413-before-body": ("413 close", _EARLY),
    "http10-transfer-encoding": ("400 close", _HTTP10_TE),
    "http11-version-2": ("505 close", _VERSION),
    "http-0.9-version": ("505 close", _VERSION),
    "http-1.2": ("400 close", "RFC 9112 §2.3 says SHOULD treat 1.2 as 1.1 (h11 does); " + _LLHTTP),
    "no-version": ("505 close", _VERSION + " (h11: 400)"),
    "lowercase-method": ("400 close", "RFC 9110 §9.1: methods are case-sensitive; " + _LLHTTP),
    "unknown-method": ("400 close", "RFC 9110 §9.1 (501 would do too); " + _LLHTTP),
    "asterisk-not-options": ("400 close", _ASTERISK),
    "absolute-form-ftp": ("400 close", _NOT_OURS),
    "authority-form-get": ("400 close", "RFC 9112 §3.2.3: the authority form is for CONNECT only"),
    "connect": ("405 close", _CONNECT + " (h11 switches protocols and the app's answer fails)"),
    "connect-then-request": ("405 close", _CONNECT),
    "upgrade-h2c-then-request": ("200 close", _UPGRADE),
    "upgrade-websocket": ("200 close", _UPGRADE),
    "cl-and-te": ("400 close", "RFC 9112 §6.1: MAY reject Content-Length with Transfer-Encoding (smuggling)"),
    "te-and-cl": ("400 close", "RFC 9112 §6.1, as above"),
    "cl-duplicate-same": ("400 close", "RFC 9110 §8.6: MAY reject repeated Content-Length values"),
    "cl-list": ("400 close", "RFC 9110 §8.6, as above"),
    "te-gzip-chunked": ("501 close", _TE_501 + " (h11: 400)"),
    "te-uppercase": ("200 open", "RFC 9110 §5.5: the value as sent (h11 lower-cases Transfer-Encoding)"),
    "te-obs-fold": ("400 close", "RFC 9112 §5.2: obs-fold MUST be refused or replaced (h11 replaces)"),
    "obs-fold": ("400 close", "RFC 9112 §5.2, as above"),
    "bare-lf": ("400 close", "RFC 9112 §2.2: a bare LF MAY be accepted (h11 does); " + _LLHTTP),
    "bare-lf-in-headers": ("400 close", "RFC 9112 §2.2, as above"),
    "ctl-in-value": ("400 close", "RFC 9110 §5.5: control characters are not field content"),
    "del-in-value": ("400 close", "RFC 9110 §5.5, as above"),
    "chunk-size-huge": ("400 close", "RFC 9112 §7.1: a chunk size we cannot hold (h11 waits for the bytes)"),
    "chunk-size-space": ("400 close", "RFC 9112 §7.1.1: no whitespace after a chunk size without extension"),
    "chunk-bare-lf": ("400 close", "RFC 9112 §7.1: chunk lines end in CRLF (h11 waits)"),
    "chunk-extension-bad": ("400 close", "RFC 9112 §7.1.1: a control character in a chunk extension"),
    "pipeline-then-bad-chunk": ("200 400 close", "a request known to be broken is never handed to the app"),
    "pipeline-then-long-url": ("200 414 close", _LIMIT_URL),
    "post-then-smuggled-cl-te": ("200 400 close", "RFC 9112 §6.1, as cl-and-te"),
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def servers():
    started = {}
    for name, http in PROTOCOLS.items():
        started[name] = await start(name, http)
    yield started
    for server in started.values():
        await stop(server)


def _summary(outcome: Outcome) -> str:
    return " ".join([*map(str, outcome.statuses), "close" if outcome.closed else "open"])


def _check(case: str, ours: Outcome, other: Outcome, table: dict[str, tuple[str, str]], other_name: str) -> None:
    assert not ours.stalled and not ours.trailing, f"{case}: ours {ours.brief()}"
    if case in table:
        expected, _ = table[case]
        assert _summary(ours) == expected, f"{case}: ours {ours.brief()}, listed as {expected!r}"
        assert ours != other, f"{case}: listed as a difference from {other_name}, but both did {ours.brief()}"
    else:
        assert ours == other, f"{case}: ours {ours.brief()}\n{other_name} {other.brief()}"


@pytest.mark.parametrize("case", list(CORPUS))
async def test_ours_matches_uvicorn_and_h11_or_the_difference_is_listed(servers: dict[str, Server], case: str):
    data = CORPUS[case]
    ours = await servers["ours"].exchange([data])
    theirs = await servers["uvicorn"].exchange([data])
    h11 = await servers["h11"].exchange([data])
    _check(case, ours, theirs, VS_UVICORN, "uvicorn")
    _check(case, ours, h11, VS_H11, "h11")


# -- every split of a few short requests --------------------------------------------------

SPLIT_CASES = ["get", "post-chunked", "post-expect-100", "pipeline-chunked-then-get", "cl-and-te", "no-host",
               "pipeline-then-bad-chunk"]


@pytest.mark.parametrize("case", SPLIT_CASES)
async def test_a_request_split_at_any_byte_gives_the_same_outcome(servers: dict[str, Server], case: str):
    data = CORPUS[case]
    # uvicorn's answer to a bad request after good ones depends on the split (VS_UVICORN)
    for name in ("ours",) if case in VS_UVICORN else ("ours", "uvicorn"):
        server = servers[name]
        whole = (await server.exchange([data])).completed()
        for i in range(1, len(data)):
            split = (await server.exchange([data[:i], data[i:]])).completed()
            assert split == whole, f"{name}, {case} split at {i} ({data[:i][-10:]!r}): {split.brief()}, whole: {whole.brief()}"


# -- mutations (hypothesis) ---------------------------------------------------------------

# Header lines that change how a request is framed or handled, inserted at random.
_LINES = [b"Transfer-Encoding: chunked", b"Content-Length: 5", b"Content-Length: 0", b"Host: x",
          b"Connection: close", b"Connection: keep-alive", b"Expect: 100-continue", b"Upgrade: h2c",
          b"Connection: upgrade", b"X-A: \x00", b" folded", b"Content-Length: +1", b"Transfer-Encoding: identity",
          b"Transfer-Encoding: gzip, chunked", b"X-Empty:", b"Content-Length: 3\r\nContent-Length: 3"]
_BYTES = b"\r\n\x00 :\t;x0-9aA#?/%\x7f\xff"


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    data = draw(st.sampled_from(list(CORPUS.values())))
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["header", "case", "byte", "delete", "twice"]))
        if kind == "twice":
            data = data + data
            continue
        if kind == "header":
            ends = [i + 2 for i in range(len(data) - 1) if data[i:i + 2] == b"\r\n"] or [len(data)]
            at = draw(st.sampled_from(ends))
            data = data[:at] + draw(st.sampled_from(_LINES)) + b"\r\n" + data[at:]
            continue
        if not data:
            continue
        at = draw(st.integers(0, len(data) - 1))
        if kind == "case":
            data = data[:at] + data[at:at + 1].swapcase() + data[at + 1:]
        elif kind == "byte":
            data = data[:at] + bytes([draw(st.sampled_from(_BYTES))]) + data[at + 1:]
        else:
            data = data[:at] + data[at + 1:]
    return data[:20000]


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts} - {0, len(data)})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def _compatible(mine: Seen, other: Seen) -> bool:
    """The same request (uvicorn appends trailer fields to the headers, we do not: VS_UVICORN)."""
    return ((mine.method, mine.path, mine.query) == (other.method, other.path, other.query)
            and other.headers[:len(mine.headers)] == mine.headers
            and (not mine.complete or (other.complete and other.body == mine.body)))


_EMPTY_ABSOLUTE_PATH = re.compile(rb"(?i)^\S* https?://[^/?\s]*[?\s]", re.MULTILINE)


def _lines(data: bytes) -> list[bytes]:
    return [line + b"\n" for line in data.split(b"\n")[:-1]] + ([data.rsplit(b"\n", 1)[-1]] if not data.endswith(b"\n") else [])


def _no_looser(ours: Outcome, theirs: Outcome) -> None:
    """Every request our app saw, uvicorn's app saw too, the same (``theirs``: line by line,
    each handled before the next, since uvicorn drops requests queued before a bad one)."""
    for i, mine in enumerate(ours.seen):
        assert i < len(theirs.seen) and _compatible(mine, theirs.seen[i]), \
            f"request {i}: ours {ours.brief()}\nuvicorn {theirs.brief()}"


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=_mutated(), cuts=st.lists(st.integers(1, 400), max_size=3))
async def test_mutated_requests_are_never_looser_than_uvicorn_nor_split_dependent(servers, data, cuts):
    ours = await servers["ours"].exchange([data])
    assert not ours.stalled and not ours.trailing and 500 not in ours.statuses, ours.brief()
    if not _EMPTY_ABSOLUTE_PATH.search(data):  # uvicorn fails on those (VS_UVICORN)
        _no_looser(ours, await servers["uvicorn"].exchange(_lines(data), settle_each=True))
    split = (await servers["ours"].exchange(_split(data, cuts))).completed()
    whole = ours.completed()
    if b"/413" in data:  # whether the app answers before the body is all there depends on the split
        split, whole = split.statuses, whole.statuses
    assert split == whole, f"split {cuts}: {split}, whole: {whole}"
