"""Flask application factory for the chest X-ray classifier web app.

``create_app(config)`` builds the app from environment variables (see ``app.config``)
overridden by ``config``, and starts loading the model once in this process. Gunicorn
imports ``app.wsgi`` in each worker after the fork, so the model is never loaded in the
master (TensorFlow is not fork-safe).

The app stands on the core package ``cxr`` (decoding, preprocessing, predictors, Grad-CAM)
and never imports ``model_training``: the served image ships no training code.
"""

from __future__ import annotations

import io

from flask import Flask, Request

from app import limits, metrics
from app.access_log import configure_logging, install_access_log
from app.config import MB, load_config, predictor_settings
from app.errors import register_error_handlers
from app.model_state import ModelState
from app.security import add_security_headers


class InMemoryRequest(Request):
    """Keeps multipart file parts in memory.

    Werkzeug's default stream factory writes file parts above ~500 KB to a temporary
    file; uploads are patient data and must never touch the disk. The whole body is
    bounded by ``MAX_CONTENT_LENGTH`` (MAX_UPLOAD_MB), so memory use is bounded too.
    """

    def _get_file_stream(self, total_content_length, content_type, filename=None,
                         content_length=None):
        return io.BytesIO()


def create_app(config: dict | None = None) -> Flask:
    """Build the app: settings from the environment overridden by ``config`` (``app.config``),
    routes, error handlers, security headers, the access log, and the model loading in this
    process (in the background unless ``LOAD_MODEL_ASYNC`` is off)."""
    settings = load_config(config)
    configure_logging(settings["LOG_LEVEL"], settings["LOG_FORMAT"])

    app = Flask(__name__, template_folder="../templates", static_folder="../static")
    app.request_class = InMemoryRequest
    app.config.update(settings)
    app.config.update(
        MAX_CONTENT_LENGTH=int(settings["MAX_UPLOAD_MB"] * MB),
        # Non-file fields (the API key). Werkzeug also applies it to each 64 KB parser
        # buffer, so it must stay well above that or every file upload gets 413.
        MAX_FORM_MEMORY_SIZE=1024 * 1024,
        MAX_FORM_PARTS=16,
        DEBUG=False,
        PROPAGATE_EXCEPTIONS=False,
    )
    app.json.sort_keys = False  # keep label/probabilities first, as documented
    app.debug = False  # never serve with the Werkzeug debugger, whatever FLASK_DEBUG says

    from app import model_page
    from app.routes import bp

    app.register_blueprint(bp)
    app.register_blueprint(model_page.bp)  # GET /model: the model page (issue 24)
    register_error_handlers(app)
    add_security_headers(app)
    install_access_log(app)
    metrics.init_app(app)  # GET /metrics and its recording (issue 23)
    limits.init_app(app)  # after the log and the metrics, so that a 429 is logged and counted too

    state = ModelState(settings["MODEL_PATH"], **predictor_settings(settings))
    app.extensions["cxr_model"] = state
    state.start(background=settings["LOAD_MODEL_ASYNC"])
    return app
