"""Differential test of the data path (issue 14, "Fidelity and safety").

Each case is a raw request (bytes, sent over a socket) and the raw answer a scripted
upstream gives to it. The request is sent once straight to the upstream and once
through the proxy (one upstream, one catch-all route, no cache, one try: each request
reaches the upstream once). Then, in both directions, what arrives through the proxy
must equal what arrives directly, byte for byte, except for the changes
docs/configuration.md ("Headers") documents. Only these are normalised away:

What the upstream receives (the request):

- Field lines are compared as (name as sent, field value): the optional whitespace
  around a value is not part of it (RFC 9112 section 5), so ``X:  v `` and ``X: v``
  are the same line. Names keep their case; order and repeats are compared as sent.
- The HTTP-version of the request line is the proxy's own (``HTTP/1.1``); the method
  and the target are compared byte for byte.
- Hop-by-hop fields (``Connection`` and every name it lists, ``Keep-Alive``,
  ``Proxy-Connection``, ``TE``, ``Trailer``, ``Transfer-Encoding``, ``Upgrade``,
  ``Proxy-Authenticate``, ``Proxy-Authorization``) sent by the client are dropped: they
  must not arrive through the proxy.
- Framing is re-done: the client's ``Content-Length``/``Transfer-Encoding`` are
  dropped; through the proxy exactly one of them frames the body (``Content-Length``
  equal to the body's length, or ``chunked``), and the de-chunked bodies must be equal.
  Trailer fields of a chunked upload are dropped with the chunked coding (RFC 9112
  section 7.1.2 lets a recipient that removes it discard them).
- ``Host`` is the upstream URL's host and port (the client's with ``preserve_host``),
  on the first field line.
- ``Expect: 100-continue`` is the proxy's to answer: it sends the client ``100
  Continue`` itself (an interim answer the upstream did not send) and does not forward
  the expectation, since it reads the body before it goes upstream.
- ``Via``: the client's lines, then ``<client version> failover-proxy``, on one line.
- ``X-Forwarded-For``: the client's values, then the client address, on one line;
  ``X-Forwarded-Proto: http``; ``X-Forwarded-Host``: the client's ``Host`` (a client's
  own ``-Proto``/``-Host`` are replaced).
- ``X-Request-Id`` is added when the client sent none (one the client sent stays where
  it was).

What the client receives (the answer):

- Field lines as above; the status line's HTTP-version is the proxy's (``HTTP/1.1``),
  the status code and reason phrase are compared byte for byte.
- Interim ``1xx`` answers (``103 Early Hints``) are not relayed: the client gets the
  final answer only (and the proxy's own ``100 Continue`` to a request that expects it).
- The upstream's hop-by-hop fields are dropped, as above; framing is re-done (a
  close-delimited or chunked answer may arrive with ``Content-Length`` or chunked;
  to ``HEAD`` and for ``304`` the upstream's ``Content-Length`` is kept; ``204`` has
  none; a streamed answer of unknown length to an HTTP/1.0 client ends with the
  close); ``Connection: close``/``keep-alive`` of the proxy's own may be added; the
  bodies (de-chunked, trailers dropped) must be equal.
- ``Via``: the upstream's lines, then ``<upstream's version> failover-proxy`` (the
  protocol of the message the proxy received, RFC 9110 section 7.6.3).
- ``X-Failover-Source: primary`` and ``X-Failover-Health: healthy`` are added (and no
  ``Proxy-Status``: no try failed).
- ``Date`` is added only when the upstream sent none; one it sent is kept as sent.
  Nothing else is added: no ``Server``, no ``Content-Type``.
"""

from __future__ import annotations

import asyncio
import email.utils
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from tests.conftest import LOOPBACK, RawUpstream, route

Fields = list[tuple[bytes, bytes]]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)
FRAMING = frozenset({b"content-length", b"transfer-encoding"})
REWRITTEN_UP = frozenset(
    {b"host", b"via", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"}
)
REWRITTEN_DOWN = frozenset({b"via"})
MIB = 1024 * 1024
CLIENT_ADDRESS = b"127.0.0.1"
READ_LIMIT = 256 * 1024


# --- messages as bytes ---------------------------------------------------------------


@dataclass
class Message:
    """One request or answer as it arrived: start line, field lines, body (de-chunked)."""

    start: bytes
    fields: Fields
    body: bytes = b""
    chunked: bool = False
    trailers: Fields = field(default_factory=list)
    interim: list[bytes] = field(default_factory=list)  # 1xx heads before an answer


def parse_head(raw: bytes) -> tuple[bytes, Fields]:
    lines = raw.removesuffix(b"\r\n\r\n").split(b"\r\n")
    fields: Fields = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        assert colon and name and name == name.strip(), f"not a field line: {line!r}"
        fields.append((name, value.strip(b" \t")))
    return lines[0], fields


def values(fields: Fields, name: bytes) -> list[bytes]:
    return [value for key, value in fields if key.lower() == name]


def take(fields: Fields, name: bytes) -> list[bytes]:
    """Remove every line named ``name`` (any case) from ``fields``; their values."""
    taken = values(fields, name)
    fields[:] = [(key, value) for key, value in fields if key.lower() != name]
    return taken


def connection_listed(fields: Fields) -> set[bytes]:
    return {
        token.strip().lower()
        for value in values(fields, b"connection")
        for token in value.split(b",")
    }


async def dechunk(reader: asyncio.StreamReader) -> tuple[bytes, Fields]:
    body = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
        if size == 0:
            break
        body += await reader.readexactly(size)
        assert await reader.readexactly(2) == b"\r\n"
    trailers: Fields = []
    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
        name, _, value = line[:-2].partition(b":")
        trailers.append((name, value.strip(b" \t")))
    return bytes(body), trailers


async def read_body(reader: asyncio.StreamReader, message: Message, *, to_close: bool) -> None:
    """The body by its framing; with neither, up to the close (``to_close``) or none."""
    if values(message.fields, b"transfer-encoding"):
        message.chunked = True
        message.body, message.trailers = await dechunk(reader)
    elif lengths := values(message.fields, b"content-length"):
        message.body = await reader.readexactly(int(lengths[0]))
    elif to_close:
        message.body = await reader.read(-1)


# --- the scripted upstream and the client ---------------------------------------------


class ScriptedUpstream:
    """Records every request it gets (head and de-chunked body) and answers each with
    the same scripted bytes; closes after it when the answer is close-delimited."""

    def __init__(self, answer: bytes, close_after: bool) -> None:
        self.answer = answer
        self.close_after = close_after
        self.received: list[Message] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            request = Message(*parse_head(head))
            await read_body(reader, request, to_close=False)
            self.received.append(request)
            writer.write(self.answer)
            await writer.drain()
            if self.close_after:
                return


async def send(port: int, request: bytes, method: bytes) -> Message:
    """One request on a new connection; the final answer, with the 1xx before it."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port, limit=READ_LIMIT)
    try:
        writer.write(request)
        interim = []
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            if not 100 <= status < 200:
                break
            interim.append(head)
        answer = Message(*parse_head(head), interim=interim)
        if method != b"HEAD" and status not in (204, 304):
            await read_body(reader, answer, to_close=True)
        return answer
    finally:
        writer.close()


# --- the corpus ----------------------------------------------------------------------


def req(start: bytes, *lines: bytes, body: bytes = b"") -> bytes:
    return start + b"\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n" + body


def chunked(*pieces: bytes, trailers: bytes = b"") -> bytes:
    encoded = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(piece), piece) for piece in pieces)
    return encoded + b"0\r\n" + trailers + b"\r\n"


HOST = b"Host: app.example"
GET = req(b"GET /answer HTTP/1.1", HOST)
HEAD = req(b"HEAD /answer HTTP/1.1", HOST)
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
LARGE = bytes(range(256)) * (4 * 1024)  # 1 MiB, every byte value
BIG_CHUNKS = [LARGE[i : i + 100_000] for i in range(0, len(LARGE), 100_000)] + [b"tail"]
OBS = b"caf\xe9 \x85\xa0 \xc3\xa9 \xff"  # Latin-1, NEL, NBSP, raw UTF-8, 0xFF


@dataclass(frozen=True)
class Case:
    request: bytes
    answer: bytes = OK
    close_after: bool = False  # the answer is close-delimited
    preserve_host: bool = False


REQUESTS = {
    "plain-get": Case(GET),
    "percent-encodings": Case(
        req(b"GET /caf%c3%a9/%7E/%7e/%41%2D?q=%e2%82%ac&sp=a+b&eq=%3D&t=%7E HTTP/1.1", HOST)
    ),
    "odd-valid-target": Case(
        req(b"GET /odd/!$&'()*+,;=:@-._~/end?k=v/?x&&=&flag&a=1&a=2 HTTP/1.1", HOST)
    ),
    "empty-query": Case(req(b"GET /p? HTTP/1.1", HOST)),
    "long-target": Case(req(b"GET /" + b"seg/" * 500 + b"?" + b"k=v&" * 200 + b" HTTP/1.1", HOST)),
    "header-case-and-order": Case(
        req(
            b"GET /h HTTP/1.1",
            b"x-lower: 1",
            HOST,
            b"ACCEPT: */*",
            b"X-MiXeD-CaSe: Value With Spaces",
            b"accept-language: fr-CH, fr;q=0.9",
            b"User-Agent: differential/1.0",
        )
    ),
    "repeated-headers": Case(
        req(
            b"GET /r HTTP/1.1",
            HOST,
            b"X-Dup: 1",
            b"Cookie: a=1",
            b"X-Other: between",
            b"x-dup: 2",
            b"Cookie: b=2",
            b"X-DUP: 3, 4",
        )
    ),
    "obs-text": Case(req(b"GET /o HTTP/1.1", HOST, b"X-Obs: " + OBS, b"X-Utf8: \xe2\x82\xac")),
    "odd-valid-values": Case(
        req(
            b"GET /v HTTP/1.1",
            HOST,
            b"X-Tab: a\tb",
            b"X-Pad:   padded  \t",
            b"X-Empty:",
            b'X-Punct: "q" \\ {}|~`!#$%&\'*+-.^_ ()<>@,;:/[]?=',
            b"X-Long: " + b"v" * 4000,
            b'If-None-Match: W/"abc", "def"',
        )
    ),
    "hop-by-hop": Case(
        req(
            b"GET /hop HTTP/1.1",
            HOST,
            b"Connection: keep-alive, X-Private",
            b"X-Private: secret",
            b"Keep-Alive: timeout=5",
            b"TE: trailers",
            b"Trailer: X-T",
            b"Proxy-Authorization: Basic dXNlcjpwYXNz",
            b"Proxy-Connection: keep-alive",
            b"X-Kept: yes",
        )
    ),
    "forwarding-headers": Case(
        req(
            b"GET /fwd HTTP/1.1",
            HOST,
            b"X-Forwarded-For: 203.0.113.7",
            b"Via: 1.0 edge",
            b"X-Forwarded-Proto: https",
            b"X-Forwarded-Host: evil.example",
            b"X-Request-Id: client-chosen-id",
            b"Via: 1.1 lb",
        )
    ),
    "preserve-host": Case(req(b"GET /ph HTTP/1.1", HOST, b"X-A: b"), preserve_host=True),
    "http-1.0-request": Case(req(b"GET /old HTTP/1.0", b"X-A: b")),
    "post-small-body": Case(
        req(
            b"POST /form HTTP/1.1",
            HOST,
            b"Content-Type: application/x-www-form-urlencoded",
            b"Content-Length: 11",
            body=b"a=1&b=%C3%A",
        )
    ),
    "post-empty-body": Case(req(b"POST /empty HTTP/1.1", HOST, b"Content-Length: 0")),
    "get-content-length-0": Case(req(b"GET /zero HTTP/1.1", HOST, b"Content-Length: 0")),
    "put-1mib": Case(
        req(b"PUT /big HTTP/1.1", HOST, b"Content-Length: %d" % len(LARGE), body=LARGE)
    ),
    "put-over-1mib-streams": Case(
        req(b"PUT /big HTTP/1.1", HOST, b"Content-Length: %d" % (MIB + 9), body=LARGE + b"9" * 9)
    ),
    "chunked-upload": Case(
        req(
            b"POST /up HTTP/1.1",
            HOST,
            b"Transfer-Encoding: chunked",
            b"Content-Type: text/plain",
            body=chunked(b"hello ", b"", b"chunked ", b"world"),
        )
    ),
    "chunked-upload-trailers": Case(
        req(
            b"POST /up HTTP/1.1",
            HOST,
            b"Transfer-Encoding: chunked",
            b"Trailer: X-Checksum",
            body=chunked(b"abc", trailers=b"X-Checksum: 900150983cd24fb0\r\n"),
        )
    ),
    "chunked-upload-over-1mib": Case(
        req(b"POST /up HTTP/1.1", HOST, b"Transfer-Encoding: chunked", body=chunked(*BIG_CHUNKS))
    ),
    "expect-100-continue": Case(
        req(
            b"POST /ex HTTP/1.1",
            HOST,
            b"Expect: 100-continue",
            b"Content-Length: 4",
            b"X-After: expect",
            body=b"body",
        )
    ),
    "head": Case(HEAD, b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"),
    "delete": Case(req(b"DELETE /item/7?soft=1 HTTP/1.1", HOST, b"Authorization: Bearer t")),
    "options": Case(req(b"OPTIONS /any HTTP/1.1", HOST, b"Origin: https://a.example")),
}


def answer(status_line: bytes, *lines: bytes, body: bytes = b"") -> bytes:
    return req(status_line, *lines, body=body)


DATE = b"Date: Tue, 15 Nov 1994 08:12:31 GMT"
ANSWERS = {
    "200-content-length": Case(
        GET,
        answer(
            b"HTTP/1.1 200 OK",
            DATE,
            b"server: upstream/2.1",
            b"Content-Type: text/plain; charset=utf-8",
            b"Content-Length: 5",
            b"set-cookie: a=1; Path=/",
            b"X-MiXeD: One",
            b"Set-Cookie: b=2; HttpOnly",
            b"X-Obs: " + OBS,
            b"x-mixed: two",
            body=b"hello",
        ),
    ),
    "200-chunked": Case(
        GET,
        answer(
            b"HTTP/1.1 200 OK",
            DATE,
            b"Transfer-Encoding: chunked",
            b"Content-Type: application/json",
            body=chunked(b'{"a":', b"", b" 1}"),
        ),
    ),
    "200-chunked-trailers": Case(
        GET,
        answer(
            b"HTTP/1.1 200 OK",
            DATE,
            b"Transfer-Encoding: chunked",
            b"Trailer: X-Digest",
            body=chunked(b"abc", trailers=b"X-Digest: sha-256=:x:\r\n"),
        ),
    ),
    "200-close-delimited-http10": Case(
        GET,
        answer(b"HTTP/1.0 200 OK", DATE, b"Content-Type: text/plain", body=b"until the close"),
        close_after=True,
    ),
    "200-close-delimited-1mib": Case(
        GET, answer(b"HTTP/1.1 200 OK", DATE, b"Connection: close", body=LARGE), close_after=True
    ),
    "200-content-length-1mib": Case(
        GET, answer(b"HTTP/1.1 200 OK", DATE, b"Content-Length: %d" % MIB, body=LARGE)
    ),
    "200-chunked-1mib": Case(
        GET,
        answer(b"HTTP/1.1 200 OK", DATE, b"Transfer-Encoding: chunked", body=chunked(*BIG_CHUNKS)),
    ),
    "http-1.0-client-chunked-1mib": Case(
        req(b"GET /answer HTTP/1.0", HOST),
        answer(b"HTTP/1.1 200 OK", DATE, b"Transfer-Encoding: chunked", body=chunked(*BIG_CHUNKS)),
    ),
    "200-empty": Case(GET, answer(b"HTTP/1.1 200 OK", DATE, b"Content-Length: 0")),
    "204": Case(GET, answer(b"HTTP/1.1 204 No Content", DATE, b"X-Why: nothing")),
    "304": Case(
        req(b"GET /answer HTTP/1.1", HOST, b'If-None-Match: "v1"'),
        answer(b"HTTP/1.1 304 Not Modified", DATE, b'ETag: "v1"', b"Cache-Control: max-age=60"),
    ),
    "304-content-length": Case(
        req(b"GET /answer HTTP/1.1", HOST, b'If-None-Match: "v1"'),
        answer(b"HTTP/1.1 304 Not Modified", DATE, b'ETag: "v1"', b"Content-Length: 1234"),
    ),
    "head-content-length": Case(
        HEAD, answer(b"HTTP/1.1 200 OK", DATE, b"Content-Type: text/html", b"Content-Length: 1234")
    ),
    "103-then-200": Case(
        GET,
        answer(b"HTTP/1.1 103 Early Hints", b"Link: </style.css>; rel=preload; as=style")
        + answer(b"HTTP/1.1 200 OK", DATE, b"Link: </style.css>", b"Content-Length: 2", body=b"ok"),
    ),
    "418-no-content-type": Case(
        GET, answer(b"HTTP/1.1 418 I'm a teapot", DATE, b"Content-Length: 6", body=b"teapot")
    ),
    "odd-reason-phrase": Case(
        GET, answer(b"HTTP/1.1 299 Fine \xe9 By Me", DATE, b"Content-Length: 2", body=b"ok")
    ),
    "without-date": Case(
        GET, answer(b"HTTP/1.1 200 OK", b"Server: upstream/2.1", b"Content-Length: 2", body=b"ok")
    ),
    "with-date-no-server": Case(
        GET,
        answer(
            b"HTTP/1.1 200 OK",
            b"date: Sun, 06 Nov 1994 08:49:37 GMT",
            b"Content-Length: 2",
            body=b"ok",
        ),
    ),
    "hop-by-hop-answer": Case(
        GET,
        answer(
            b"HTTP/1.1 200 OK",
            DATE,
            b"Connection: keep-alive, X-Up-Private",
            b"X-Up-Private: secret",
            b"Keep-Alive: timeout=5",
            b"Proxy-Authenticate: Basic",
            b"Upgrade-Insecure-Requests: 1",
            b"Via: 1.0 app",
            b"Content-Length: 2",
            body=b"ok",
        ),
    ),
}


# --- the comparison ------------------------------------------------------------------


def expected_request(direct: Message) -> Fields:
    """What the upstream should get through the proxy, short of the lines it adds."""
    listed = connection_listed(direct.fields)
    drop = HOP_BY_HOP | FRAMING | REWRITTEN_UP | listed
    return [(name, value) for name, value in direct.fields if name.lower() not in drop]


def check_framing(
    fields: Fields, message: Message, *, keep_length: bytes | None = None, to_close: bool = False
) -> None:
    """One framing, the proxy's own, that fits the body; ``to_close``: it may be none
    (a body up to the close, to an HTTP/1.0 client)."""
    lengths, codings = take(fields, b"content-length"), take(fields, b"transfer-encoding")
    if message.chunked:
        assert codings == [b"chunked"] and not lengths
    elif keep_length is not None:
        assert lengths == [keep_length] and not codings
    else:
        assert not codings and lengths in ([b"%d" % len(message.body)], [])
        assert lengths or not message.body or to_close


def check_request(direct: Message, proxied: Message, case: Case, upstream_host: bytes) -> None:
    d_method_target, _, d_version = direct.start.rpartition(b" ")
    p_method_target, _, p_version = proxied.start.rpartition(b" ")
    assert p_method_target == d_method_target
    assert p_version == b"HTTP/1.1"
    client = direct.fields
    fields = list(proxied.fields)
    client_host = values(client, b"host")
    assert fields[0][0] == b"Host"  # first, as a client sends it (RFC 9112 section 3.2)
    assert take(fields, b"host") == (client_host if case.preserve_host else [upstream_host])
    xff = [*values(client, b"x-forwarded-for"), CLIENT_ADDRESS]
    assert take(fields, b"x-forwarded-for") == [b", ".join(xff)]
    assert take(fields, b"x-forwarded-proto") == [b"http"]
    assert take(fields, b"x-forwarded-host") == client_host
    hop = d_version.removeprefix(b"HTTP/") + b" failover-proxy"
    assert take(fields, b"via") == [b", ".join([*values(client, b"via"), hop])]
    if not values(client, b"x-request-id"):
        assert len(take(fields, b"x-request-id")) == 1
    check_framing(fields, proxied)
    expected = expected_request(direct)
    if values(client, b"expect") == [b"100-continue"]:
        expected = [(name, value) for name, value in expected if name.lower() != b"expect"]
    assert fields == expected
    assert proxied.body == direct.body
    assert not proxied.trailers


def check_answer(direct: Message, proxied: Message, request: bytes) -> None:
    method = request.split(b" ", 1)[0]
    assert proxied.start.split(b" ", 1) == [b"HTTP/1.1", direct.start.split(b" ", 1)[1]]
    expects = b"\r\nexpect: 100-continue\r\n" in request.split(b"\r\n\r\n")[0].lower()
    assert proxied.interim == ([b"HTTP/1.1 100 Continue\r\n\r\n"] if expects else [])
    fields = list(proxied.fields)
    hop = direct.start.split(b" ", 1)[0].removeprefix(b"HTTP/") + b" failover-proxy"
    assert take(fields, b"via") == [b", ".join([*values(direct.fields, b"via"), hop])]
    assert take(fields, b"x-failover-source") == [b"primary"]
    assert take(fields, b"x-failover-health") == [b"healthy"]
    if not values(direct.fields, b"date"):
        (date,) = take(fields, b"date")
        assert email.utils.parsedate_to_datetime(date.decode()).tzinfo is not None
    assert set(take(fields, b"connection")) <= {b"close", b"keep-alive"}
    status = int(direct.start.split(b" ")[1])
    keep_length: bytes | None = None
    if method == b"HEAD" or status == 304:
        keep_length = next(iter(values(direct.fields, b"content-length")), None)
    if status == 204 or (keep_length is None and (method == b"HEAD" or status == 304)):
        assert not take(fields, b"content-length") and not take(fields, b"transfer-encoding")
    else:
        http10 = request.split(b"\r\n", 1)[0].endswith(b"HTTP/1.0")
        check_framing(fields, proxied, keep_length=keep_length, to_close=http10)
    listed = connection_listed(direct.fields)
    drop = HOP_BY_HOP | FRAMING | REWRITTEN_DOWN | listed
    assert fields == [(name, value) for name, value in direct.fields if name.lower() not in drop]
    assert proxied.body == direct.body
    assert not proxied.trailers


StartProxy = Callable[..., Awaitable[str]]
StartRaw = Callable[..., Awaitable[RawUpstream]]


@pytest.mark.parametrize(
    "case", [pytest.param(case, id=name) for name, case in {**REQUESTS, **ANSWERS}.items()]
)
async def test_through_the_proxy_as_direct_but_for_the_documented_changes(
    case: Case, raw_upstream: StartRaw, start_proxy: StartProxy
) -> None:
    upstream = ScriptedUpstream(case.answer, case.close_after)
    raw = await raw_upstream(upstream.serve)
    upstream_port = int(raw.url.rsplit(":", 1)[1])
    config = {
        "upstreams": {"primary": {"url": raw.url, "preserve_host": case.preserve_host}},
        "routes": [route(upstreams=("primary",))],
    }
    proxy_port = int((await start_proxy(config)).rsplit(":", 1)[1])
    method = case.request.split(b" ", 1)[0]

    async with asyncio.timeout(5):
        direct_answer = await send(upstream_port, case.request, method)
        (direct_request,) = upstream.received
        upstream.received.clear()
        proxied_answer = await send(proxy_port, case.request, method)
        (proxied_request,) = upstream.received

    upstream_host = raw.url.removeprefix("http://").encode()
    check_request(direct_request, proxied_request, case, upstream_host)
    check_answer(direct_answer, proxied_answer, case.request)
