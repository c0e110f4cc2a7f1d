"""HTTP routes: the upload page, the no-JS form result, the JSON API and the probes."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from app.answers import image_answer
from app.batch import batch_results, read_uploads
from app.errors import ApiError, require_api_key
from app.explanations import explain_answer, parse_flag
from app.openapi import openapi_document
from app.outcomes import note_answers
from app.pages import DISCLAIMER, model_state, render_index
from cxr.calibration import UnknownOperatingPoint
from cxr.metadata import CLASS_NAMES

bp = Blueprint("web", __name__)


def _predictor():
    """The loaded model; waits briefly for one still loading (fresh worker), else 503."""
    state = model_state()
    if not state.ready and state.loading:
        state.wait(current_app.config["READY_WAIT_S"])
    if not state.ready:
        reason = state.error or "the model is still loading"
        raise ApiError(503, "not_ready", f"Service not ready: {reason}. Retry shortly.",
                       {"Retry-After": "5"})
    return state.predictor


def _upload_bytes() -> bytes:
    """The image bytes: multipart field ``file`` or the raw request body.

    Multipart parts stay in memory (see ``app.InMemoryRequest``); the raw body is read
    straight from the bounded input stream.
    """
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("file")
        if upload is None:
            raise ApiError(400, "no_file", "The form has no 'file' field; send the X-ray as "
                           "multipart field 'file' or as the raw request body.")
        try:
            return upload.read()
        finally:
            upload.close()
    return request.get_data(cache=False)


def _operating_point(predictor) -> str | None:
    """``operating_point`` from the query string or the form (None: the model's default);
    an unknown name is a 400 that lists the model's operating points.

    Called after the upload was read, so a batch's form limits are in force when the form is parsed.
    """
    names = [request.args.get("operating_point")]
    if request.mimetype == "multipart/form-data":
        names.append(request.form.get("operating_point"))
    try:
        for given in names:  # both checked: an unknown name never passes unnoticed behind a valid one
            if given is not None:
                predictor.decision.operating_point(given)
    except UnknownOperatingPoint as exc:
        raise ApiError(400, "unknown_operating_point", str(exc), details={"operating_points": exc.known}) from None
    return next((given for given in names if given), None)


def _classify(data: bytes) -> dict:
    predictor = _predictor()
    result = image_answer(predictor.predict_upload(data, _operating_point(predictor)))
    note_answers([result])
    result["model"] = predictor.model_info()
    result["disclaimer"] = DISCLAIMER
    return result


def _explain_request() -> str | bool | None:
    """None without ``?explain=true``; else the class to explain (``?class=``) or True.

    Only the query string is read here, so a plain request does nothing extra.
    """
    flag = parse_flag(request.args.get("explain"))
    if flag is None:
        raise ApiError(400, "bad_request", "The 'explain' parameter must be true or false.")
    if not flag:
        return None
    class_name = request.args.get("class")
    if class_name is not None and class_name not in CLASS_NAMES:
        raise ApiError(400, "bad_request",
                       f"The 'class' parameter must be one of {', '.join(CLASS_NAMES)}.")
    return class_name or True


def _classify_explained(data: bytes, explain: str | bool) -> dict:
    """The prediction and a Grad-CAM overlay (base64 PNG) from the same forward pass."""
    predictor = _predictor()
    class_name = explain if isinstance(explain, str) else None
    result = explain_answer(predictor, data, class_name, operating_point=_operating_point(predictor))
    note_answers([result])
    result["model"] = predictor.model_info()
    result["disclaimer"] = DISCLAIMER
    return result


@bp.get("/")
def index():
    return render_index()


@bp.post("/")
def index_form():
    """The form without JavaScript: same classification, rendered into the page."""
    require_api_key(request.form.get("api_key"))
    result = _classify(_upload_bytes())
    return render_index(result=result)


@bp.post("/predict")
def predict():
    require_api_key()
    explain = _explain_request()
    data = _upload_bytes()
    if explain is None:
        return jsonify(_classify(data))
    return jsonify(_classify_explained(data, explain))


@bp.post("/predict/batch")
def predict_batch():
    """Several X-rays (multipart field ``files`` repeated), one forward pass; see ``app.batch``."""
    require_api_key()
    if _explain_request() is not None:
        raise ApiError(400, "explain_not_supported", "Heatmaps are not made for batches; "
                       "use POST /predict?explain=true for each image you want explained.")
    items = read_uploads(current_app.config)
    predictor = _predictor()
    point = _operating_point(predictor)
    results = batch_results(predictor, items, point)
    note_answers(results)  # the metrics count each file (app.metrics)
    return jsonify({"results": results, "model": predictor.model_info(), "disclaimer": DISCLAIMER})


@bp.get("/openapi.json")
def openapi():
    """The OpenAPI 3.1 description of every route (``app.openapi``)."""
    state = model_state()
    points = list(state.predictor.model_info()["operating_points"]) if state.ready else None
    return jsonify(openapi_document(current_app.config, points))


@bp.get("/healthz")
def healthz():
    """Liveness: the process answers; says nothing about the model."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    """Readiness: 200 only once the model is loaded and warmed up."""
    state = model_state()
    if not state.ready:
        reason = state.error or "the model is still loading"
        raise ApiError(503, "not_ready", f"Service not ready: {reason}.", {"Retry-After": "5"})
    return jsonify({"status": "ready", "model": state.predictor.model_info(),
                    "load_seconds": round(state.load_seconds or 0.0, 2)})
