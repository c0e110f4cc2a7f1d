"""Rate limits (issue 23) against real gunicorn serving the shipped model: the count at which 429
starts, ``Retry-After``, exempt probes, a forged ``X-Forwarded-For`` without a trusted proxy, and
a Redis-backed limit shared by two workers (a real ``redis-server`` started here)."""

from __future__ import annotations

import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
import requests

from tests.gate_inputs import MODEL
from tests.web_support import GunicornServer, free_port

pytestmark = pytest.mark.slow
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


@pytest.fixture(scope="module")
def xray(sample_xrays) -> bytes:
    return sample_xrays["normal"][0].read_bytes()


def predict(url: str, xray: bytes, **headers) -> requests.Response:
    return requests.post(url + "/predict", files={"file": ("x.jpg", xray, "image/jpeg")}, headers=headers,
                         timeout=120)


def assert_rate_limited(response: requests.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(response.headers["Retry-After"]) <= 60


def test_sixth_and_seventh_prediction_get_429_probes_never(tmp_path, xray):
    server = GunicornServer(MODEL, tmp_path / "server.log", workers=1, threads=2,
                            extra_env={"RATE_LIMIT": "5/minute"})
    try:
        server.wait_ready()
        url = server.url
        for i in range(5):
            assert predict(url, xray).status_code == 200, i
            for path in ("/healthz", "/readyz", "/openapi.json", "/metrics", "/", "/static/style.css"):
                assert requests.get(url + path, timeout=30).status_code == 200, path
        sixth = predict(url, xray)
        # A direct client writing another address into X-Forwarded-For is still the same client
        # (TRUSTED_PROXIES=0: the header is ignored).
        seventh = predict(url, xray, **{"X-Forwarded-For": "203.0.113.9"})
        for response in (sixth, seventh):
            assert_rate_limited(response)
        # The batch and the form share the budget; the form's answer is its page, with the header.
        assert_rate_limited(requests.post(url + "/predict/batch", files=[("files", ("x.jpg", xray))], timeout=60))
        form = requests.post(url + "/", files={"file": ("x.jpg", xray)}, timeout=60)
        assert form.status_code == 429 and "Retry-After" in form.headers and "text/html" in form.headers["Content-Type"]
        assert all(requests.get(url + "/healthz", timeout=10).status_code == 200 for _ in range(20))
        metrics = requests.get(url + "/metrics", timeout=10).text
        assert 'cxr_refusals_total{code="rate_limited"} 4.0' in metrics
    finally:
        rc = server.stop()
    assert rc == 0, server.log_text()[-2000:]


@pytest.fixture()
def redis_url(tmp_path):
    """A real redis-server on a free loopback port, for this test only."""
    if not shutil.which(REDIS_SERVER):
        pytest.fail(f"{REDIS_SERVER} is missing: apt-get install -y redis-server (.ci/run installs it)")
    port = free_port()
    proc = subprocess.Popen([REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    try:
        import redis

        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}", port
    finally:
        proc.terminate()
        proc.wait(10)


def redis_connected_workers(server, port: int) -> set[int]:
    return {pid for pid in server.worker_pids()
            if any(c.raddr and c.raddr.port == port for c in psutil.Process(pid).net_connections("tcp"))}


def test_redis_limit_holds_across_two_workers_behind_a_trusted_proxy(tmp_path, xray, redis_url):
    uri, port = redis_url
    server = GunicornServer(MODEL, tmp_path / "server.log", workers=2, threads=2, extra_env={
        "RATE_LIMIT": "5/minute", "RATE_LIMIT_STORAGE_URI": uri, "TRUSTED_PROXIES": "1"})
    try:
        server.wait_ready()
        url = server.url
        client = {"X-Forwarded-For": "198.51.100.1, 203.0.113.7"}  # the proxy appended the client's address
        with ThreadPoolExecutor(7) as pool:  # new connections, at once: both workers take some
            statuses = sorted(r.status_code for r in pool.map(lambda _: predict(url, xray, **client), range(7)))
        assert statuses == [200] * 5 + [429] * 2
        assert len(redis_connected_workers(server, port)) == 2  # both workers counted in Redis
        # What the client wrote before the proxy's entry is not its address; another client is.
        assert_rate_limited(predict(url, xray, **{"X-Forwarded-For": "192.0.2.55, 203.0.113.7"}))
        assert predict(url, xray, **{"X-Forwarded-For": "203.0.113.8"}).status_code == 200
    finally:
        rc = server.stop()
    assert rc == 0, server.log_text()[-2000:]


def test_app_yaml_turns_the_limit_and_json_logs_on_while_make_run_has_none():
    import yaml

    from app.config import load_config
    from tests.web_support import ROOT

    deployed = load_config(environ=yaml.safe_load((ROOT / "app.yaml").read_text())["env_variables"])
    assert (deployed["RATE_LIMIT"], deployed["TRUSTED_PROXIES"], deployed["LOG_FORMAT"]) == ("60/minute", 2, "json")
    local = load_config(environ={})
    assert (local["RATE_LIMIT"], local["TRUSTED_PROXIES"], local["RATE_LIMIT_STORAGE_URI"]) == (None, 0, "memory://")
    with pytest.raises(ValueError, match="RATE_LIMIT"):
        load_config(environ={"RATE_LIMIT": "lots"})
