"""Slow clients against the real server (issue 16): are probes and predictions still served?

    python bench/slow_clients.py                          # 8, 32, 128 trickling uploads
    python bench/slow_clients.py --worker-class gthread   # the same against stock gthread

Starts ``gunicorn -c gunicorn.conf.py app.wsgi:app`` as ``make run`` does (1 worker,
4 threads) on a loopback port with the shipped model, then for each count N opens N
connections that send the headers of a 1 MB upload and then one byte per second. While they
are open it times ``/healthz`` (3 times) and ``/predict`` with a real X-ray (3 times), then
waits for the slow uploads to end and records how they ended (status received, closed,
reset or still open) and when, and the worker's RSS before and at its peak. Writes
``bench/slow_clients.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import psutil
import requests

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.web_support import GunicornServer, TricklingUploads  # noqa: E402

DEFAULT_DATA_DIR = Path(os.environ.get("CXR_DATA_DIR", ROOT.parent / "shared" / "data" / "cxr"))


def timed(method, url, timeout, **kwargs) -> tuple[float | None, str]:
    started = time.perf_counter()
    try:
        response = requests.request(method, url, timeout=timeout, **kwargs)
    except requests.Timeout:
        return None, f"no answer in {timeout:g} s"
    except requests.RequestException as exc:
        return None, exc.__class__.__name__
    return (time.perf_counter() - started) * 1000, str(response.status_code)


class RssSampler:
    def __init__(self, pids):
        self.procs = [psutil.Process(p) for p in pids]
        self.peak = self.now()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def now(self) -> int:
        return sum(p.memory_info().rss for p in self.procs)

    def _run(self):
        while not self._stop.wait(0.25):
            self.peak = max(self.peak, self.now())

    def stop(self) -> int:
        self._stop.set()
        self.thread.join(2)
        return self.peak


def measure(server, count, image, read_timeout, probe_timeout, predict_timeout, wait_extra):
    workers = server.worker_pids()
    rss_before = sum(psutil.Process(p).memory_info().rss for p in workers)
    sampler = RssSampler(workers)
    slow = TricklingUploads(server.port, count)
    try:
        time.sleep(2.0)  # every slow upload is connected and trickling
        healthz = [timed("GET", server.url + "/healthz", probe_timeout) for _ in range(3)]
        readyz = timed("GET", server.url + "/readyz", probe_timeout)
        predict = [timed("POST", server.url + "/predict", predict_timeout, data=image,
                         headers={"Content-Type": "image/jpeg"}) for _ in range(3)]
        slow.wait_all_ended(read_timeout + wait_extra)
        results = slow.results()
    finally:
        slow.close()
        peak = sampler.stop()
    ends = sorted(r["ended_s"] for r in results if r["ended_s"] is not None)
    return {
        "connections": count,
        "healthz_ms": [round(t, 1) if t is not None else None for t, _ in healthz],
        "healthz_status": [s for _, s in healthz],
        "readyz": [round(readyz[0], 1) if readyz[0] is not None else None, readyz[1]],
        "predict_ms": [round(t, 1) if t is not None else None for t, _ in predict],
        "predict_status": [s for _, s in predict],
        "slow_uploads_ended": dict(Counter(r["outcome"] for r in results)),
        "ended_after_s": {"min": ends[0], "max": ends[-1]} if ends else None,
        "example_body": next((r["body"].decode("utf-8", "replace") for r in results if r["body"]), ""),
        "worker_rss_mb_before": round(rss_before / 2**20, 1),
        "worker_rss_mb_peak": round(peak / 2**20, 1),
    }


def fmt_ms(values, statuses) -> str:
    parts = []
    for value, status in zip(values, statuses):
        parts.append(f"{value:.0f}" if value is not None and status == "200" else status)
    return " / ".join(parts)


def table(runs, label) -> str:
    lines = [f"| connections ({label}) | /healthz ms (3 tries) | /predict ms (3 tries) | slow uploads ended "
             "| after (s) | worker RSS MB before → peak |",
             "|---|---|---|---|---|---|"]
    for r in runs:
        ended = ", ".join(f"{v}× {k}" for k, v in sorted(r["slow_uploads_ended"].items()))
        after = f"{r['ended_after_s']['min']}–{r['ended_after_s']['max']}" if r["ended_after_s"] else "—"
        lines.append(f"| {r['connections']} | {fmt_ms(r['healthz_ms'], r['healthz_status'])} | "
                     f"{fmt_ms(r['predict_ms'], r['predict_status'])} | {ended} | {after} | "
                     f"{r['worker_rss_mb_before']} → {r['worker_rss_mb_peak']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "covid_resnet50.h5"))
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    parser.add_argument("--counts", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--read-timeout", type=float, default=30.0, help="REQUEST_READ_TIMEOUT")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--worker-class", default="", help="GUNICORN_WORKER_CLASS (default: ours)")
    parser.add_argument("--probe-timeout", type=float, default=20.0)
    parser.add_argument("--predict-timeout", type=float, default=60.0)
    parser.add_argument("--wait-extra", type=float, default=10.0,
                        help="seconds past the read timeout to wait for the slow uploads to end")
    parser.add_argument("--out", default=str(ROOT / "bench" / "slow_clients.json"))
    args = parser.parse_args(argv)

    image = sorted((Path(args.data_dir) / "test" / "covid").glob("*.jpg"))[0].read_bytes()
    env = {"REQUEST_READ_TIMEOUT": str(args.read_timeout)}
    if args.worker_class:
        env["GUNICORN_WORKER_CLASS"] = args.worker_class
    label = args.worker_class or "BufferingThreadWorker"
    log = Path(tempfile.mkdtemp()) / "server.log"
    server = GunicornServer(args.model, log, workers=1, threads=args.threads, extra_env=env)
    runs = []
    try:
        server.wait_ready(timeout=300)
        for _ in range(3):  # warm up: first requests, every thread
            timed("POST", server.url + "/predict", 60, data=image, headers={"Content-Type": "image/jpeg"})
        idle = {"healthz_ms": [timed("GET", server.url + "/healthz", 10)[0] for _ in range(3)],
                "predict_ms": [timed("POST", server.url + "/predict", 60, data=image,
                                     headers={"Content-Type": "image/jpeg"})[0] for _ in range(3)]}
        for count in args.counts:
            run = measure(server, count, image, args.read_timeout, args.probe_timeout,
                          args.predict_timeout, args.wait_extra)
            print(json.dumps(run), flush=True)
            runs.append(run)
    finally:
        server.stop()
    result = {"worker_class": label, "threads": args.threads,
              # stock gthread has no read deadline: there it is only how long the run waited
              "read_timeout_s": None if args.worker_class else args.read_timeout,
              "waited_for_slow_uploads_s": args.read_timeout + args.wait_extra,
              "model": Path(args.model).name, "cpus": os.cpu_count(),
              "load_average": [round(x, 2) for x in os.getloadavg()],
              "idle": {k: [round(v, 1) if v else None for v in vs] for k, vs in idle.items()},
              "runs": runs}
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"idle server: /healthz ms {result['idle']['healthz_ms']}, /predict ms {result['idle']['predict_ms']}")
    print(table(runs, label))
    return 0


if __name__ == "__main__":
    sys.exit(main())
