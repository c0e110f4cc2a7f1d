"""A gunicorn worker that reads every request completely before a thread sees it.

Gunicorn's ``gthread`` worker hands a connection to a pool thread as soon as its first byte
arrives; the thread then parses the headers and Flask reads the body lazily inside the view,
with blocking reads and no time limit. A client that trickles an upload (a byte now and then:
a slow-loris attack, or just a very bad network) therefore pins one of the few threads for as
long as it likes, and a handful of them hang the service, ``/healthz`` included.

:class:`BufferingThreadWorker` is ``gthread`` with the reading moved into its event loop, the
way a buffering proxy (nginx, App Engine's front end) works:

* The loop reads each request with non-blocking ``recv`` into memory until its header
  section and its whole body (``Content-Length`` or chunked) are there, then queues it for
  the thread pool, whose parser reads only from that buffer. Waiting for bytes costs a
  socket and a buffer, never a thread, so the threads (and the inference slots behind them)
  only ever run complete requests.
* Deadline: a request must arrive completely within ``REQUEST_READ_TIMEOUT`` seconds
  (default 30), counted from the accept (new connection) or from its first byte (a
  kept-alive connection; the idle gap before it is gunicorn's ``keepalive``). It is a
  total deadline, not an idle timeout, which a byte every few seconds would defeat. Past it
  the client gets ``408 {"error": {"code": "request_timeout", ...}}`` and the connection
  is closed; a connection that never sent a byte is just closed.
* Memory: request bytes held by one worker (being received, queued or being served) are
  bounded by ``REQUEST_BUFFER_MB`` (default 64, at least ``MAX_UPLOAD_MB`` plus headers):
  when the total is reached the loop stops reading bodies until requests finish (TCP flow
  control holds the senders back; their deadline keeps running). A header section is at
  most 64 KiB (else 431), a body at most ``MAX_UPLOAD_MB`` (a larger declared
  ``Content-Length`` goes straight to the app, which answers 413 without reading it, and
  the connection is closed; chunks adding up to more get 413 from the loop). Open connections are capped by gunicorn's
  ``worker_connections``.
* ``GET``/``HEAD`` ``/healthz`` and ``/readyz`` run on two threads of their own, so probes
  answer even while every pool thread waits for an inference slot.
* Closing a connection "gracefully" (FIN, then discard what the client still sends, at most
  2 s / 64 KiB) happens in the loop without blocking it; stock ``gthread`` does it on the
  loop thread with a blocking 2 s read, which a trickling client turns into a 2 s stall of
  the whole worker.
* A safety net for the thread phase: each dispatched socket gets ``SO_RCVTIMEO`` and
  ``SO_SNDTIMEO`` of ``REQUEST_READ_TIMEOUT``, so a thread can never block on one socket
  operation longer than that (e.g. a client that does not read its response).

TLS and HTTP/2-prior-knowledge connections (neither is configured here) are served exactly
as by ``gthread``. This module imports only the standard library and gunicorn:
``gunicorn.conf.py`` loads it in the master, which must not import the app (and through it
NumPy or TensorFlow).
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import socket
import struct
import time
from collections import deque
from concurrent import futures
from functools import partial

from gunicorn.http.unreader import SocketUnreader
from gunicorn.http2 import negotiation
from gunicorn.workers.gthread import ThreadWorker

access_log = logging.getLogger("cxr.access")

DEFAULT_READ_TIMEOUT_S = 30.0
DEFAULT_BUFFER_MB = 64.0
MAX_HEADER_BYTES = 64 * 1024
MAX_CHUNK_LINE = 8192
RECV_SIZE = 256 * 1024
RECV_PER_EVENT = 4  # at most this many recv() per readable event: fair to other connections
LINGER_S = 2.0  # graceful close: how long the client's remaining bytes are discarded
LINGER_MAX_BYTES = 64 * 1024
PROBE_THREADS = 2
PROBE_PATHS = ("/healthz", "/readyz")

NEED_MORE, COMPLETE, HANDOFF = "need_more", "complete", "handoff"
HEADERS_TOO_LARGE, BODY_TOO_LARGE = "headers_too_large", "body_too_large"


class RequestFraming:
    """Finds where one HTTP/1.x request ends in a growing buffer, scanning each byte once.

    ``scan(buf)`` answers ``NEED_MORE``, ``COMPLETE`` (headers and body are in ``buf``),
    ``HEADERS_TOO_LARGE`` (header or trailer section over ``max_header``),
    ``BODY_TOO_LARGE`` (chunks adding up to more than ``max_body``) or ``HANDOFF``: the
    framing is one gunicorn's parser rejects, or the app answers, without reading a body
    (malformed or repeated ``Content-Length``, an unknown transfer coding, a bad chunk size,
    a ``Content-Length`` over ``max_body``: 413), so they should get the request now. This is not a
    validating parser: gunicorn's parser still parses every request; this
    only decides when all of it has arrived.
    """

    def __init__(self, max_body: int, max_header: int = MAX_HEADER_BYTES):
        self.max_body = max_body
        self.max_header = max_header
        self.state = NEED_MORE
        self.method: str | None = None
        self.path: str | None = None
        self.version: str | None = None
        self.content_length: int | None = None
        self.chunked = False
        self.expect_continue = False
        self.oversize = False
        self.header_end: int | None = None
        self._start = 0
        self._search_from = 0
        self._body_end: int | None = None
        # chunked body: position of the next chunk-size line, or of the trailer section
        self._chunk_pos = 0
        self._chunk_next: int | None = None
        self._in_trailers = False
        self._body_bytes = 0

    @property
    def in_body(self) -> bool:
        return self.header_end is not None and self.state == NEED_MORE

    @property
    def is_probe(self) -> bool:
        return (self.method in ("GET", "HEAD") and self.path in PROBE_PATHS
                and not self.chunked and not self.content_length)

    def scan(self, buf: bytearray) -> str:
        if self.state != NEED_MORE:
            return self.state
        if self.header_end is None:
            self._scan_headers(buf)
            if self.header_end is None or self.state != NEED_MORE:
                return self.state
        if self.chunked:
            self.state = self._scan_chunked(buf)
        elif len(buf) >= self._body_end:
            self.state = COMPLETE
        return self.state

    def _scan_headers(self, buf: bytearray) -> None:
        while buf.startswith(b"\r\n", self._start) and self._start < 8:  # RFC 9112 2.2
            self._start += 2
            self._search_from = self._start
        if self.method is None:
            eol = buf.find(b"\r\n", self._start)
            if eol >= 0:
                self._request_line(bytes(buf[self._start:eol]))
        end = buf.find(b"\r\n\r\n", max(self._start, self._search_from - 3))
        if end < 0:
            self._search_from = len(buf)
            if len(buf) - self._start > self.max_header:
                self.state = HEADERS_TOO_LARGE
            return
        if end + 4 - self._start > self.max_header:
            self.state = HEADERS_TOO_LARGE
            return
        self.header_end = end + 4
        self._headers(bytes(buf[self._start:end]).decode("latin-1").split("\r\n")[1:])

    def _request_line(self, line: bytes) -> None:
        parts = line.decode("latin-1").split(" ")
        if len(parts) == 3:
            self.method, target, self.version = parts
            self.path = target.split("?", 1)[0]
        else:
            self.method = ""

    def _headers(self, lines: list[str]) -> None:
        lengths, codings, expect = [], [], None
        for line in lines:
            name, sep, value = line.partition(":")
            if not sep:
                self.state = HANDOFF
                return
            name, value = name.lower(), value.strip(" \t")
            if name == "content-length":
                lengths.append(value)
            elif name == "transfer-encoding":
                codings.append(value)
            elif name == "expect":
                expect = value.lower()
        if not self.path or not self.version:
            self.state = HANDOFF
        elif codings:
            last = ",".join(codings).split(",")[-1].strip().lower()
            if lengths or last != "chunked":
                self.state = HANDOFF
            else:
                self.chunked = True
                self._chunk_pos = self.header_end
        elif lengths:
            if len(lengths) > 1 or not (lengths[0].isascii() and lengths[0].isdigit()):
                self.state = HANDOFF
            else:
                self.content_length = int(lengths[0])
                if self.content_length > self.max_body:
                    self.oversize = True
                    self.state = HANDOFF
        self._body_end = self.header_end + (self.content_length or 0)
        self.expect_continue = expect == "100-continue" and self.version == "HTTP/1.1"

    def _scan_chunked(self, buf: bytearray) -> str:
        while True:
            if self._in_trailers:
                if buf.startswith(b"\r\n", self._chunk_pos):
                    return COMPLETE
                if len(buf) - self._chunk_pos < 2:
                    return NEED_MORE
                end = buf.find(b"\r\n\r\n", self._chunk_pos)
                if end >= 0:
                    return COMPLETE
                return HEADERS_TOO_LARGE if len(buf) - self._chunk_pos > self.max_header else NEED_MORE
            if self._chunk_next is not None:  # waiting for the data of a chunk already sized
                if len(buf) < self._chunk_next:
                    return NEED_MORE
                self._chunk_pos, self._chunk_next = self._chunk_next, None
                continue
            eol = buf.find(b"\r\n", self._chunk_pos)
            if eol < 0:
                return HANDOFF if len(buf) - self._chunk_pos > MAX_CHUNK_LINE else NEED_MORE
            size_text = bytes(buf[self._chunk_pos:eol]).split(b";", 1)[0].strip(b" \t")
            try:
                if not size_text or len(size_text) > 16:
                    raise ValueError(size_text)
                size = int(size_text, 16)
            except ValueError:
                return HANDOFF  # gunicorn answers 400
            if size == 0:
                self._in_trailers, self._chunk_pos = True, eol + 2
                continue
            self._body_bytes += size
            if self._body_bytes > self.max_body:
                self.oversize = True
                return BODY_TOO_LARGE  # handed on, the rest would be read in a thread
            self._chunk_next = eol + 2 + size + 2


def error_response(status: int, reason: str, code: str, message: str) -> bytes:
    """A complete ``Connection: close`` response in the app's JSON error format."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\nCache-Control: no-store\r\n"
            "X-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n\r\n")
    return head.encode("latin-1") + body


class PrefilledUnreader(SocketUnreader):
    """gunicorn's socket reader, serving the bytes the loop already received first.

    Pieces are cut as ``SocketUnreader`` cuts its ``recv`` calls, so a large body costs what
    it costs when read from the socket (``unread()`` of the whole buffer instead would copy
    the rest of it on every read: 0.5 s for a 10 MB body). The socket is only read once the
    prefill is used up, which a complete request never needs.
    """

    def __init__(self, sock, data: bytearray):
        super().__init__(sock)
        self._data = data
        self._pos = 0

    def chunk(self, size_hint=None):
        if self._data is None:
            return super().chunk(size_hint)
        size = self.mxchunk
        if size_hint and size_hint > size:
            size = min(size_hint, self.max_body_chunk)
        piece = bytes(self._data[self._pos:self._pos + size])
        self._pos += len(piece)
        if self._pos >= len(self._data):
            self._data = None
        return piece

    def spill(self) -> None:
        """Move what is left of the prefill (pipelined requests) into ``buf``, where gthread
        looks for bytes read ahead before it waits on the socket again."""
        if self._data is not None:
            self.buf.seek(0, os.SEEK_END)
            self.buf.write(self._data[self._pos:])
            self._data = None


class _Reading:
    """One request being received by the event loop."""

    __slots__ = ("conn", "buf", "framing", "started", "deadline", "registered", "paused",
                 "continue_sent")

    def __init__(self, conn, buf: bytearray, framing: RequestFraming, started: float, deadline: float):
        self.conn, self.buf, self.framing = conn, buf, framing
        self.started, self.deadline = started, deadline
        self.registered = self.paused = self.continue_sent = False


class _Lingering:
    __slots__ = ("sock", "deadline", "drained")

    def __init__(self, sock, deadline: float):
        self.sock, self.deadline, self.drained = sock, deadline, 0


class BufferingThreadWorker(ThreadWorker):
    """``gthread`` whose event loop receives whole requests (see the module docstring).

    ``gunicorn.conf.py`` sets the two class settings below from ``REQUEST_READ_TIMEOUT`` and
    ``REQUEST_BUFFER_MB`` (parsed by ``cxr.settings``): the server's settings are read there, once.
    """

    request_read_timeout = DEFAULT_READ_TIMEOUT_S
    request_buffer_mb = DEFAULT_BUFFER_MB

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.read_timeout = self.request_read_timeout
        self.buffer_limit = int(self.request_buffer_mb * 2**20)
        self.max_body: int | None = None  # from the app's MAX_CONTENT_LENGTH once it is loaded
        self.reading: dict = {}  # conn -> _Reading, in order of deadline
        self.paused: deque[_Reading] = deque()
        self.lingering: deque[_Lingering] = deque()
        self.held_bytes = 0  # request bytes in memory: being received, queued or served
        self.probe_pool = None

    # -- set-up ------------------------------------------------------------------------

    def init_process(self):
        self.probe_pool = futures.ThreadPoolExecutor(PROBE_THREADS, thread_name_prefix="probe")
        super().init_process()  # loads the app, then runs the loop until the worker exits

    def load_wsgi(self):
        super().load_wsgi()
        config = getattr(self.wsgi, "config", None) or {}
        from app.config import DEFAULT_MAX_UPLOAD_MB, MB  # the app is loaded by now

        self.max_body = int(config.get("MAX_CONTENT_LENGTH") or DEFAULT_MAX_UPLOAD_MB * MB)
        self.buffer_limit = max(self.buffer_limit, self.max_body + MAX_HEADER_BYTES)
        self.log.info("request reading: deadline %gs, buffer %d MiB, body <= %d MiB, %d connections",
                      self.read_timeout, self.buffer_limit // 2**20, self.max_body // 2**20,
                      self.worker_connections)

    def run(self):
        try:
            super().run()
        finally:
            if self.probe_pool is not None:
                self.probe_pool.shutdown(wait=False)

    def handle_quit(self, sig, frame):
        if self.probe_pool is not None:
            self.probe_pool.shutdown(wait=False)
        super().handle_quit(sig, frame)

    def _buffers(self, conn) -> bool:
        """Plain HTTP/1.x only: TLS bytes and HTTP/2 frames are left to gthread."""
        return not self.cfg.is_ssl and not negotiation.prior_knowledge_allowed(self.cfg, conn.client)

    # -- the loop: receive, then dispatch ------------------------------------------------

    def enqueue_req(self, conn):
        """Every path by which gthread starts a request (accept, keep-alive, pipelined) ends
        here: receive the request in the loop instead of handing the socket to a thread."""
        if not self._buffers(conn):
            return super().enqueue_req(conn)
        if conn.__dict__.get("close") is None:  # first request of this connection
            conn.close = partial(self._close_conn, conn)
        buf = bytearray()
        if conn.parser is not None:  # bytes a previous request read ahead (pipelining)
            buf += conn.parser.unreader.take_buffered()
        now = time.monotonic()
        state = _Reading(conn, buf, RequestFraming(self.max_body), now, now + self.read_timeout)
        self.reading[conn] = state
        self.held_bytes += len(buf)
        conn.sock.setblocking(False)
        if buf and self._advance(state):
            return
        self._register(state)

    def _register(self, state: _Reading) -> None:
        self.poller.register(state.conn.sock, selectors.EVENT_READ, partial(self._on_readable, state))
        state.registered = True

    def _unregister(self, state: _Reading) -> None:
        if state.registered:
            try:
                self.poller.unregister(state.conn.sock)
            except (KeyError, ValueError, OSError):
                pass
            state.registered = False

    def _on_readable(self, state: _Reading, _sock) -> None:
        # Bodies are read only while the worker holds less than buffer_limit; a header
        # section always may be (at most MAX_HEADER_BYTES + 1 per connection), so a probe
        # is never stuck behind the memory bound.
        header_room = 0 if state.framing.header_end is not None else MAX_HEADER_BYTES + 1 - len(state.buf)
        allowance = max(self.buffer_limit - self.held_bytes, header_room)
        if allowance <= 0:
            self._unregister(state)  # memory bound reached: let TCP hold this sender back
            state.paused = True
            self.paused.append(state)
            return
        eof = False
        for _ in range(RECV_PER_EVENT):
            if allowance <= 0:
                break
            try:
                data = state.conn.sock.recv(min(RECV_SIZE, allowance))
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                eof = True
                break
            if not data:
                eof = True
                break
            state.buf += data
            self.held_bytes += len(data)
            allowance -= len(data)
            if len(data) < RECV_SIZE:
                break
        if not self._advance(state) and eof:
            # The client gave up (or half-closed) before its request was complete.
            self._finish_reading(state)
            self._close_now(state.conn)

    def _advance(self, state: _Reading) -> bool:
        """Look at what arrived; True once the request left the loop (dispatched or answered)."""
        framing = state.framing
        outcome = framing.scan(state.buf)
        if outcome == NEED_MORE:
            if framing.in_body and framing.expect_continue and not state.continue_sent:
                state.continue_sent = True  # curl waits for this before sending a large body
                self._send_quietly(state.conn.sock, b"HTTP/1.1 100 Continue\r\n\r\n")
            return False
        if outcome == HEADERS_TOO_LARGE:
            self._answer(state, 431, "Request Header Fields Too Large", "headers_too_large",
                         f"The request headers are larger than {MAX_HEADER_BYTES // 1024} KiB.")
            return True
        if outcome == BODY_TOO_LARGE:
            self._answer(state, 413, "Content Too Large", "payload_too_large",
                         f"The upload is larger than the {self.max_body / 2**20:g} MB limit (MAX_UPLOAD_MB).")
            return True
        self._dispatch(state, force_close=outcome == HANDOFF)
        return True

    def _dispatch(self, state: _Reading, force_close: bool) -> None:
        conn = state.conn
        self._finish_reading(state, release=False)
        conn.data_ready = True  # gthread's handle() must not wait for data: it is all here
        conn.cxr_prebuffered = state.buf
        conn.cxr_held = len(state.buf)
        # no (second) "100 Continue": the loop sent one, or the body is not wanted (413)
        conn.cxr_no_continue = state.continue_sent or state.framing.oversize
        conn.cxr_force_close = force_close
        conn.sock.setblocking(True)
        _set_io_timeouts(conn.sock, self.read_timeout)
        pool = self.probe_pool if state.framing.is_probe and not force_close else self.tpool
        future = pool.submit(self.handle, conn)
        future.add_done_callback(lambda fut: self.method_queue.defer(self.finish_request, conn, fut))

    def _finish_reading(self, state: _Reading, release: bool = True) -> None:
        self._unregister(state)
        self.reading.pop(state.conn, None)
        if state.paused:
            try:
                self.paused.remove(state)
            except ValueError:
                pass
            state.paused = False
        if release:
            self._release(len(state.buf))

    def _release(self, nbytes: int) -> None:
        self.held_bytes -= nbytes
        while self.paused and self.held_bytes < self.buffer_limit:
            state = self.paused.popleft()
            state.paused = False
            if state.conn in self.reading:
                self._register(state)

    # -- deadlines ---------------------------------------------------------------------

    def wait_for_and_dispatch_events(self, timeout):
        """gthread waits up to 1 s per turn; wake up in time for the next deadline instead."""
        now = time.monotonic()
        if self.reading:
            timeout = min(timeout, next(iter(self.reading.values())).deadline - now)
        if self.lingering:
            timeout = min(timeout, self.lingering[0].deadline - now)
        super().wait_for_and_dispatch_events(max(0.0, timeout) + 0.001)

    def murder_pending(self):
        """Called by gthread's loop after every turn (events or at most a second)."""
        super().murder_pending()
        now = time.monotonic()
        while self.reading:
            state = next(iter(self.reading.values()))
            if state.deadline > now:
                break
            if state.buf.strip(b"\r\n"):
                self._answer(state, 408, "Request Timeout", "request_timeout",
                             f"The request was not received within {self.read_timeout:g} s "
                             "(REQUEST_READ_TIMEOUT); send it again.")
            else:  # an idle connection: nothing to answer
                self._finish_reading(state)
                self._close_now(state.conn)
        while self.lingering and self.lingering[0].deadline <= now:
            self._end_linger(self.lingering[0])

    def _answer(self, state: _Reading, status: int, reason: str, code: str, message: str) -> None:
        """Answer from the loop (the request never reaches the app), then close gracefully."""
        framing = state.framing
        self._finish_reading(state)
        self._send_quietly(state.conn.sock, error_response(status, reason, code, message))
        access_log.info("method=%s path=%s status=%d req_bytes=%d resp_bytes=- latency_ms=%.1f",
                        _printable(framing.method), _printable(framing.path), status,
                        len(state.buf), (time.monotonic() - state.started) * 1000)
        self.nr_conns -= 1
        self._close_conn(state.conn, graceful=True)

    @staticmethod
    def _send_quietly(sock, data: bytes) -> None:
        """A small write from the loop: it fits the empty send buffer, else it is dropped."""
        try:
            sock.send(data)
        except OSError:
            pass

    # -- the thread side ---------------------------------------------------------------

    def handle(self, conn):
        buf = conn.__dict__.pop("cxr_prebuffered", None)
        if buf is not None:
            conn.init()  # gthread's own set-up (the parser), which handle() would do next
            # The previous request's body (keep-alive) is finished, so nothing reads the old one.
            conn.parser.unreader = PrefilledUnreader(conn.sock, buf)
            del buf
        return super().handle(conn)

    def handle_request(self, req, conn):
        if conn.__dict__.pop("cxr_no_continue", False):
            req._expected_100_continue = False
        if conn.__dict__.pop("cxr_force_close", False):
            req.force_close()  # framing the loop did not vouch for: no keep-alive after it
        return super().handle_request(req, conn)

    def finish_request(self, conn, fs):
        held = conn.__dict__.pop("cxr_held", 0)
        if held:
            self._release(held)
        unreader = getattr(conn.parser, "unreader", None)
        if isinstance(unreader, PrefilledUnreader):
            unreader.spill()
        super().finish_request(conn, fs)

    # -- closing -----------------------------------------------------------------------

    def _close_conn(self, conn, graceful: bool = False) -> None:
        """Replaces ``TConn.close``: the graceful close must not block the loop.

        gthread calls it after decrementing ``nr_conns``; a lingering socket counts again
        until it is really closed, so open file descriptors stay within worker_connections.
        """
        sock = conn.sock
        if not graceful:
            _close(sock)
            return
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.setblocking(False)
            linger = _Lingering(sock, time.monotonic() + LINGER_S)
            self.poller.register(sock, selectors.EVENT_READ, partial(self._drain_linger, linger))
        except (OSError, KeyError, ValueError):
            _close(sock)
            return
        self.nr_conns += 1
        self.lingering.append(linger)

    def _close_now(self, conn) -> None:
        self.nr_conns -= 1
        _close(conn.sock)

    def _drain_linger(self, linger: _Lingering, _sock) -> None:
        try:
            data = linger.sock.recv(LINGER_MAX_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        linger.drained += len(data)
        if not data or linger.drained >= LINGER_MAX_BYTES:
            self._end_linger(linger)

    def _end_linger(self, linger: _Lingering) -> None:
        try:
            self.lingering.remove(linger)
        except ValueError:
            return
        try:
            self.poller.unregister(linger.sock)
        except (KeyError, ValueError, OSError):
            pass
        self.nr_conns -= 1
        _close(linger.sock)


def _close(sock) -> None:
    try:
        sock.close()
    except OSError:
        pass


def _set_io_timeouts(sock, seconds: float) -> None:
    """Kernel-level per-operation timeouts: they survive gthread's ``setblocking`` calls."""
    whole = int(seconds)
    value = struct.pack("@ll", whole, int((seconds - whole) * 1e6))
    for option in (socket.SO_RCVTIMEO, socket.SO_SNDTIMEO):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, value)
        except OSError:  # a socket the client already closed: the thread finds out
            pass


def _printable(text: str | None) -> str:
    """A method or path for the log line: printable ASCII, bounded, else ``-``."""
    if not text or len(text) > 200 or not (text.isascii() and text.isprintable()):
        return "-"
    return text
