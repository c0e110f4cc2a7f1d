"""``GET /openapi.json``: the OpenAPI 3.1 description of every route, built from the app's own tables.

The document is a plain dict made per request from this worker's settings, so the limits it
states (``MAX_UPLOAD_MB``, ``BATCH_MAX_FILES``, ``BATCH_MAX_MB``) and whether the API key is
required are the ones in force. The error codes come from ``app.errors`` (``HTTP_CODES``,
``INPUT_STATUS``, so a new input error code appears here by itself) and from
:data:`APP_CODES`, the codes our own views raise. ``tests/test_api.py`` validates the
document with ``openapi-spec-validator``, checks that its paths and methods are exactly the
app's routes, that every ``ApiError`` code in ``app/`` is documented, and validates real
answers against its schemas, so the description cannot drift from the code.
"""

from __future__ import annotations

from app.config import MB
from app.errors import HTTP_CODES, INPUT_STATUS
from app.model_page import FIGURES
from cxr.decode import accepted_formats_text
from cxr.metadata import CLASS_NAMES

OPENAPI_VERSION = "3.1.0"
FORM_FRAMING_BYTES = 1024  # room for a multipart form's boundaries, part headers and small fields
API_VERSION = "1.0.0"

# The codes our own views raise (``ApiError``): status and when.
APP_CODES = {
    "no_file": (400, "multipart form without the image field (`file` on /predict and the form, "
                     "`files` on /predict/batch), or a batch that is not multipart/form-data"),
    "bad_request": (400, "a query parameter is invalid: `explain` not a boolean, `class` not a class name"),
    "unknown_operating_point": (400, "`operating_point` names none of the model's operating points; the error "
                                     "lists them in `operating_points`"),
    "explain_not_supported": (400, "`explain=true` on /predict/batch: explain images one by one on /predict"),
    "unauthorized": (401, "`API_KEY` is set and the request has no valid key"),
    "too_many_files": (413, "a batch with more files than `BATCH_MAX_FILES`"),
    "batch_too_large": (413, "a batch request body over `BATCH_MAX_MB`"),
    "not_ready": (503, "the model is still loading (or failed to load); retry after `Retry-After` seconds"),
}
# What each core input error code means (``cxr.errors``); its status is ``INPUT_STATUS``.
INPUT_TEXT = {
    "empty_input": "empty body or zero-byte file",
    "image_too_large": "image over 50 megapixels (refused before decoding)",
    "unsupported_media_type": "an image format we recognise but do not read (GIF, TIFF, BMP, WebP, a "
                              "DICOM transfer syntax without a decoder); the message lists what is accepted",
    "undecodable_image": "truncated or corrupt PNG, JPEG or DICOM, or a DICOM without pixel data",
    "image_too_small": "an image under 32 px",
    "not_an_image": "bytes with no image signature: text, random data",
    "not_a_chest_xray": "the input gate's verdict: a photograph, document, screenshot, chart, an X-ray of "
                        "another body part, CT/MRI, other medical image, noise or a blank image (or a DICOM "
                        "header naming another modality or body part); the message gives the score and threshold",
    "lateral_view": "a DICOM header naming a lateral view: the model reads frontal (PA/AP) chest X-rays only",
}
HTTP_TEXT = {
    "payload_too_large": "request body over `MAX_UPLOAD_MB`",
    "method_not_allowed": "a method the path does not take, e.g. `GET /predict` (with `Allow`)",
    "not_found": "a path that does not exist",
    "internal_error": "an unexpected error; the request was not processed",
    "rate_limited": "more prediction requests from this client than `RATE_LIMIT` allows; retry after "
                    "`Retry-After` seconds",
}

INPUT_CODES = tuple(INPUT_STATUS)
PREDICT_CODES = (*INPUT_CODES, "no_file", "bad_request", "unknown_operating_point", "unauthorized",
                 "payload_too_large", "rate_limited", "not_ready", "internal_error")
BATCH_CODES = ("no_file", "bad_request", "unknown_operating_point", "explain_not_supported", "unauthorized",
               "too_many_files", "batch_too_large", "rate_limited", "not_ready", "internal_error")
# A failed batch item: what /predict would have answered for that file alone.
BATCH_ITEM_CODES = (*INPUT_CODES, "payload_too_large")
FORM_CODES = (*INPUT_CODES, "no_file", "unknown_operating_point", "unauthorized", "payload_too_large",
              "rate_limited", "not_ready", "internal_error")


def error_codes() -> dict[str, tuple[int, str]]:
    """Every error code the API answers: code -> (status, when)."""
    codes = {code: (status, HTTP_TEXT.get(code, f"HTTP {status}")) for status, code in HTTP_CODES.items()}
    codes.update({code: (status, INPUT_TEXT.get(code, "the upload cannot be used"))
                  for code, status in INPUT_STATUS.items()})
    codes.update(APP_CODES)
    return codes


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _error_responses(codes, media: str = "application/json") -> dict:
    """One response per status, its description naming each code and when it happens."""
    table = error_codes()
    by_status: dict[int, list[str]] = {}
    for code in codes:
        by_status.setdefault(table[code][0], []).append(code)
    responses = {}
    for status in sorted(by_status):
        lines = "; ".join(f"`{code}`: {table[code][1]}" for code in by_status[status])
        schema = _ref("Error") if media == "application/json" else {"type": "string"}
        response = {"description": lines, "content": {media: {"schema": schema}}}
        if media == "application/json":
            examples = {code: {"value": {"error": {"code": code, "message": table[code][1]}}}
                        for code in by_status[status]}
            response["content"][media]["examples"] = examples
        if status == 401:
            response["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"},
                                                        "description": 'Bearer realm="cxr-covid"'}}
        if status in (429, 503):
            response["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "required": True,
                                                   "description": "seconds to wait before retrying"}}
        responses[str(status)] = response
    return responses


def _schemas(max_files: int) -> dict:
    classes = list(CLASS_NAMES)
    probabilities = {
        "type": "object",
        "description": "Probability of each class; they sum to 1.",
        "required": classes,
        "properties": {name: {"type": "number", "minimum": 0, "maximum": 1} for name in classes},
    }
    return {
        "Probabilities": probabilities,
        "ModelInfo": {
            "type": "object",
            "required": ["name", "sha256", "input_size", "backend", "precision"],
            "properties": {
                "name": {"type": "string"},
                "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$", "description": "of the served `.h5`"},
                "input_size": {"type": "integer", "description": "the model's square input side in pixels"},
                "backend": {"type": "string", "enum": ["onnx", "tensorflow"]},
                "precision": {"type": "string", "enum": ["fp32", "int8"],
                              "description": "the served graph: the fp32 export, or its int8 twin, kept only "
                                             "when it decided like fp32 on siim val (INFERENCE_PRECISION)"},
                "input_gate": {"type": "boolean",
                               "description": "whether an input gate fitted for this exact model is in use"},
                "calibrated": {"type": "boolean", "description": "whether P(Covid) is calibrated (Platt scaling "
                                                                 "fitted on within-source validation films)"},
                "operating_points": {"type": "object", "additionalProperties": {"type": "number"},
                                     "description": "the model's named thresholds on P(Covid)"},
                "default_operating_point": {"type": "string"},
            },
        },
        "ImageAnswer": {
            "type": "object",
            "description": "The classification of one image. `label` is `Covid` exactly when "
                           "`probabilities.Covid >= threshold`.",
            "required": ["label", "probabilities", "threshold", "inference_ms", "in_distribution", "warnings"],
            "properties": {
                "label": {"type": "string", "enum": classes},
                "probabilities": _ref("Probabilities"),
                "threshold": {"type": "number", "minimum": 0, "maximum": 1,
                              "description": "decision threshold on the Covid probability: the operating "
                                             "point's (model metadata)"},
                "operating_point": {"type": "string",
                                    "description": "the named operating point that decided `label` (e.g. "
                                                   "`balanced`, `high_sensitivity`)"},
                "calibrated": {"type": "boolean",
                               "description": "true when `probabilities` are calibrated: among films like the "
                                              "training ones, about that share is Covid"},
                "inference_ms": {"type": "number", "minimum": 0,
                                 "description": "forward-pass time; in a batch, this image's share of the one pass"},
                "in_distribution": {"type": ["boolean", "null"],
                                    "description": "false when the X-ray's features are far from the training "
                                                   "data (the result is less reliable; see `warnings`); null "
                                                   "when the model has no input gate"},
                "warnings": {"type": "array", "items": _ref("Warning"),
                             "description": "empty, or e.g. `out_of_distribution` with the score and threshold"},
                "input_check": {
                    "type": "object",
                    "description": "the input gate's scores (absent without a gate): the image passed as a "
                                   "chest X-ray because `chest_score >= chest_threshold`; `in_distribution` is "
                                   "`shift_score <= shift_threshold`",
                    "properties": {k: {"type": "number"} for k in
                                   ("chest_score", "chest_threshold", "shift_score", "shift_threshold")},
                },
            },
        },
        "Warning": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "enum": ["out_of_distribution"]},
                "message": {"type": "string"},
                "score": {"type": "number", "description": "distance of the image to the training data"},
                "threshold": {"type": "number", "description": "the distance above which this warning is given"},
            },
        },
        "PredictAnswer": {
            "description": "`POST /predict`: the image's classification, the model, the research-demo notice; "
                           "with `explain=true` also `explained_class` and `heatmap_png`.",
            "allOf": [_ref("ImageAnswer"), {
                "type": "object",
                "required": ["model", "disclaimer"],
                "properties": {
                    "model": _ref("ModelInfo"),
                    "disclaimer": {"type": "string"},
                    "explained_class": {"type": "string", "enum": classes,
                                        "description": "only with `explain=true`: the class the heatmap is for"},
                    "heatmap_png": {"type": "string", "contentEncoding": "base64", "contentMediaType": "image/png",
                                    "description": "only with `explain=true`: Grad-CAM overlay on the image, "
                                                   "base64 PNG, at most 512 px on the long side"},
                },
            }],
        },
        "BatchItem": {
            "description": "One file of a batch, in the order sent: its classification, or the error "
                           "`/predict` would have answered for that file alone (codes: "
                           + ", ".join(f"`{c}`" for c in BATCH_ITEM_CODES) + ").",
            "oneOf": [_ref("ImageAnswer"), _ref("Error")],
        },
        "BatchAnswer": {
            "type": "object",
            "required": ["results", "model", "disclaimer"],
            "properties": {
                "results": {"type": "array", "items": _ref("BatchItem"), "minItems": 1, "maxItems": max_files},
                "model": _ref("ModelInfo"),
                "disclaimer": {"type": "string"},
            },
        },
        "Error": {
            "type": "object",
            "description": "The one error shape of the API (and of a failed batch item).",
            "required": ["error"],
            "properties": {"error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "enum": sorted(error_codes()),
                             "description": "stable and machine-readable; never renamed"},
                    "message": {"type": "string", "description": "for people; may change"},
                    "operating_points": {"type": "array", "items": {"type": "string"},
                                         "description": "with `unknown_operating_point`: the valid names"},
                },
            }},
        },
        "Health": {"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}},
        "Ready": {
            "type": "object",
            "required": ["status", "model", "load_seconds"],
            "properties": {"status": {"const": "ready"}, "model": _ref("ModelInfo"),
                           "load_seconds": {"type": "number", "minimum": 0}},
        },
    }


def _file_property(description: str, max_bytes: int | None = None, *, non_empty: bool = True) -> dict:
    """An uploaded file: non-empty bytes (an empty one is 400 `empty_input`; a batch's gets its own
    error item instead), at most ``max_bytes``."""
    limits = {"minLength": 1} if non_empty else {}
    if max_bytes is not None:
        limits["maxLength"] = max_bytes
    return {"type": "string", "contentMediaType": "application/octet-stream", **limits, "description": description}


def openapi_document(config, operating_points: list[str] | None = None) -> dict:
    """The OpenAPI 3.1 document for this app under ``config`` (Flask's ``app.config``); with the loaded
    model's ``operating_points``, the ``operating_point`` parameter lists exactly those names."""
    formats = accepted_formats_text()
    max_mb = config["MAX_UPLOAD_MB"]
    max_files = int(config["BATCH_MAX_FILES"])
    batch_mb = config["BATCH_MAX_MB"]
    key_required = bool(config.get("API_KEY"))
    security = [{"bearerAuth": []}, {"apiKeyHeader": []}] + ([] if key_required else [{}])
    max_bytes = int(max_mb * MB)
    # Raw bodies: non-empty (else 400 `empty_input`) and at most MAX_UPLOAD_MB (else 413).
    image_types = {media: {"schema": {"type": "string", "contentMediaType": media, "minLength": 1,
                                      "maxLength": max_bytes}}
                   for media in ("image/png", "image/jpeg", "application/dicom", "application/octet-stream")}
    # A multipart file within this size always fits MAX_UPLOAD_MB with the form's framing.
    form_file_bytes = max_bytes - FORM_FRAMING_BYTES
    point_schema = {"type": "string", **({"enum": list(operating_points)} if operating_points else {})}
    explain = {
        "name": "explain", "in": "query", "required": False, "schema": {"type": "boolean", "default": False},
        "description": "`true` adds a Grad-CAM heatmap (`explained_class`, `heatmap_png`) from the same "
                       "forward pass; also accepts 1/0, yes/no, on/off.",
    }
    class_param = {
        "name": "class", "in": "query", "required": False, "schema": {"type": "string", "enum": list(CLASS_NAMES)},
        "description": "with `explain=true`: the class to explain (default: the predicted class)",
    }
    point_param = {
        "name": "operating_point", "in": "query", "required": False, "schema": point_schema,
        "description": "the named decision threshold to apply (`GET /readyz` lists the model's under "
                       "`model.operating_points`; default: the model's `default_operating_point`). Also "
                       "accepted as a multipart form field. An unknown name answers 400 `unknown_operating_point`.",
    }
    html = {"text/html": {"schema": {"type": "string"}}}
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "cxr-covid: chest X-ray Covid/Normal classifier",
            "version": API_VERSION,
            "summary": "Research demo, not a diagnosis: classifies chest X-rays as Covid or Normal.",
            "description": (
                "A ResNet50 that tells Covid from Normal chest X-rays. **Research and education demo, not a "
                "medical device**: do not use it for decisions about anyone's health.\n\n"
                f"Accepted images: {formats}, recognised from their bytes (never the file name or "
                f"Content-Type). One request body is at most {max_mb:g} MB (`MAX_UPLOAD_MB`); a batch holds "
                f"at most {max_files} files (`BATCH_MAX_FILES`) and {batch_mb:g} MB (`BATCH_MAX_MB`). "
                "Every error is `{\"error\": {\"code\", \"message\"}}` with a stable `code`; every response "
                "carries `X-Request-ID` (the client's, when it sent a UUID or hex id), which the request log records. "
                + ("An API key is required for the classifying routes." if key_required else
                   "No API key is configured on this server; when `API_KEY` is set, the classifying "
                   "routes require it.")
            ),
        },
        "paths": {
            "/predict": {"post": {
                "operationId": "predict",
                "summary": "Classify one X-ray",
                "description": "The image as multipart field `file` or as the raw request body.",
                "parameters": [explain, class_param, point_param],
                "security": security,
                "requestBody": {"required": True, "content": {
                    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
                        "file": _file_property(f"the X-ray: {formats}", form_file_bytes),
                        "operating_point": {**point_schema, "description": "as the query parameter"}}}},
                    **image_types,
                }},
                "responses": {"200": {"description": "the classification",
                                      "content": {"application/json": {"schema": _ref("PredictAnswer")}}},
                              **_error_responses(PREDICT_CODES)},
            }},
            "/predict/batch": {"post": {
                "operationId": "predictBatch",
                "summary": "Classify several X-rays in one request (one forward pass)",
                "description": (
                    f"Multipart with the field `files` repeated, 1 to {max_files} files (`BATCH_MAX_FILES`), "
                    f"at most {batch_mb:g} MB in all (`BATCH_MAX_MB`) and {max_mb:g} MB per file "
                    "(`MAX_UPLOAD_MB`). The answer has one item per file in the order sent; a file that "
                    "cannot be used gets its own error item and never fails the others. The files that "
                    "decode go through the model in one batched forward pass. Heatmaps are not offered "
                    "here: `explain=true` answers 400 `explain_not_supported`."
                ),
                "parameters": [{**explain, "schema": {"type": "boolean", "const": False, "default": False},
                                "description": "only `false` is accepted: `true` answers 400 "
                                               "`explain_not_supported` (use /predict per image)"}, point_param],
                "security": security,
                "requestBody": {"required": True, "content": {"multipart/form-data": {
                    "schema": {"type": "object", "required": ["files"], "properties": {"files": {
                        "type": "array", "minItems": 1, "maxItems": max_files,
                        "items": _file_property(f"one X-ray: {formats}; an empty one, or one over {max_mb:g} MB, "
                                                "gets its own error item (`empty_input`, `payload_too_large`)",
                                                non_empty=False)},
                        "operating_point": {**point_schema, "description": "as the query parameter"}}},
                    "encoding": {"files": {"contentType": ", ".join(image_types)}},
                }}},
                "responses": {"200": {"description": "one item per file, in order",
                                      "content": {"application/json": {"schema": _ref("BatchAnswer")}}},
                              **_error_responses(BATCH_CODES)},
            }},
            "/": {
                "get": {"operationId": "page", "summary": "The upload page (HTML)",
                        "responses": {"200": {"description": "the page", "content": html}}},
                "post": {
                    "operationId": "pageForm",
                    "summary": "The upload form without JavaScript: the classification rendered as a page",
                    "description": "When `API_KEY` is set, the key may also come as the form field `api_key`.",
                    "security": security,
                    "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                        "type": "object", "required": ["file"], "properties": {
                            "file": _file_property(f"the X-ray: {formats}", form_file_bytes),
                            "api_key": {"type": "string", "description": "the API key, when `API_KEY` is set"},
                            "operating_point": {**point_schema, "description": "as the query parameter"},
                        }}}}},
                    "responses": {"200": {"description": "the page with the result", "content": html},
                                  **_error_responses(FORM_CODES, media="text/html")},
                },
            },
            "/model": {"get": {
                "operationId": "modelPage",
                "summary": "The model page (HTML): name, version, training data, test figures with CIs, "
                           "operating points, occlusion audit, input gate, what it cannot do",
                "responses": {"200": {"description": "the page, generated from the sidecar and the reports",
                                      "content": html}},
            }},
            "/model/figures/{name}": {"get": {
                "operationId": "modelFigure",
                "summary": "A plot of the served model's evaluation report",
                "parameters": [{"name": "name", "in": "path", "required": True, "schema": {
                    "type": "string", "enum": list(FIGURES)}}],
                "responses": {"200": {"description": "the PNG image",
                                      "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}},
                              "404": {"description": "no such plot for the served model"}},
            }},
            "/healthz": {"get": {
                "operationId": "healthz", "summary": "Liveness: the process answers (says nothing about the model)",
                "responses": {"200": {"description": "alive",
                                      "content": {"application/json": {"schema": _ref("Health")}}}},
            }},
            "/readyz": {"get": {
                "operationId": "readyz", "summary": "Readiness: 200 once the model is loaded and warm",
                "responses": {"200": {"description": "ready",
                                      "content": {"application/json": {"schema": _ref("Ready")}}},
                              **_error_responses(("not_ready",))},
            }},
            "/metrics": {"get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics, summed over the server's workers (text exposition format)",
                "description": "Request latency by route and status, predictions by label and operating point, "
                               "refusals by error code, out-of-distribution answers, the P(Covid) histogram and "
                               "the model's identity (`app.metrics`). Requires the API key when `API_KEY` is set.",
                "security": security,
                "responses": {"200": {"description": "the metrics",
                                      "content": {"text/plain": {"schema": {"type": "string"}}}},
                              **_error_responses(("unauthorized",))},
            }},
            "/openapi.json": {"get": {
                "operationId": "openapi", "summary": "This document",
                "responses": {"200": {"description": "the OpenAPI 3.1 description of every route",
                                      "content": {"application/json": {"schema": {"type": "object"}}}}},
            }},
        },
        "components": {
            "schemas": _schemas(max_files),
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "description": "`Authorization: Bearer <key>`"},
                "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }
