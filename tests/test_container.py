"""The container's start-up, reproduced without Docker.

Fresh virtualenvs stand in for the image's pip layers: ``requirements.txt`` for the export
build stage, ``requirements-serve.txt`` alone (no TensorFlow) for the served image. An
empty folder receives exactly what the export build stage's COPY instructions (filtered by
``.dockerignore``) would put in it and the Dockerfile's own export step runs there; a second
empty folder receives what the final stage copies (from the context and, ``COPY --from``, from
the build stage), and the CMD runs there with ``PORT`` set. A file or dependency the image
lacks fails this test, and the served image must not hold ``model_training/``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.deploy_support import (
    ROOT,
    cached_venv,
    context_files,
    copy_from_stages,
    copy_sources,
    dockerfile,
    env_defaults,
    stages,
)
from tests.web_support import free_port

pytestmark = pytest.mark.slow
SHIPPED_MODEL = ROOT / "models" / "covid_resnet50.h5"


@pytest.fixture(scope="session")
def image_venv() -> Path:
    """The export build stage's environment: requirements.txt (which includes the serving file)."""
    return cached_venv(ROOT / "requirements.txt", "image-venv")


@pytest.fixture(scope="session")
def serve_venv() -> Path:
    """The served image's environment: requirements-serve.txt alone (no TensorFlow)."""
    return cached_venv(ROOT / "requirements-serve.txt", "serve-venv")


def build_context(target: Path, tiny_model: Path, sample_xrays, instructions=None) -> list[str]:
    """Copy what ``instructions`` (default: the whole Dockerfile) copy from the build context
    into ``target``; returns notes on substitutions."""
    notes = []
    pairs = copy_sources(dockerfile() if instructions is None else instructions)
    for source, dest in pairs:
        src = ROOT / source
        if source.startswith("models") and not src.exists():
            continue  # handled below
        for file in context_files(source):
            relative = file.relative_to(src) if src.is_dir() else Path(file.name)
            out = target / dest / relative if (src.is_dir() or dest.endswith("/")) else target / dest
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, out)
    if not any(source.startswith("models") for source, _ in pairs):
        return notes
    model = target / env_defaults(dockerfile())["MODEL_PATH"]
    if not model.exists():
        model.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(tiny_model, model)
        shutil.copy2(tiny_model.with_suffix(".json"), model.with_suffix(".json"))
        notes.append(f"no shipped model: the tiny model stands in at {model.relative_to(target)}")
    verification = target / "models" / "verification"
    if not verification.is_dir():
        verification.mkdir(parents=True)
        for path in sample_xrays["covid"][:2] + sample_xrays["normal"][:2]:
            shutil.copy2(path, verification / path.name)
        notes.append("no models/verification/: 4 real test X-rays stand in")
    return notes


def image_env(venv: Path, docker_env: dict[str, str], **extra) -> dict[str, str]:
    """The container's environment: its ENV lines and the venv's bin first, nothing of ours."""
    return {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8",
            **docker_env, **extra}


def test_container_starts_and_answers(image_venv, serve_venv, tmp_path, tiny_model, sample_xrays):
    instructions = dockerfile()
    docker_env = env_defaults(instructions)
    workdir = Path(next(ins.args for ins in instructions if ins.keyword == "WORKDIR"))
    all_stages = stages(instructions)
    builder_stage = next(stage for stage in all_stages if any(
        ins.keyword == "RUN" and "model_training.export" in ins.args for ins in stage.instructions))
    export = next(ins for ins in builder_stage.instructions
                  if ins.keyword == "RUN" and "model_training.export" in ins.args)

    builder = tmp_path / "export-stage"
    builder.mkdir()
    notes = build_context(builder, tiny_model, sample_xrays, builder_stage.instructions)
    result = subprocess.run(["/bin/sh", "-c", export.args], cwd=builder, env=image_env(image_venv, docker_env),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]

    image = tmp_path / "srv"
    image.mkdir()
    final = all_stages[-1].instructions
    build_context(image, tiny_model, sample_xrays, final)
    for stage, source, dest in copy_from_stages(final):
        assert stage == builder_stage.name, f"COPY --from={stage}: only the export stage is reproduced here"
        shutil.copytree(builder / Path(source).relative_to(workdir), image / dest, dirs_exist_ok=True)
    assert not (image / "tests").exists() and not (image / ".venv").exists()
    assert not (image / "model_training").exists(), "the served image must not hold training code"
    assert (image / docker_env["MODEL_PATH"]).with_suffix(".onnx").exists()
    # What GET /model reads (issue 24): the model card and the report's files, not the whole of reports/.
    assert (image / "MODEL_CARD.md").is_file() and (image / "reports/covid_resnet50/gate/gate_report.json").is_file()
    assert not (image / "reports/covid_resnet50/predictions.csv").exists()

    # The DICOM decoders (README, "DICOM") come from requirements-serve.txt alone.
    codecs = subprocess.run(
        ["python", "-c", "import json; from pydicom import uid; from cxr.dicom_codecs import plugins_for; "
         "print(json.dumps([plugins_for(getattr(uid, n)) for n in ('JPEGLosslessSV1', "
         "'JPEGExtended12Bit', 'JPEGLSLossless', 'JPEG2000', 'HTJ2K', 'RLELossless')]))"],
        cwd=image, env=image_env(serve_venv, docker_env), capture_output=True, text=True, timeout=120)
    assert codecs.returncode == 0, codecs.stderr[-2000:]
    sv1, extended, jpeg_ls, j2k, htj2k, rle = json.loads(codecs.stdout)
    assert "gdcm" in sv1 and "gdcm-12bit" in extended and "pyjpegls" in jpeg_ls
    assert "pylibjpeg" in j2k and htj2k == ["pylibjpeg"] and "pylibjpeg" in rle

    port = free_port()
    cmd = next(ins for ins in reversed(instructions) if ins.keyword == "CMD").exec_form()
    log = (tmp_path / "gunicorn.log").open("w+")
    server = subprocess.Popen(cmd, cwd=image, env=image_env(serve_venv, docker_env, PORT=str(port), HOST="127.0.0.1"),
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        ready = _wait_ready(url, server, log, timeout=180)
        assert ready["model"]["backend"] == "onnx", "the export built in the image must be served"
        assert requests.get(url + "/healthz", timeout=5).status_code == 200
        model_page = requests.get(url + "/model", timeout=10)  # every file it reads is in the image
        assert model_page.status_code == 200 and "is not on this server" not in model_page.text
        xray = sample_xrays["covid"][0]
        response = requests.post(url + "/predict", files={"file": (xray.name, xray.read_bytes(), "image/jpeg")},
                                 timeout=60)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["label"] in ("Covid", "Normal")
        assert abs(sum(body["probabilities"].values()) - 1) < 1e-4
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(10)
        log.close()
    print("; ".join(notes))




def _wait_ready(url: str, server: subprocess.Popen, log, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            log.seek(0)
            raise AssertionError(f"the container's CMD exited with {server.returncode}:\n{log.read()[-3000:]}")
        try:
            response = requests.get(url + "/readyz", timeout=3)
            if response.status_code == 200:
                return response.json()
        except requests.RequestException:
            pass
        time.sleep(0.2)
    log.seek(0)
    raise AssertionError(f"/readyz not 200 after {timeout} s:\n{log.read()[-3000:]}")
