"""Slow clients cannot take the service down (issue 16).

The framing scanner of ``app.buffering_worker`` on its own, then a real gunicorn server
(``gunicorn.conf.py``, 1 worker × 4 threads as ``make run``) on loopback with a 3 s read
deadline: dozens of trickling uploads at once while probes and predictions keep being
served, slow headers, idle sockets, ``Expect: 100-continue``, chunked uploads, pipelining,
oversize and header-flood requests, and the memory bound on buffered bodies.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import psutil
import pytest
import requests

from app.buffering_worker import BODY_TOO_LARGE, COMPLETE, HANDOFF, HEADERS_TOO_LARGE, NEED_MORE, RequestFraming
from tests.web_support import GunicornServer, TricklingUploads, serving

READ_TIMEOUT = 3.0
MAX_UPLOAD_MB = 2


# -- the framing scanner -------------------------------------------------------------------

def feed(framing: RequestFraming, data: bytes, step: int) -> list[str]:
    """Feed ``data`` ``step`` bytes at a time; the outcome after each step."""
    buf, outcomes = bytearray(), []
    for i in range(0, len(data), step):
        buf += data[i:i + step]
        outcomes.append(framing.scan(buf))
    return outcomes


@pytest.mark.parametrize("step", [1, 7, 4096])
def test_framing_content_length_complete_only_with_the_whole_body(step):
    head = b"POST /predict?explain=true HTTP/1.1\r\nHost: x\r\ncontent-length: 10\r\n\r\n"
    framing = RequestFraming(max_body=100)
    outcomes = feed(framing, head + b"0123456789" + b"GET / HTTP/1.1\r\n", step)
    first_complete = outcomes.index(COMPLETE)
    assert set(outcomes[:first_complete]) <= {NEED_MORE}
    assert (first_complete + 1) * step >= len(head) + 10
    assert (framing.method, framing.path, framing.content_length) == ("POST", "/predict", 10)
    assert not framing.is_probe


@pytest.mark.parametrize("step", [1, 5, 4096])
def test_framing_chunked(step):
    body = b"4;ext=1\r\nabcd\r\n10\r\n" + b"x" * 16 + b"\r\n0\r\nX-Trailer: y\r\n\r\n"
    framing = RequestFraming(max_body=100)
    outcomes = feed(framing, b"POST /predict HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + body, step)
    assert outcomes[-1] == COMPLETE and outcomes.count(COMPLETE) == 1 and framing.chunked


def test_framing_probes_and_bodiless_requests():
    framing = RequestFraming(max_body=100)
    assert framing.scan(bytearray(b"\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")) == COMPLETE
    assert framing.is_probe
    framing = RequestFraming(max_body=100)
    assert framing.scan(bytearray(b"GET /readyz?x=1 HTTP/1.0\r\n\r\n")) == COMPLETE and framing.is_probe
    framing = RequestFraming(max_body=100)
    assert framing.scan(bytearray(b"GET / HTTP/1.1\r\n\r\n")) == COMPLETE and not framing.is_probe


@pytest.mark.parametrize("head, why", [
    (b"POST /predict HTTP/1.1\r\nContent-Length: 101\r\n\r\n", "larger than max_body: the app says 413"),
    (b"POST /predict HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", "repeated length"),
    (b"POST /predict HTTP/1.1\r\nContent-Length: +5\r\n\r\n", "not digits"),
    (b"POST /predict HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", "unknown coding"),
    (b"POST /predict HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", "both"),
    (b"POST /predict HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
    (b"NONSENSE\r\n\r\n", "bad request line"),
    (b"GET / HTTP/1.1\r\nno colon\r\n\r\n", "bad header line"),
])
def test_framing_hands_doubtful_requests_to_gunicorns_parser(head, why):
    assert RequestFraming(max_body=100).scan(bytearray(head)) == HANDOFF, why


def test_framing_bounds_headers_trailers_and_chunked_bodies():
    framing = RequestFraming(max_body=100, max_header=1024)
    assert framing.scan(bytearray(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 1000)) == NEED_MORE
    assert framing.scan(bytearray(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 1100)) == HEADERS_TOO_LARGE
    chunked = b"POST /predict HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    framing = RequestFraming(max_body=100, max_header=1024)
    assert framing.scan(bytearray(chunked + b"0\r\nX-Big: " + b"a" * 1100)) == HEADERS_TOO_LARGE
    # a chunk declared over the limit is refused before its data is awaited
    assert RequestFraming(max_body=100).scan(bytearray(chunked + b"80\r\n")) == BODY_TOO_LARGE


def test_framing_expect_continue():
    framing = RequestFraming(max_body=100)
    head = b"POST /predict HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n"
    assert framing.scan(bytearray(head)) == NEED_MORE and framing.in_body and framing.expect_continue


# -- a real server -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    srv = GunicornServer(tiny_model, tmp_path_factory.mktemp("slow") / "server.log", workers=1,
                         threads=4, extra_env={"REQUEST_READ_TIMEOUT": str(READ_TIMEOUT),
                                               "MAX_UPLOAD_MB": str(MAX_UPLOAD_MB),
                                               "REQUEST_BUFFER_MB": "1"})
    yield from serving(srv)


@pytest.fixture(scope="module")
def xray(sample_xrays) -> bytes:
    return sample_xrays["covid"][0].read_bytes()


def rss(pids) -> int:
    return sum(psutil.Process(pid).memory_info().rss for pid in pids)


def raw_exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data`` on a fresh connection; everything the server sends until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    return response


@pytest.mark.slow
def test_trickling_uploads_leave_probes_and_predictions_served(server, xray):
    workers = server.worker_pids()
    for _ in range(4):  # warm-up, so that RSS is measured after the first predictions
        assert requests.post(server.url + "/predict", data=xray, timeout=30).status_code == 200
    rss_before = rss(workers)

    uploads = TricklingUploads(server.port, 48)  # 1 MB uploads, a byte a second
    headers = TricklingUploads(server.port, 8, mode="headers")
    idle = TricklingUploads(server.port, 8, mode="idle")
    try:
        time.sleep(0.5)
        assert uploads.open_count() == 48
        for path in ("/healthz", "/readyz"):
            started = time.perf_counter()
            response = requests.get(server.url + path, timeout=2)
            assert response.status_code == 200 and time.perf_counter() - started < 2.0
        started = time.perf_counter()
        response = requests.post(server.url + "/predict", data=xray, timeout=10,
                                 headers={"Content-Type": "image/jpeg"})
        assert response.status_code == 200 and response.json()["label"] in ("Covid", "Normal")
        assert time.perf_counter() - started < 5.0
        answered = time.monotonic()
        for group in (uploads, headers, idle):
            assert group.wait_all_ended(READ_TIMEOUT + 5), group.results()
        rss_after = rss(workers)
    finally:
        for group in (uploads, headers, idle):
            group.close()

    # every answer above came while all the slow uploads were still open
    assert answered < min(c["started"] for c in uploads.conns) + min(r["ended_s"] for r in uploads.results())
    for result in uploads.results() + headers.results():
        assert result["outcome"] == "408", result
        assert READ_TIMEOUT - 0.5 <= result["ended_s"] <= READ_TIMEOUT + 1.5, result
        assert json.loads(result["body"])["error"]["code"] == "request_timeout"
    for result in idle.results():  # nothing was asked, so nothing is answered
        assert result["outcome"] == "closed" and result["ended_s"] <= READ_TIMEOUT + 1.5, result
    assert server.worker_pids() == workers  # nobody died
    assert rss_after <= rss_before * 1.10, (rss_before, rss_after)  # the load test's bound
    assert "path=/predict status=408" in server.log_text()
    assert requests.get(server.url + "/healthz", timeout=2).status_code == 200


@pytest.mark.slow
def test_expect_continue_gets_one_100_before_the_body(server, xray):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                     f"Expect: 100-continue\r\nContent-Length: {len(xray)}\r\n"
                     "Connection: close\r\n\r\n".encode())
        assert sock.recv(1024) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(xray)
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    assert response.startswith(b"HTTP/1.1 200 ") and b"100 Continue" not in response


@pytest.mark.slow
def test_chunked_upload_and_pipelined_requests(server, xray):
    want = requests.post(server.url + "/predict", data=xray, timeout=30).json()
    chunks = (xray[i:i + 1000] for i in range(0, len(xray), 1000))  # requests sends it chunked
    got = requests.post(server.url + "/predict", data=chunks, timeout=30,
                        headers={"Content-Type": "image/jpeg"})
    assert got.status_code == 200
    assert got.json()["probabilities"] == pytest.approx(want["probabilities"], abs=1e-6)

    two = (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
           b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    response = raw_exchange(server.port, two)
    assert response.count(b"HTTP/1.1 200 OK") == 2 and b'"status":"ready"' in response


@pytest.mark.slow
def test_oversize_and_header_floods_are_answered_at_once(server):
    started = time.perf_counter()
    response = raw_exchange(server.port, f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: "
                            f"{(MAX_UPLOAD_MB + 1) * 2**20}\r\n\r\n".encode() + b"\x89PNG" * 10)
    assert response.startswith(b"HTTP/1.1 413 ") and b"payload_too_large" in response
    response = raw_exchange(server.port, b"GET / HTTP/1.1\r\nX-Big: " + b"a" * (70 * 1024))
    assert response.startswith(b"HTTP/1.1 431 ") and b"headers_too_large" in response
    response = raw_exchange(server.port, b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
                            b"chunked\r\n\r\n" + f"{(MAX_UPLOAD_MB + 1) * 2**20:x}\r\n".encode() + b"x" * 100)
    assert response.startswith(b"HTTP/1.1 413 ") and b"2 MB limit" in response
    assert time.perf_counter() - started < READ_TIMEOUT  # no deadline was waited for


@pytest.mark.slow
def test_buffered_bodies_are_bounded(server, xray):
    """REQUEST_BUFFER_MB=1 with MAX_UPLOAD_MB=2: the worker holds at most ~2 MB of bodies.

    A holds 1.9 MB and stalls; B's body (1 MB) does not fit beside it, so B is read only
    once A's deadline frees the memory, and then B is served normally.
    """
    big = (MAX_UPLOAD_MB * 2**20) - 1
    a = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    b = socket.socket()
    b.settimeout(10)
    b_body = xray + bytes(2**20 - len(xray))  # a real JPEG, zero-padded (Pillow stops at EOI)
    answers = {}

    def send_b():
        time.sleep(1.0)  # B's own deadline starts a second after A's
        b.connect(("127.0.0.1", server.port))
        b.sendall(f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: "
                  f"{len(b_body)}\r\nConnection: close\r\n\r\n".encode() + b_body)
        answers["b_sent"] = time.monotonic()

    try:
        a.sendall(f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: {big}\r\n\r\n".encode()
                  + bytes(big - 100 * 1024))
        a_started = time.monotonic()
        sender = threading.Thread(target=send_b)
        sender.start()
        for name, sock in (("a", a), ("b", b)):
            if name == "b":
                sender.join(10)
            response = b""
            while chunk := sock.recv(65536):
                response += chunk
            answers[name] = (time.monotonic() - a_started, response)
    finally:
        a.close()
        b.close()
    a_after, a_response = answers["a"]
    b_after, b_response = answers["b"]
    assert a_response.startswith(b"HTTP/1.1 408 "), a_response[:200]
    assert b_response.startswith(b"HTTP/1.1 200 "), b_response[:300]
    assert b_after >= a_after > READ_TIMEOUT - 0.5  # B waited for A's memory
