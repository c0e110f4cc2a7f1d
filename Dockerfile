# The web app as a container: what App Engine flex (runtime: custom) builds and runs, and
# what `docker run` runs locally. Same Python as the tests, same gunicorn command as `make run`.
# Three stages: `serve` (Python and requirements-serve.txt: the app's needs, no TensorFlow),
# `export` (a build stage that adds requirements.txt and runs the training-side ONNX exporter)
# and the final image, built on `serve`: the app and the core (cxr/), no model_training/, no
# TensorFlow. It serves the ONNX export only; without a valid one the app says so at /readyz.
FROM python:3.11-slim AS serve

# No .pyc litter, logs straight to stdout, no pip cache in the image. PORT is what App Engine
# sets (8080); gunicorn.conf.py binds 0.0.0.0:$PORT.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    PORT=8080 \
    MODEL_PATH=models/covid_resnet50.h5 \
    INFERENCE_BACKEND=auto \
    INFERENCE_PRECISION=auto

WORKDIR /srv

# An unprivileged user to run as (created now, switched to after the build steps).
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin cxr

# Serving dependencies first, in their own layer: rebuilt only when requirements-serve.txt changes.
COPY requirements-serve.txt ./
RUN pip install --no-cache-dir -r requirements-serve.txt

# Build stage: the verified ONNX Runtime export, so a container serves the fast backend and
# is ready in seconds without importing TensorFlow. The exporter is training code
# (model_training/, tf2onnx); it runs here and does not reach the final image. A valid export
# from the build context (make export) is kept as is; converting needs ~6.5 GB of builder
# memory. models/verification/ holds a few real X-rays to verify the export against Keras.
FROM serve AS export
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt
COPY cxr/ cxr/
COPY model_training/ model_training/
COPY models/ models/
RUN python -m model_training.export --model "$MODEL_PATH" --data-dir models/verification --if-missing

# The served image: only what the app needs: the app, the core, templates, static files,
# gunicorn config, and the model with its export and int8 twin (from the build stage).
FROM serve
COPY cxr/ cxr/
COPY app/ app/
COPY templates/ templates/
COPY static/ static/
COPY gunicorn.conf.py ./
COPY LICENSE ./
# What GET /model reads (app/model_page.py): the model card and the shipped model's report files.
COPY MODEL_CARD.md ./
COPY reports/covid_resnet50/metrics.json reports/covid_resnet50/roc_curve.png reports/covid_resnet50/reliability.png reports/covid_resnet50/confusion_matrix.png reports/covid_resnet50/
COPY reports/covid_resnet50/gate/gate_report.json reports/covid_resnet50/gate/
COPY --from=export /srv/models/ models/

# Never run as root; the app only reads its files (owned by root, world-readable).
USER 10001

EXPOSE 8080
# Liveness only (the process answers); /readyz says when the model is loaded.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8080'), timeout=4)"]

CMD ["gunicorn", "-c", "gunicorn.conf.py", "app.wsgi:app"]
