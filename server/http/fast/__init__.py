"""The HTTP speed layer: a fast HTTP/1.1 server for an unchanged ``tornado.web.Application``,
and the replay of unchanged GET answers.

Modules: server.py (listening, drain), connection.py (one connection: request sequencing),
parser.py (request heads), framing.py (response heads and bodies), flow.py (buffering both
ways), deadlines.py (timeouts), headers.py (tornado's header layout), application.py (the
gateway's Application: route memo, replay hook) and replay.py (answers offered by handlers). The
connection modules know nothing of the gateway (an import-linter contract); only replay.py and
application.py meet it, through server/http/base.py. Nothing below knows about replays: handlers
offer what may be replayed under the cache's `Freshness` (`ApiHandler.offer_replay`).

Why this exists
---------------
Tornado's ``HTTP1Connection`` parses requests in pure Python on top of
``IOStream`` and runs one coroutine per request. For small JSON requests that
overhead, not the handler, is what bounds the gateway's throughput. This
module replaces only the transport layer: an ``asyncio.Protocol`` that parses
with ``httptools`` (llhttp, in C) and implements ``tornado.httputil.HTTPConnection``
so that ``tornado.web.Application`` -- routing, ``RequestHandler``, error
pages, ``Date``/``Server``/``Etag`` headers -- works unchanged. Parsing is
driven from ``data_received`` without any per-request task, futures handed
back by ``write()`` are one shared, already-completed future unless the
socket is backed up, and response heads are built with a single join and
handed straight to ``transport.write``.

Behaviour follows ``tornado.http1connection``: keep-alive (HTTP/1.1 by
default, HTTP/1.0 with ``Connection: keep-alive``), pipelining (requests
are answered strictly in order; requests parsed ahead are buffered and
reading pauses once too much is buffered), chunked request bodies (the
decoded body reaches the delegate), ``Expect: 100-continue``, ``Content-Length``
or chunked response framing (HEAD, 204 and 304 responses carry no body),
``on_connection_close`` / the handler's close callback when the client goes
away, and write flow control (``write()`` futures resolve only once the
transport buffer has drained below its high-water mark).

What it refuses
---------------
Every refusal is answered with ``application/problem+json`` and
``Connection: close``, after which the connection is closed.

* 400 -- anything llhttp rejects in strict mode (bare LF line endings,
  obs-fold, invalid header names or values, bad chunk framing, methods
  llhttp does not know) and the request-smuggling shapes that it does not
  reject on its own or that we refuse on principle: ``Content-Length``
  together with ``Transfer-Encoding``; more than one ``Content-Length``
  header, even with equal values; a ``Content-Length`` that is not plain
  digits; ``Transfer-Encoding`` other than exactly one header whose value is
  the single token ``chunked`` (case-insensitive, no list, no stray
  whitespace); ``Transfer-Encoding`` on HTTP/1.0; an ``Upgrade`` request
  that carries a body; a request the application rejects with
  ``HTTPInputError`` (e.g. a missing or repeated ``Host``).
* 413 -- a body larger than ``max_body_size`` (checked against
  ``Content-Length`` before any body is read and against the running total of
  a chunked body).
* 431 -- a request line plus headers larger than ``max_header_size``.
* 505 -- protocol versions other than HTTP/1.0 and HTTP/1.1.

Connections are closed without an answer when the headers take longer than
``header_timeout``, the body longer than ``body_timeout``, a keep-alive
connection stays idle for ``idle_connection_timeout``, or a client stops
reading a response for ``idle_connection_timeout``; a new connection that
has not begun a request is held to ``header_timeout``. Deadlines are checked by
one periodic sweep per server (deadlines.py).

WebSockets: a request with ``Upgrade: websocket`` is the last one parsed on
its connection (what follows it is not HTTP). Answered with ``101``, the head
is written as the application built it and ``detach()`` hands the socket to
a ``tornado.iostream.IOStream`` (tornado's ``WebSocketHandler`` calls it right
after the 101): the socket is duplicated, the asyncio transport closes its own
descriptor, and the duplicate carries the connection on. Answered otherwise,
the connection closes after the answer. Other upgrades (``h2c``) are served as
ordinary requests and the connection stays HTTP/1.1.

Not supported: ``X-Forwarded-For``/xheaders (the application handles trusted
proxies), ``Content-Encoding: gzip`` request decompression, TLS.
"""

from server.http.fast.connection import FastHTTPConnection
from server.http.fast.server import FastHTTPServer

__all__ = ["FastHTTPConnection", "FastHTTPServer"]
