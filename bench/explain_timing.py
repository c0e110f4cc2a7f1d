"""Time a Grad-CAM explanation against a plain prediction of the same upload.

Target (issue 7): explain stays under 3x a plain prediction. Both timings cover the whole
request path after the upload is in memory: decode, preprocess, forward pass (and for
explain: Grad-CAM, colour overlay, PNG encoding).

    python bench/explain_timing.py --model models/covid_resnet50.h5 --image X.jpg
    python bench/explain_timing.py            # a random-weight 224 px ResNet50, gap head
    python bench/explain_timing.py --backend onnx --head flatten
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_IMAGE = ROOT.parent / "shared" / "data" / "cxr" / "test" / "covid"


def random_model(directory: Path, size: int, head: str) -> Path:
    """A 224 px classifier with random weights: same graph and cost as a trained one."""
    from cxr.metadata import CLASS_NAMES, write_json_atomic
    from model_training.model import build_classifier

    path = directory / f"random_{head}_{size}.h5"
    build_classifier(size, weights="none", head=head).save(path)
    write_json_atomic(path.with_suffix(".json"), {
        "name": path.stem, "input_size": size, "class_names": list(CLASS_NAMES), "threshold": 0.5})
    return path


def interleaved_ms(plain, explained, repeats: int) -> tuple[float, float]:
    """Median ms of each, alternating calls so load from other processes hits both alike."""
    plain(), explained()
    a, b = [], []
    for _ in range(repeats):
        for fn, times in ((plain, a), (explained, b)):
            started = time.perf_counter()
            fn()
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(a), statistics.median(b)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="trained .h5 (default: a random-weight model is built)")
    p.add_argument("--image", help="X-ray to explain (default: the first test-split Covid image)")
    p.add_argument("--size", type=int, default=224, help="input size of the random model")
    p.add_argument("--head", choices=("gap", "flatten"), default="gap", help="head of the random model")
    p.add_argument("--backend", choices=("tensorflow", "onnx"), default="tensorflow",
                   help="inference backend (onnx exports the random model first)")
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args(argv)

    from cxr.explain import explain_upload
    from cxr.inference import load_predictor

    image = Path(args.image) if args.image else sorted(DEFAULT_IMAGE.glob("*.jpg"))[0]
    data = image.read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else random_model(Path(tmp), args.size, args.head)
        if args.backend == "onnx" and not args.model:
            from model_training.export import export

            export(model, images=2, log=lambda *a: None)
        predictor = load_predictor(model, backend=args.backend)
        source = predictor
        def explain_and_draw():
            exp, gray = explain_upload(source, data)
            return exp.overlay_png(gray)

        plain, explained = interleaved_ms(lambda: predictor.predict_upload(data), explain_and_draw, args.repeats)
    result = {"model": str(args.model or f"random {args.head} {args.size}px"), "image": image.name,
              "backend": predictor.backend,
              "predict_ms": round(plain, 2), "explain_ms": round(explained, 2),
              "ratio": round(explained / plain, 2), "target_ratio": 3.0}
    print(json.dumps(result))
    return 0 if result["ratio"] < 3.0 else 1


if __name__ == "__main__":
    sys.exit(main())
