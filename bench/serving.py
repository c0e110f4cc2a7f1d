"""Serving benchmark: where the time of one ``/predict`` goes, measured side by side in one run.

    make bench                       # full run, writes bench/results.json and bench/RESULTS.md
    python bench/serving.py --quick  # seconds: proves the script still works (CI)

In one run, on one machine, with a real model and real X-rays it measures:

1. the bare forward pass of the app's own inference call (``Predictor.predict_prepared``),
   per backend, each in a fresh process (which also gives load time and RSS);
2. decode + preprocess alone (``Predictor.preprocess``, the shared preprocessing);
3. ``/predict`` over HTTP on loopback, with the app started exactly as ``make run`` starts
   it (``gunicorn -c gunicorn.conf.py app.wsgi:app``): p50/p95/p99 at concurrency 1, and
   throughput plus p95 at concurrency 4 and 16, each for a bounded time; every non-200
   counts as an error;
4. the naive baseline of the original article's app: Keras ``model.predict`` three times
   per uploaded image;
5. start-up time until ``/readyz`` answers 200, and the peak RSS of every gunicorn worker;
6. ``/predict/batch`` (issue 13) on the same server: images/s with 1, 4, 8 and 16 files per
   request from one client, against single ``/predict`` calls (one client, and four);
7. the input gate's cost (issue 12): two servers side by side, the model with its gate and
   the same files without the gate's artefacts, one client alternating single requests
   between them; the p50 of each and the ratio (``--gate-only`` runs just this);
9. the cost of operating it (issue 23): two servers side by side, one with Prometheus recording
   and one JSON request-log line per request (as on App Engine), one with neither, one client
   alternating single requests between them (``--ops-only`` runs just this);

then prints a table and the ratios HTTP p50 / bare forward, baseline / ours and forward /
compute floor (ResNet50 ~8.2 GFLOP at 224 px, scaled by (size/224)^2, over the cores' peak).

The machine is shared and noisy: compare figures within one run, never across runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.web_support import GUNICORN_COMMAND, GunicornServer, multipart  # noqa: E402 (needs ROOT on sys.path)

DEFAULT_MODEL = ROOT / "models" / "covid_resnet50.h5"
FALLBACK_MODEL = ROOT / "bench" / ".model" / "bench_resnet50.h5"
DEFAULT_DATA_DIR = ROOT.parent / "shared" / "data" / "cxr"
RESNET50_GFLOP_224 = 8.2
PEAK_GFLOPS_PER_CORE = 78.0  # one Zen core, AVX2 FMA at ~2.45 GHz, float32 (measured ~74-92 with numpy)
BACKENDS = ("onnx", "tensorflow")
PRECISIONS = ("fp32", "int8")  # issue 22: the ONNX export and its guarded int8 twin
BATCH_SIZES = (1, 4, 8, 16)  # files per /predict/batch request (BATCH_MAX_FILES defaults to 16)
TARGETS = {
    "http_p50_over_forward": 1.25,
    "forward_over_floor": 1.6,
    "baseline_over_ours": 5.0,
    "c16_throughput_over_forward_rate": 0.85,
    "gate_p50_cost": 0.10,
    "ops_p50_cost": 0.05,  # issue 23: metrics + JSON request logs
    "int8_p50_speedup": 1.5,  # fp32 /predict p50 over int8's, same run
    "int8_test_auc_drop": 0.005,
    "int8_test_flip_share": 0.01,
    "ready_s": {"onnx": 5.0, "tensorflow": 20.0},
    "worker_rss_mb": {"onnx": 500.0, "tensorflow": 1200.0},
}


# ----------------------------------------------------------------------------- helpers
def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary_ms(samples: list[float]) -> dict:
    return {
        "n": len(samples),
        "median_ms": round(statistics.median(samples), 2),
        "p95_ms": round(percentile(samples, 95), 2),
        "min_ms": round(min(samples), 2),
    }


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 1e6


def peak_rss_mb() -> float:
    """This process's high-water RSS (VmHWM: unlike ru_maxrss, not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e6
    return rss_mb()


def sample_images(data_dir: Path, count: int) -> list[Path]:
    from model_training.export import sample_images as pick

    return pick(data_dir, count)


def floor_ms(input_size: int, cores: int, gflops_per_core: float) -> float:
    gflop = RESNET50_GFLOP_224 * (input_size / 224) ** 2
    return gflop / (cores * gflops_per_core) * 1000


def machine() -> dict:
    from cxr.inference import usable_cores

    info = {"cpu": platform.processor() or "unknown", "cores": usable_cores(), "python": platform.python_version(),
            "platform": platform.platform()}
    try:
        text = Path("/proc/cpuinfo").read_text()
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name"))
        flags = next(line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags"))
        info["simd"] = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16") if f in flags]
        family = next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("cpu family"))
        model = next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model\t"))
        info["cpu_family_model"] = f"{family}/{model}"
        mem = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
        info["memory_gb"] = round(int(mem.split()[1]) / 1e6, 1)
    except (OSError, StopIteration):
        pass
    versions = {}
    for name in ("onnxruntime", "tensorflow", "keras", "numpy", "PIL", "gunicorn", "flask"):
        try:
            from importlib.metadata import version

            versions[name] = version({"PIL": "pillow", "tensorflow": "tensorflow-cpu"}.get(name, name))
        except Exception:  # noqa: BLE001 - a missing package is just not listed
            pass
    info["versions"] = versions
    return info


# ----------------------------------------------------------------------------- children
def child_forward(model: str, backend: str, images: list[str], repeats: int, precision: str = "auto") -> dict:
    """Runs in its own process: load one backend (and precision), time forward and preprocess per image."""
    import numpy as np

    started = time.perf_counter()
    from cxr.inference import load_predictor

    predictor = load_predictor(model, backend=backend, precision=precision)
    load_s = time.perf_counter() - started
    payloads = [Path(p).read_bytes() for p in images]
    arrays = [predictor.prepare(b).array for b in payloads]
    for a in arrays[:2]:
        predictor.predict_prepared([a])  # warm caches beyond load_predictor's own warm-up
    forward, preprocess = [], []
    for _ in range(repeats):
        for data, array in zip(payloads, arrays):
            t0 = time.perf_counter()
            predictor.prepare(data)
            t1 = time.perf_counter()
            predictor.predict_prepared([array])
            t2 = time.perf_counter()
            preprocess.append((t1 - t0) * 1000)
            forward.append((t2 - t1) * 1000)
    probs = predictor.forward(np.stack(arrays))
    return {
        "backend": predictor.backend,
        "precision": predictor.precision,
        "input_size": predictor.input_size,
        "load_s": round(load_s, 2),
        "forward": summary_ms(forward),
        "preprocess": summary_ms(preprocess),
        "rss_mb": round(rss_mb(), 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "tensorflow_imported": "tensorflow" in sys.modules,
        "probabilities": probs.round(6).tolist(),
    }


def child_baseline(model: str, images: list[str], predicts: int) -> dict:
    """The original app's request path: Keras ``model.predict`` three times per image."""
    import numpy as np

    from cxr.preprocessing import load_image_file
    from model_training.model import load_classifier

    started = time.perf_counter()
    classifier = load_classifier(model)
    size = classifier.input_shape[1]
    load_s = time.perf_counter() - started
    classifier.predict(np.zeros((1, size, size, 3), np.float32), verbose=0)  # first call traces
    per_image = []
    for path in images:
        t0 = time.perf_counter()
        x = load_image_file(path, size)[np.newaxis]
        for _ in range(predicts):
            classifier.predict(x, verbose=0)
        per_image.append((time.perf_counter() - t0) * 1000)
    return {"predicts_per_image": predicts, "load_s": round(load_s, 2), "per_image": summary_ms(per_image),
            "peak_rss_mb": round(peak_rss_mb(), 1)}


def run_child(args: list[str], timeout: float = 600) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, __file__, *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=timeout, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"bench child {args[:2]} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- HTTP
class Server(GunicornServer):
    """``make run``'s server with gunicorn.conf.py's own layout (``tests.web_support``'s launcher,
    shared with the tests), and the peak RSS of its master and of every worker watched."""

    def __init__(self, model: str, backend: str, extra_env: dict[str, str] | None = None):
        super().__init__(model, workers=None, threads=None, start=False,
                         extra_env={"INFERENCE_BACKEND": backend, "LOG_LEVEL": "warning", **(extra_env or {})})
        self.worker_peak_rss: dict[int, float] = {}
        self.master_peak_rss = 0.0
        self._watching = threading.Event()

    def launch(self, timeout: float) -> float:
        """Start it, watch its memory, and return the seconds until /readyz first answers 200."""
        self.start()
        self._watching.set()
        threading.Thread(target=self._watch_rss, daemon=True).start()
        return self.wait_ready(expected_loads=0, timeout=timeout, poll=0.05)

    def _watch_rss(self) -> None:
        import psutil

        try:
            master = psutil.Process(self.proc.pid)
            while self._watching.is_set():
                self.master_peak_rss = max(self.master_peak_rss, master.memory_info().rss / 1e6)
                for child in master.children():
                    try:
                        rss = child.memory_info().rss / 1e6
                    except psutil.Error:
                        continue
                    self.worker_peak_rss[child.pid] = max(self.worker_peak_rss.get(child.pid, 0.0), rss)
                time.sleep(0.1)
        except psutil.Error:
            pass

    def stop(self, timeout: float = 30.0) -> int | None:
        self._watching.clear()
        return super().stop(timeout)


def load(url: str, payloads: list[bytes], concurrency: int, seconds: float, keep_latencies: bool = False) -> dict:
    """Closed loop: ``concurrency`` clients post X-rays back to back for ``seconds``.

    Clients use keep-alive ``http.client`` connections and pre-encoded bodies, so the
    client's own CPU (it shares the cores with the server) stays out of the latency.
    """
    import http.client
    from urllib.parse import urlsplit

    host, port = urlsplit(url).hostname, urlsplit(url).port
    bodies = [multipart([("xray.jpg", p)]) for p in payloads]
    latencies: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def client(index: int) -> None:
        connection = http.client.HTTPConnection(host, port, timeout=120)
        i = index
        while time.perf_counter() < deadline:
            body, content_type = bodies[i % len(bodies)]
            i += 1
            t0 = time.perf_counter()
            try:
                connection.request("POST", "/predict", body=body, headers={"Content-Type": content_type})
                response = connection.getresponse()
                payload = response.read()
                ok = response.status == 200 and b'"probabilities"' in payload
                key = "200" if ok else str(response.status)
                if response.getheader("Connection", "").lower() == "close":
                    connection.close()
            except (OSError, http.client.HTTPException) as exc:
                key = exc.__class__.__name__
                connection.close()
                connection = http.client.HTTPConnection(host, port, timeout=120)
            elapsed = (time.perf_counter() - t0) * 1000
            with lock:
                if key == "200":
                    latencies.append(elapsed)
                else:
                    errors[key] = errors.get(key, 0) + 1
        connection.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return {
        "concurrency": concurrency,
        "seconds": round(wall, 2),
        "requests": len(latencies),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "throughput_rps": round(len(latencies) / wall, 2),
        "p50_ms": _r(percentile(latencies, 50)),
        "p95_ms": _r(percentile(latencies, 95)),
        "p99_ms": _r(percentile(latencies, 99)),
        **({"latencies": latencies} if keep_latencies else {}),
    }


def load_batch(url: str, payloads: list[bytes], size: int, seconds: float, keep_latencies: bool = False) -> dict:
    """One client posting ``/predict/batch`` requests of ``size`` X-rays back to back for ``seconds``.

    A request counts only when it answers 200 with ``size`` classified items.
    """
    import http.client
    from urllib.parse import urlsplit

    host, port = urlsplit(url).hostname, urlsplit(url).port
    # A few pre-encoded bodies, each starting at another image, so batches are not all alike.
    bodies = [multipart([(f"xray{k}.jpg", payloads[(start + k) % len(payloads)]) for k in range(size)], field="files")
              for start in range(min(len(payloads), 4))]
    latencies: list[float] = []
    errors: dict[str, int] = {}
    connection = http.client.HTTPConnection(host, port, timeout=120)
    started = time.perf_counter()
    deadline = started + seconds
    i = 0
    while time.perf_counter() < deadline:
        body, content_type = bodies[i % len(bodies)]
        i += 1
        t0 = time.perf_counter()
        try:
            connection.request("POST", "/predict/batch", body=body, headers={"Content-Type": content_type})
            response = connection.getresponse()
            payload = response.read()
            ok = response.status == 200 and payload.count(b'"label"') == size
            key = "200" if ok else str(response.status)
        except (OSError, http.client.HTTPException) as exc:
            key = exc.__class__.__name__
            connection.close()
            connection = http.client.HTTPConnection(host, port, timeout=120)
        elapsed = (time.perf_counter() - t0) * 1000
        if key == "200":
            latencies.append(elapsed)
        else:
            errors[key] = errors.get(key, 0) + 1
    connection.close()
    wall = time.perf_counter() - started
    return {
        "batch_size": size,
        "seconds": round(wall, 2),
        "requests": len(latencies),
        "images": len(latencies) * size,
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "images_per_s": round(len(latencies) * size / wall, 2),
        "p50_ms": _r(percentile(latencies, 50)),
        "p95_ms": _r(percentile(latencies, 95)),
        **({"latencies": latencies} if keep_latencies else {}),
    }


def paired_batch(url: str, payloads: list[bytes], size: int, seconds: float, window: float = 1.5) -> dict:
    """``/predict/batch`` of ``size`` files against single ``/predict`` calls, one client each,
    in alternating windows of ``window`` seconds until each had ``seconds``.

    Interleaving gives both the same share of whatever else runs on the machine, so their
    ratio holds on a busy machine where two separate 15 s runs would not be comparable.
    """
    singles, batches = [], []
    spent = 0.0
    window = min(window, seconds)
    while spent < seconds - 1e-9:
        step = min(window, seconds - spent)
        singles.append(load(url, payloads, 1, step, keep_latencies=True))
        batches.append(load_batch(url, payloads, size, step, keep_latencies=True))
        spent += step

    def pooled(runs: list[dict], per_request: int) -> dict:
        latencies = [x for run in runs for x in run.pop("latencies")]
        wall = sum(run["seconds"] for run in runs)
        errors = sum(run["errors"] for run in runs)
        return {"seconds": round(wall, 2), "requests": len(latencies), "images": len(latencies) * per_request,
                "errors": errors, "images_per_s": round(len(latencies) * per_request / wall, 2) if wall else 0.0,
                "p50_ms": _r(percentile(latencies, 50)), "p95_ms": _r(percentile(latencies, 95))}

    batch, single = pooled(batches, size), pooled(singles, 1)
    return {"batch_size": size, "windows": len(batches), "window_s": window, **batch, "single": single,
            "over_single": round(batch["images_per_s"] / single["images_per_s"], 2) if single["images_per_s"] else None}


def _r(value):
    return None if value is None else round(value, 2)


LAYOUT_KEYS = ("WEB_CONCURRENCY", "GUNICORN_THREADS", "INFERENCE_INTRA_OP_THREADS", "INFERENCE_CONCURRENCY")
# The alternative layout the issue measured best for throughput: two single-threaded workers.
ALT_LAYOUT = {"WEB_CONCURRENCY": "2", "INFERENCE_INTRA_OP_THREADS": "1"}


def http_bench(model: str, backend: str, payloads: list[bytes], seconds: float, levels=(1, 4, 16),
               ready_timeout: float = 180, extra_env: dict[str, str] | None = None, batch_sizes=()) -> dict:
    with Server(model, backend, extra_env) as server:
        ready_s = server.launch(ready_timeout)
        info = __import__("requests").get(server.url + "/readyz", timeout=5).json()
        served_by = (info.get("model") or {}).get("backend")
        load(server.url, payloads, 2, 1.0)  # warm every path (and both workers' first requests)
        runs = {f"c{c}": load(server.url, payloads, c, seconds) for c in levels}
        if batch_sizes:
            load_batch(server.url, payloads, max(batch_sizes), 1.0)  # warm the largest batch shape
            runs["batch"] = {f"b{b}": paired_batch(server.url, payloads, b, seconds) for b in batch_sizes}
        server.stop()
        return {
            "backend": served_by,
            "command": " ".join(GUNICORN_COMMAND),
            "layout": {k: server.env.get(k, "default") for k in LAYOUT_KEYS},
            "ready_s": round(ready_s, 2),
            "workers": len(server.worker_peak_rss),
            "worker_peak_rss_mb": round(max(server.worker_peak_rss.values(), default=0.0), 1),
            "master_peak_rss_mb": round(server.master_peak_rss, 1),
            **runs,
        }


def gate_cost(model: Path, backend: str, payloads: list[bytes], seconds: float, ready_timeout: float = 180) -> dict:
    """[7] /predict p50 with and without the input gate, paired: two servers (the second serves
    the same files minus ``<model>.gate.*``), one client alternating requests between them."""
    from cxr.gate import gate_paths

    if not all(p.is_file() for p in gate_paths(model)):
        return {"skipped": f"no gate next to {model} (python -m model_training.gate --model {model})"}
    with tempfile.TemporaryDirectory(prefix="bench-nogate-") as tmp:
        bare = Path(tmp) / model.name
        stem = str(model)[: -len(model.suffix)]
        for suffix in (model.suffix, ".json", ".onnx", ".onnx.json", ".int8.onnx", ".int8.onnx.json"):
            if Path(stem + suffix).is_file():
                Path(str(bare)[: -len(model.suffix)] + suffix).symlink_to(stem + suffix)
        with Server(str(model), backend) as gated, Server(str(bare), backend) as ungated:
            gated.launch(ready_timeout), ungated.launch(ready_timeout)
            requests = __import__("requests")
            models = [requests.get(s.url + "/readyz", timeout=5).json()["model"] for s in (gated, ungated)]
            flags = [m.get("input_gate") for m in models]
            if flags != [True, False]:
                raise RuntimeError(f"gate bench: expected input_gate true/false, the servers say {flags}")
            if models[0].get("precision") != models[1].get("precision"):  # the same graph, gate aside
                raise RuntimeError(f"gate bench: the servers run {[m.get('precision') for m in models]}")
            latencies, errors = alternate((gated, ungated), payloads, 2 * seconds + 2.0)
    with_gate, without = summary_ms(latencies[0]), summary_ms(latencies[1])
    return {"backend": backend, "with_gate": with_gate, "without_gate": without, "errors": errors,
            "p50_cost": round(with_gate["median_ms"] / without["median_ms"] - 1, 4)}


# Issue 23: "on" records the Prometheus metrics and writes one JSON log line per request (as on
# App Engine); "off" does neither (METRICS=false, and the request log below LOG_LEVEL).
OPS_ON = {"METRICS": "true", "LOG_FORMAT": "json", "LOG_LEVEL": "info"}
OPS_OFF = {"METRICS": "false", "LOG_FORMAT": "text", "LOG_LEVEL": "warning"}


def ops_cost(model: Path, backend: str, payloads: list[bytes], seconds: float, ready_timeout: float = 180) -> dict:
    """[9] /predict p50 with metrics + JSON request logs on and off, paired as [7]: two servers, one
    client alternating requests between them."""
    with Server(str(model), backend, extra_env=OPS_ON) as on, Server(str(model), backend, extra_env=OPS_OFF) as off:
        on.launch(ready_timeout), off.launch(ready_timeout)
        latencies, errors = alternate((on, off), payloads, 2 * seconds + 2.0)
        logged = on.log_text().count('"logger": "cxr.access"')
    with_ops, without = summary_ms(latencies[0]), summary_ms(latencies[1])
    return {"backend": backend, "on": with_ops, "off": without, "errors": errors, "json_log_lines": logged,
            "p50_cost": round(with_ops["median_ms"] / without["median_ms"] - 1, 4)}


def ops_section(results: dict) -> list[str]:
    o = results.get("ops")
    if not o:
        return []
    on, off = o["on"], o["off"]
    return [
        "## Metrics and JSON request logs (issue 23)",
        "",
        f"`POST /predict` p50 with Prometheus recording and JSON request logs on ({OPS_ON}) against off "
        f"({OPS_OFF}), {o['backend']}: two servers started as `make run` starts them, one client alternating "
        f"single requests between them. The first wrote {o['json_log_lines']} JSON access lines.",
        "",
        "| server | requests | p50 | p95 |",
        "|---|---|---|---|",
        f"| metrics + JSON logs | {on['n']} | {on['median_ms']:.1f} ms | {on['p95_ms']:.1f} ms |",
        f"| neither | {off['n']} | {off['median_ms']:.1f} ms | {off['p95_ms']:.1f} ms |",
        "",
        f"p50 cost: {o['p50_cost'] * 100:+.1f}% (target: at most {TARGETS['ops_p50_cost'] * 100:.0f}%).",
        "",
    ]


def ops_only(results: dict, model: Path, backend: str, payloads: list[bytes], load_before: list[float],
             out_dir: Path) -> int:
    """``--ops-only``: the metrics + logs comparison alone, kept as 'ops_run' in results.json."""
    log(f"[9] metrics + JSON logs on/off: /predict alternating for {2 * results['seconds']:g} s, {backend} ...")
    results["command"] += " --ops-only"
    results["ops"] = ops_cost(model, backend, payloads, results["seconds"])
    json_path = merge_results(out_dir, "ops_run", results, load_before)
    print("\n".join(ops_section(results)))
    print(f"updated {json_path}")
    return 0


def alternate(servers, payloads: list[bytes], seconds: float, warm_rounds: int = 4) -> tuple[list[list[float]], int]:
    """One client posts each X-ray to every server in turn (who goes first alternates) for
    ``seconds``: both meet the same load on a shared machine. Latencies in ms per server, and
    the count of non-200 answers."""
    import http.client

    bodies = [multipart([("xray.jpg", p)]) for p in payloads]
    connections = [http.client.HTTPConnection("127.0.0.1", s.port, timeout=120) for s in servers]
    latencies: list[list[float]] = [[] for _ in servers]
    errors = 0
    deadline, i = time.perf_counter() + seconds, 0
    while time.perf_counter() < deadline:
        body, content_type = bodies[i % len(bodies)]
        order = list(range(len(servers)))
        for k in (order if i % 2 == 0 else order[::-1]):
            t0 = time.perf_counter()
            connections[k].request("POST", "/predict", body=body, headers={"Content-Type": content_type})
            response = connections[k].getresponse()
            response.read()
            if response.status != 200:
                errors += 1
            if i >= warm_rounds:  # the first rounds warm every server
                latencies[k].append((time.perf_counter() - t0) * 1000)
        i += 1
    for connection in connections:
        connection.close()
    return latencies, errors


def child_accuracy(model: str) -> dict:
    """[8] fp32 export against its int8 twin on every siim val and test image: AUC both ways and
    decisions changed at the default operating point (``model_training.quantize``'s guard)."""
    from dataclasses import asdict

    from cxr.calibration import DecisionRule
    from cxr.metadata import read_metadata
    from cxr.onnx_status import int8_path, onnx_path
    from model_training.quantize import DEFAULT_DATA_DIR, check, load_split, run_graph

    metadata = read_metadata(model)
    rule, size = DecisionRule.from_metadata(metadata), int(metadata["input_size"])
    out = {}
    for split in ("val", "test"):
        x, y = load_split(DEFAULT_DATA_DIR / split, size)
        guard = check(y, run_graph(onnx_path(model), x), run_graph(int8_path(model), x), rule, split=f"siim {split}")
        out[split] = asdict(guard)
    return out


def precision_compare(model: Path, payloads: list[bytes], images: list[str], seconds: float, repeats: int,
                      ready_timeout: float = 180) -> dict:
    """[8] fp32 against int8 (issue 22), ONNX Runtime: bare forward in fresh processes; two servers
    as ``make run`` starts them, one per precision, one client alternating between them (p50/p95);
    then each alone at c=8 (throughput, p95) with its workers' peak RSS; and accuracy on siim."""
    from cxr.onnx_status import int8_status

    valid, reason = int8_status(model)
    if not valid:
        return {"skipped": reason}
    out: dict = {"forward": {}, "http": {}}
    for precision in PRECISIONS:
        out["forward"][precision] = run_child(["--child", "forward", str(model), "onnx", precision, str(repeats),
                                               *images])
    servers = [Server(str(model), "onnx", {"INFERENCE_PRECISION": p}) for p in PRECISIONS]
    try:
        for server in servers:
            server.launch(ready_timeout)
        served = [__import__("requests").get(s.url + "/readyz", timeout=5).json()["model"]["precision"]
                  for s in servers]
        if served != list(PRECISIONS):
            raise RuntimeError(f"precision bench: expected {PRECISIONS}, the servers say {served}")
        latencies, errors = alternate(servers, payloads, 2 * seconds + 2.0)
        for precision, samples in zip(PRECISIONS, latencies):
            c1 = summary_ms(samples)
            out["http"][precision] = {"c1": {"p50_ms": c1["median_ms"], "p95_ms": c1["p95_ms"], "n": c1["n"]},
                                      "c1_errors": errors}
        for precision, server in zip(PRECISIONS, servers):
            out["http"][precision]["c8"] = load(server.url, payloads, 8, seconds)
            out["http"][precision]["worker_peak_rss_mb"] = round(max(server.worker_peak_rss.values(), default=0), 1)
    finally:
        for server in servers:
            server.stop()
    out["accuracy"] = run_child(["--child", "accuracy", str(model)], timeout=1200)
    fp32, int8 = out["http"]["fp32"], out["http"]["int8"]
    test = out["accuracy"]["test"]
    out["int8_p50_speedup"] = round(fp32["c1"]["p50_ms"] / int8["c1"]["p50_ms"], 2)
    out["int8_forward_speedup"] = round(out["forward"]["fp32"]["forward"]["median_ms"]
                                        / out["forward"]["int8"]["forward"]["median_ms"], 2)
    out["test_auc_drop"] = round(test["auc_fp32"] - test["auc_int8"], 4)
    out["test_flip_share"] = round(test["flips"] / test["images"], 4)
    return out


# ----------------------------------------------------------------------------- model
def resolve_model(requested: str | None, data_dir: Path, size: int) -> tuple[Path, str]:
    if requested:
        return Path(requested), "given with --model"
    env = os.environ.get("MODEL_PATH")
    for candidate in ([Path(env)] if env else []) + [DEFAULT_MODEL]:
        candidate = candidate if candidate.is_absolute() else ROOT / candidate
        if candidate.is_file():
            return candidate, "the shipped model"
    if not FALLBACK_MODEL.is_file():
        log(f"No shipped model: training a small real one with the project's CLI into {FALLBACK_MODEL} ...")
        rc = subprocess.call([
            sys.executable, "-m", "model_training.train", "--data-dir", str(data_dir), "--out", str(FALLBACK_MODEL),
            "--weights", "none", "--image-size", str(size), "--epochs", "1", "--limit", "64",
            "--batch-size", "16", "--head", "gap", "--seed", "0",
        ], cwd=ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, stdout=sys.stderr)
        if rc != 0:
            raise SystemExit("training the bench model failed")
    return FALLBACK_MODEL, (f"no shipped model: a real {size}px ResNet50 trained 1 epoch on 64 real X-rays "
                            "by model_training.train (weights none); speed does not depend on the weights")


# ----------------------------------------------------------------------------- report
def ratios(results: dict) -> dict:
    out = {}
    fwd = results["forward"]
    ours = fwd.get("onnx") or fwd.get("tensorflow")
    ours_backend = "onnx" if fwd.get("onnx") else "tensorflow"
    floor = results["compute_floor_ms"]
    for backend, figures in fwd.items():
        out[f"forward_over_floor_{backend}"] = round(figures["forward"]["median_ms"] / floor, 2)
    http = results["http"].get(ours_backend)
    if http and http["c1"]["p50_ms"]:
        out["http_p50_over_forward"] = round(http["c1"]["p50_ms"] / ours["forward"]["median_ms"], 2)
        out["http_p50_over_floor"] = round(http["c1"]["p50_ms"] / floor, 2)
        if "c16" in http:
            out["c16_throughput_over_forward_rate"] = round(
                http["c16"]["throughput_rps"] * ours["forward"]["median_ms"] / 1000, 2)
    if http and "batch" in http:
        for key, run in http["batch"].items():
            out[f"batch_{key}_over_single_c1"] = run["over_single"]
    baseline = results.get("baseline")
    if baseline:
        per_request = ours["forward"]["median_ms"] + ours["preprocess"]["median_ms"]
        out["baseline_over_ours"] = round(baseline["per_image"]["median_ms"] / per_request, 1)
        if http and http["c1"]["p50_ms"]:
            out["baseline_over_ours_http_p50"] = round(baseline["per_image"]["median_ms"] / http["c1"]["p50_ms"], 1)
    return out


def table(results: dict) -> str:
    rows = [("measure", "value")]
    for backend, f in results["forward"].items():
        rows.append((f"bare forward, {backend} (median / p95)",
                     f"{f['forward']['median_ms']:.1f} / {f['forward']['p95_ms']:.1f} ms"))
        rows.append((f"load in a fresh process, {backend}", f"{f['load_s']:.1f} s, {f['peak_rss_mb']:.0f} MB peak RSS"))
    first = next(iter(results["forward"].values()))
    rows.append(("decode + preprocess (median)", f"{first['preprocess']['median_ms']:.1f} ms"))
    rows.append(("compute floor", f"{results['compute_floor_ms']:.1f} ms"))
    if results.get("baseline"):
        b = results["baseline"]
        rows.append((f"naive baseline: model.predict x{b['predicts_per_image']} per image (median)",
                     f"{b['per_image']['median_ms']:.1f} ms"))
    for backend, h in results["http"].items():
        c1 = h["c1"]
        rows.append((f"HTTP {backend} c=1 p50 / p95 / p99",
                     f"{c1['p50_ms']:.1f} / {c1['p95_ms']:.1f} / {c1['p99_ms']:.1f} ms ({c1['errors']} errors)"))
        for level in ("c4", "c16"):
            if level in h:
                r = h[level]
                rows.append((f"HTTP {backend} {level.replace('c', 'c=')} throughput, p95",
                             f"{r['throughput_rps']:.1f} req/s, {r['p95_ms']:.0f} ms ({r['errors']} errors)"))
        for run in h.get("batch", {}).values():
            rows.append((f"HTTP {backend} /predict/batch, {run['batch_size']} files/request, 1 client",
                         f"{run['images_per_s']:.1f} images/s vs {run['single']['images_per_s']:.1f} single, "
                         f"p50 {run['p50_ms']:.0f} ms/request ({run['errors'] + run['single']['errors']} errors)"))
        rows.append((f"HTTP {backend} ready (/readyz 200), worker peak RSS",
                     f"{h['ready_s']:.1f} s, {h['worker_peak_rss_mb']:.0f} MB x {h['workers']} worker(s)"))
    alt = results.get("http_alt_layout")
    if alt:
        name = ", ".join(f"{k}={v}" for k, v in ALT_LAYOUT.items())
        rows.append((f"HTTP onnx, {name}: c=1 p50", f"{alt['c1']['p50_ms']:.1f} ms ({alt['c1']['errors']} errors)"))
        rows.append((f"HTTP onnx, {name}: c=16 throughput, p95",
                     f"{alt['c16']['throughput_rps']:.1f} req/s, {alt['c16']['p95_ms']:.0f} ms "
                     f"({alt['c16']['errors']} errors), {alt['worker_peak_rss_mb']:.0f} MB x {alt['workers']}"))
    for key, value in results["ratios"].items():
        rows.append((key.replace("_", " "), f"{value}"))
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{a:<{width}}  {b}" for a, b in rows)


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [
        "# Serving benchmark",
        "",
        f"One run of `{results['command']}` on {results['created']}. The machine is shared (model trainings "
        "and other developers' test runs may run at the same time, see the load average) and noisy: compare figures "
        "within this run, never across runs.",
        "",
        f"- Machine: {m.get('cpu')} (family/model {m.get('cpu_family_model', '?')}), {m['cores']} usable cores, "
        f"SIMD {', '.join(m.get('simd', []))}, {m.get('memory_gb', '?')} GB RAM; {m['platform']}",
        f"- Load average (1/5/15 min) before: {results['load_average']['before']}, "
        f"after: {results['load_average']['after']}",
        f"- Versions: Python {m['python']}, " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
        f"- Model: `{results['model']['path']}` ({results['model']['input_size']} px, sha256 "
        f"{results['model']['sha256'][:12]}; {results['model']['origin']})",
        f"- Images: {results['images']} real X-rays from the test split; HTTP runs {results['seconds']} s per level, "
        "loopback, closed-loop keep-alive clients posting multipart uploads",
        f"- Compute floor: {RESNET50_GFLOP_224} GFLOP x ({results['model']['input_size']}/224)^2 / "
        f"({results['floor']['cores']} cores x {results['floor']['gflops_per_core']} GFLOP/s) = "
        f"{results['compute_floor_ms']:.1f} ms",
        "",
        "```",
        table(results),
        "```",
        "",
    ]
    lines += batch_section(results)
    lines += gate_section(results)
    lines += ops_section(results)
    lines += precision_section(results)
    lines += [
        "## Targets (issue 5)",
        "",
    ]
    lines += [f"- {line}" for line in results["targets"]]
    lines.append("")
    return "\n".join(lines)


def batch_section(results: dict, separate: bool = False) -> list[str]:
    """The ``/predict/batch`` figures (issue 13) as a table against single ``/predict`` calls;
    ``separate``: they come from a ``--batch-only`` run, not from the run of the main table."""
    backend, h = next(((b, h) for b, h in results["http"].items() if "batch" in h), (None, None))
    if h is None:
        return []
    c1, c4 = h["c1"], h.get("c4")
    load_average = results.get("load_average", {})
    lines = [
        "## Batch prediction (issue 13)",
        "",
        (f"From its own run, `{results['command']}` on {results['created']} (model `{results['model']['path']}`, "
         f"{results['model']['input_size']} px; {results['machine'].get('cpu')}, {results['machine']['cores']} "
         "usable cores), not the run of the table above: compare within this section only. "
         if separate else "")
        + f"`POST /predict/batch` on {'a' if separate else 'the'} gunicorn server"
        f"{'' if separate else ' of the table above'} ({backend}, `make run`'s layout). For "
        f"each batch size, one client alternates {h['batch']['b1'].get('window_s', 1.5):g} s windows of batches with "
        "windows of single `/predict` calls (one client too) until each had "
        f"{results['seconds']} s, so both meet the same load on a shared machine; images/s counts images "
        "classified (200 answers only). One batch is decoded file by file, then one forward pass. "
        f"Load average (1/5/15 min) before the run: {load_average.get('before')}, after: {load_average.get('after')}.",
        "",
        "| files per request | batch images/s | single `/predict` images/s (same windows) | batch / single "
        "| batch p50 per request | single p50 |",
        "|---|---|---|---|---|---|",
    ]
    for run in h["batch"].values():
        single = run["single"]
        lines.append(f"| {run['batch_size']} | {run['images_per_s']:.1f} | {single['images_per_s']:.1f} | "
                     f"{run['over_single']:.2f}x | {run['p50_ms']:.0f} ms | {single['p50_ms']:.0f} ms |")
    lines += ["", "Compare a batch client with c=1: both have one request in flight. Parallel clients (c=4) run "
              "several passes at once, which on a loaded machine also wins CPU time from the other processes, so "
              "they are no fair yardstick when the load average is high. "
              f"For reference, single `/predict` calls {'in this run' if separate else 'in the runs above'}: "
              f"{c1['throughput_rps']:.1f} req/s from "
              "one client (c=1)"
              + (f", {c4['throughput_rps']:.1f} req/s from four parallel clients (c=4)" if c4 else "")
              + ".", ""]
    return lines


def gate_section(results: dict) -> list[str]:
    g = results.get("gate")
    if not g:
        return []
    if "skipped" in g:
        return ["## Input gate (issue 12)", "", f"Not measured: {g['skipped']}.", ""]
    w, wo = g["with_gate"], g["without_gate"]
    return [
        "## Input gate (issue 12)",
        "",
        f"`POST /predict` p50 with the input gate against the same model without it ({g['backend']}): two "
        "servers started as `make run` starts them, the second serving the same files minus `<model>.gate.*`; "
        "one client alternates single requests between them (who goes first alternates too), so both meet "
        "the same load.",
        "",
        "| server | requests | p50 | p95 |",
        "|---|---|---|---|",
        f"| with the gate | {w['n']} | {w['median_ms']:.1f} ms | {w['p95_ms']:.1f} ms |",
        f"| without | {wo['n']} | {wo['median_ms']:.1f} ms | {wo['p95_ms']:.1f} ms |",
        "",
        f"p50 cost of the gate: {g['p50_cost'] * 100:+.1f}% (target: at most "
        f"{TARGETS['gate_p50_cost'] * 100:.0f}%).",
        "",
    ]


def precision_section(results: dict) -> list[str]:
    p = results.get("precision")
    if not p:
        return []
    if "skipped" in p:
        return ["## int8 against fp32 (issue 22)", "", f"Not measured: {p['skipped']}.", ""]
    lines = [
        "## int8 against fp32 (issue 22)",
        "",
        "The ONNX export and its int8 twin (`model_training.quantize`), each served by a server started as "
        "`make run` starts it with `INFERENCE_PRECISION` set; one client alternates single `/predict` requests "
        "between them (p50/p95), then each alone takes eight clients (throughput). Bare forward passes in fresh "
        "processes. Accuracy on every siim val and test image, at the default operating point.",
        "",
        "| precision | bare forward median | `/predict` p50 | p95 | c=8 throughput, p95 | worker peak RSS |",
        "|---|---|---|---|---|---|",
    ]
    for precision in PRECISIONS:
        f, h = p["forward"][precision], p["http"][precision]
        lines.append(f"| {precision} | {f['forward']['median_ms']:.1f} ms | {h['c1']['p50_ms']:.1f} ms | "
                     f"{h['c1']['p95_ms']:.1f} ms | {h['c8']['throughput_rps']:.1f} req/s, {h['c8']['p95_ms']:.0f} ms "
                     f"| {h['worker_peak_rss_mb']:.0f} MB |")
    lines += ["", "| siim split | images | AUC fp32 | AUC int8 | decisions changed | largest P(Covid) change |",
              "|---|---|---|---|---|---|"]
    for split in ("val", "test"):
        a = p["accuracy"][split]
        lines.append(f"| {split} | {a['images']} | {a['auc_fp32']:.4f} | {a['auc_int8']:.4f} | {a['flips']} "
                     f"({a['flips'] / a['images']:.1%}) | {a['max_abs_diff']:.3f} |")
    lines += ["", f"int8 `/predict` p50 speed-up: {p['int8_p50_speedup']}x (bare forward {p['int8_forward_speedup']}x; "
              f"target at least {TARGETS['int8_p50_speedup']}x); siim test AUC drop {p['test_auc_drop']:+.4f} "
              f"(target at most {TARGETS['int8_test_auc_drop']}); decisions changed on "
              f"{p['test_flip_share']:.1%} of siim test (target at most {TARGETS['int8_test_flip_share']:.0%}).", ""]
    return lines


def check_targets(results: dict) -> list[str]:
    r, out = results["ratios"], []

    def verdict(name, value, limit, higher_is_better=False):
        if value is None:
            return
        ok = value >= limit if higher_is_better else value <= limit
        out.append(f"{'met' if ok else 'MISSED'}: {name} = {value} ({'>=' if higher_is_better else '<='} {limit})")

    verdict("HTTP p50 / bare forward", r.get("http_p50_over_forward"), TARGETS["http_p50_over_forward"])
    verdict("HTTP p50 / compute floor", r.get("http_p50_over_floor"), TARGETS["forward_over_floor"])
    verdict("baseline / ours", r.get("baseline_over_ours"), TARGETS["baseline_over_ours"], True)
    verdict("c=16 throughput x bare forward", r.get("c16_throughput_over_forward_rate"),
            TARGETS["c16_throughput_over_forward_rate"], True)
    gate = results.get("gate") or {}
    if "p50_cost" in gate:
        verdict("input gate /predict p50 cost", gate["p50_cost"], TARGETS["gate_p50_cost"])
        verdict("HTTP errors (gate bench)", gate["errors"], 0)
    ops = results.get("ops") or {}
    if "p50_cost" in ops:
        verdict("metrics + JSON logs /predict p50 cost", ops["p50_cost"], TARGETS["ops_p50_cost"])
        verdict("HTTP errors (metrics + logs bench)", ops["errors"], 0)
    precision = results.get("precision") or {}
    if "int8_p50_speedup" in precision:
        verdict("int8 /predict p50 speed-up over fp32", precision["int8_p50_speedup"], TARGETS["int8_p50_speedup"],
                True)
        verdict("int8 siim test AUC drop", precision["test_auc_drop"], TARGETS["int8_test_auc_drop"])
        verdict("int8 siim test decisions changed (share)", precision["test_flip_share"],
                TARGETS["int8_test_flip_share"])
    for backend, h in results["http"].items():
        verdict(f"ready s ({backend})", h["ready_s"], TARGETS["ready_s"].get(backend, 20.0))
        verdict(f"worker peak RSS MB ({backend})", h["worker_peak_rss_mb"], TARGETS["worker_rss_mb"].get(backend, 1200))
        errors = sum(h[k]["errors"] for k in h if k.startswith("c") and isinstance(h[k], dict))
        errors += sum(run["errors"] + run["single"]["errors"] for run in h.get("batch", {}).values())
        verdict(f"HTTP errors ({backend})", errors, 0)
    return out


def batch_only(results: dict, model: Path, backend: str, payloads: list[bytes], load_before: list[float],
               out_dir: Path) -> int:
    """``--batch-only``: the batch comparison alone, merged into an existing report."""
    results["command"] += " --batch-only"
    for key in ("floor", "compute_floor_ms", "forward"):
        results.pop(key, None)
    log(f"[6] gunicorn as `make run`, {backend}: c=1/4, then /predict/batch of "
        f"{'/'.join(map(str, BATCH_SIZES))} against single calls, {results['seconds']:g} s each ...")
    results["http"] = {backend: http_bench(str(model), backend, payloads, results["seconds"],
                                           levels=(1, 4), batch_sizes=BATCH_SIZES)}
    json_path = merge_results(out_dir, "batch_run", results, load_before)
    section = write_batch_section(out_dir / "RESULTS.md", results)
    print(section)
    print(f"updated {json_path} and {out_dir / 'RESULTS.md'}")
    return 0


def merge_results(out_dir: Path, key: str, results: dict, load_before: list[float]) -> Path:
    """A partial run's figures, kept under ``key`` in an existing results.json (the rest stays)."""
    from cxr.metadata import write_json_atomic

    results["load_average"] = {"before": load_before, "after": [round(x, 2) for x in os.getloadavg()]}
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "results.json"
    merged = json.loads(json_path.read_text()) if json_path.exists() else {}
    merged[key] = results
    write_json_atomic(json_path, merged)
    return json_path


def gate_only(results: dict, model: Path, backend: str, payloads: list[bytes], load_before: list[float],
              out_dir: Path) -> int:
    """``--gate-only``: the gate comparison alone, merged into an existing report."""
    log(f"[7] input gate: /predict with and without it, {backend}, alternating for {2 * results['seconds']:g} s ...")
    results["command"] += " --gate-only"
    results["gate"] = gate_cost(model, backend, payloads, results["seconds"])
    json_path = merge_results(out_dir, "gate_run", results, load_before)
    section = gate_section(results)
    section.insert(2, f"From its own run, `{results['command']}` on {results['created']}, load average before "
                      f"{load_before}, after {results['load_average']['after']}: compare within this section only.")
    section.insert(3, "")
    report = out_dir / "RESULTS.md"
    body = "\n".join(section) + "\n"
    write_section(report, "## Input gate (issue 12)", body)
    print(body)
    print(f"updated {json_path} and {report}")
    return 0


def write_batch_section(report_path: Path, results: dict) -> str:
    """Put the batch section of a ``--batch-only`` run into ``report_path`` and return it."""
    section = "\n".join(batch_section(results, separate=True))
    write_section(report_path, "## Batch prediction (issue 13)", section)
    return section


def write_section(report_path: Path, heading: str, section: str) -> None:
    """Put ``section`` (starting with ``heading``) into the report of a partial run: in place of
    an older one, else before the targets, else at the end; the rest stays as it is."""
    from cxr.metadata import atomic_path

    text = report_path.read_text() if report_path.exists() else "# Serving benchmark\n\n"
    head, marker, rest = text.partition(heading)
    if marker:  # replace the old section, up to the next one
        following = rest.find("\n## ")
        text = head + section + ("\n" + rest[following + 1:] if following >= 0 else "")
    elif "## Targets" in text:
        head, marker, rest = text.partition("## Targets")
        text = head + section + "\n" + marker + rest
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with atomic_path(report_path) as tmp:
        tmp.write_text(text)


# ----------------------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python bench/serving.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default=None, help="the .h5 to serve (default: $MODEL_PATH, models/covid_resnet50.h5, "
                   "else a small real model trained once into bench/.model/)")
    p.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR), help="real X-rays (test split used)")
    p.add_argument("--images", type=int, default=8, help="how many X-rays")
    p.add_argument("--seconds", type=float, default=15.0, help="duration of each HTTP concurrency level")
    p.add_argument("--repeats", type=int, default=5, help="bare-forward passes over all images")
    p.add_argument("--backends", default=",".join(BACKENDS), help="backends to measure (comma-separated)")
    p.add_argument("--fallback-size", type=int, default=224, help="input size of the fallback model (no shipped one)")
    p.add_argument("--gflops-per-core", type=float, default=PEAK_GFLOPS_PER_CORE, help="peak float32 GFLOP/s per core")
    p.add_argument("--out-dir", default=None, help="where results.json and RESULTS.md go (default bench/; "
                   "--quick: a temporary folder)")
    p.add_argument("--no-alt-layout", action="store_true",
                   help=f"skip the comparison with the alternative gunicorn layout {ALT_LAYOUT}")
    p.add_argument("--batch-only", action="store_true",
                   help="only the /predict/batch comparison (issue 13), on the first backend: rewrites the batch "
                        "section of RESULTS.md and results.json's 'batch_run', leaving the other figures as they are")
    p.add_argument("--gate-only", action="store_true",
                   help="only the input gate's cost (issue 12), on the first backend: updates results.json's "
                        "'gate_run' and the gate section of RESULTS.md")
    p.add_argument("--ops-only", action="store_true",
                   help="only the cost of metrics + JSON request logs (issue 23), on the first backend: updates "
                        "results.json's 'ops_run'")
    p.add_argument("--quick", action="store_true", help="seconds, for CI: ONNX only, 1 s per level, 2 images")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args.child)

    if args.quick:
        args.images, args.seconds, args.repeats, args.backends = min(args.images, 2), 1.0, 1, "onnx"
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    data_dir = Path(args.data_dir)
    load_before = [round(x, 2) for x in os.getloadavg()]
    model, origin = resolve_model(args.model, data_dir, args.fallback_size)
    model = model.resolve()

    from cxr.metadata import read_metadata, sha256_file
    from model_training.export import ensure_export

    if "onnx" in backends:
        ensure_export(model, log=log)
    size = int(read_metadata(model)["input_size"])
    images = [str(p) for p in sample_images(data_dir, args.images)]
    payloads = [Path(p).read_bytes() for p in images]
    from cxr.inference import usable_cores

    cores = usable_cores()
    results = {
        "command": "python bench/serving.py" + (" --quick" if args.quick else ""),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "model": {"path": str(model.relative_to(ROOT) if model.is_relative_to(ROOT) else model),
                  "input_size": size, "origin": origin, "sha256": sha256_file(model)},
        "images": len(images),
        "seconds": args.seconds,
        "floor": {"gflop": round(RESNET50_GFLOP_224 * (size / 224) ** 2, 3), "cores": cores,
                  "gflops_per_core": args.gflops_per_core},
        "compute_floor_ms": round(floor_ms(size, cores, args.gflops_per_core), 2),
        "forward": {}, "http": {},
    }
    out_dir = Path(args.out_dir) if args.out_dir else (Path(tempfile.mkdtemp(prefix="bench-quick-")) if args.quick
                                                       else ROOT / "bench")
    if args.batch_only:
        return batch_only(results, model, backends[0], payloads, load_before, out_dir)
    if args.gate_only:
        return gate_only(results, model, backends[0], payloads, load_before, out_dir)
    if args.ops_only:
        return ops_only(results, model, backends[0], payloads, load_before, out_dir)
    for backend in backends:
        log(f"[1-2] bare forward + preprocess, {backend} ...")
        results["forward"][backend] = run_child(["--child", "forward", str(model), backend, "auto", str(args.repeats),
                                                 *images])
    log("[4] naive baseline (Keras model.predict x3 per image) ...")
    results["baseline"] = run_child(["--child", "baseline", str(model), "3", *images[: max(1, len(images) // 2)]])
    for backend in backends:
        batch_sizes = BATCH_SIZES if backend == backends[0] else ()
        log(f"[3,5,6] gunicorn as `make run`, {backend}: ready time, c=1/4/16"
            + (f", /predict/batch of {'/'.join(map(str, batch_sizes))}" if batch_sizes else "")
            + f" for {args.seconds:g} s each ...")
        results["http"][backend] = http_bench(str(model), backend, payloads, args.seconds, batch_sizes=batch_sizes)
    if not args.quick and "onnx" in backends and not args.no_alt_layout:
        log(f"[3] alternative layout {ALT_LAYOUT}, onnx: c=1 and c=16 ...")
        results["http_alt_layout"] = http_bench(str(model), "onnx", payloads, args.seconds, levels=(1, 16),
                                                extra_env=ALT_LAYOUT)
    log(f"[7] input gate: /predict with and without it, {backends[0]}, alternating for {2 * args.seconds:g} s ...")
    results["gate"] = gate_cost(model, backends[0], payloads, args.seconds)
    log(f"[9] metrics + JSON logs on/off: /predict alternating for {2 * args.seconds:g} s, {backends[0]} ...")
    results["ops"] = ops_cost(model, backends[0], payloads, args.seconds)
    if "onnx" in backends:
        log(f"[8] fp32 against int8: forward, /predict alternating for {2 * args.seconds:g} s, c=8, siim AUC ...")
        results["precision"] = precision_compare(model, payloads, images, args.seconds, args.repeats)
    results["load_average"] = {"before": load_before, "after": [round(x, 2) for x in os.getloadavg()]}
    results["ratios"] = ratios(results)
    results["targets"] = check_targets(results)

    write_report(results, out_dir)
    return 0


def child_main(child: list[str]) -> int:
    """``--child forward MODEL BACKEND PRECISION REPEATS IMAGE...``, ``--child accuracy MODEL`` or
    ``--child baseline MODEL PREDICTS IMAGE...``: one measurement in a fresh process, printed as one JSON line."""
    kind, model, *rest = child
    if kind == "forward":
        backend, precision, repeats, *images = rest
        print(json.dumps(child_forward(model, backend, images, int(repeats), precision)))
    elif kind == "accuracy":
        print(json.dumps(child_accuracy(model)))
    else:
        predicts, *images = rest
        print(json.dumps(child_baseline(model, images, int(predicts))))
    return 0


def write_report(results: dict, out_dir: Path) -> None:
    """results.json and RESULTS.md in ``out_dir``, and the table and verdicts on stdout."""
    from cxr.metadata import atomic_path, write_json_atomic

    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "results.json", results)
    with atomic_path(out_dir / "RESULTS.md") as tmp:
        tmp.write_text(markdown(results))
    print(table(results))
    print("\n".join(results["targets"]))
    print(f"wrote {out_dir / 'results.json'} and {out_dir / 'RESULTS.md'}")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
