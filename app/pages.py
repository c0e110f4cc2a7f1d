"""The upload page: rendering ``index.html`` (empty, with a result, or with an error), the
research-demo notice every answer carries, the model's display name, and the accessor for this
worker's model state.

Its own module so that ``routes`` (the form's results) and ``errors`` (the form's error page)
both use it without importing each other.
"""

from __future__ import annotations

from flask import current_app, make_response, render_template

from cxr.decode import accepted_formats_text

DISCLAIMER = (
    "Research demo, not a diagnosis: this model has not been clinically validated. "
    "Do not use it for medical decisions. It only compares frontal chest X-rays with two kinds of "
    "films it learned from (typical Covid-19 pneumonia, normal). At its default operating point it "
    "misses about one Covid film in five and flags about one normal film in six; it knows no other "
    "disease and calls about half of the films with other lung findings Covid. An input check "
    "refuses most images that are not chest X-rays and warns when an X-ray is unlike the "
    "training data, but it can be wrong both ways."
)


def model_state():
    """This worker's ``app.model_state.ModelState`` (registered by ``create_app``)."""
    return current_app.extensions["cxr_model"]


def display_name(metadata: dict) -> str:
    """The name people see: the sidecar's ``display_name`` when it has one, else its ``name``
    (the model file's name, e.g. ``covid_resnet50``), never a training stage's name."""
    return metadata.get("display_name") or metadata.get("name") or "model"


def render_index(result: dict | None = None, error: str | None = None, status: int = 200):
    """The upload page; the batch limits go to the page's script, which splits a drop of many
    files into ``/predict/batch`` requests within them."""
    state = model_state()
    config = current_app.config
    model = state.predictor.model_info() if state.ready else None
    if model is not None:
        model["display_name"] = display_name(state.predictor.metadata)
    body = render_template(
        "index.html", result=result, error=error, model=model, disclaimer=DISCLAIMER,
        api_key_required=bool(config["API_KEY"]), max_upload_mb=config["MAX_UPLOAD_MB"],
        batch_max_files=config["BATCH_MAX_FILES"], batch_max_mb=config["BATCH_MAX_MB"],
        accepted=accepted_formats_text(),
    )
    return make_response(body, status)
