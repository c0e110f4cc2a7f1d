# The web app as a container: what App Engine flex (runtime: custom) builds and runs, and
# what `docker run` runs locally. Same Python as the tests, same gunicorn command as `make run`.
FROM python:3.11-slim

# No .pyc litter, logs straight to stdout, no pip cache in the image. PORT is what App Engine
# sets (8080); gunicorn.conf.py binds 0.0.0.0:$PORT.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    PORT=8080 \
    MODEL_PATH=models/covid_resnet50.h5 \
    INFERENCE_BACKEND=auto

WORKDIR /srv

# An unprivileged user to run as (created now, switched to after the build steps).
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin cxr

# Dependencies first, in their own layer: rebuilt only when requirements.txt changes.
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt

# Only what the app needs: code, templates, static files, gunicorn config, the model and
# a few real X-rays (models/verification/) to verify the ONNX export against Keras.
COPY model_training/ model_training/
COPY app/ app/
COPY templates/ templates/
COPY static/ static/
COPY gunicorn.conf.py ./
COPY models/ models/

# Build the verified ONNX Runtime export into the image, so a container serves the fast
# backend and is ready in seconds without importing TensorFlow. A valid export from the
# build context (make export) is kept as is; converting needs ~6.5 GB of builder memory.
RUN python -m model_training.export --model "$MODEL_PATH" --data-dir models/verification --if-missing

# Never run as root; the app only reads its files (owned by root, world-readable).
USER 10001

EXPOSE 8080
# Liveness only (the process answers); /readyz says when the model is loaded.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8080'), timeout=4)"]

CMD ["gunicorn", "-c", "gunicorn.conf.py", "app.wsgi:app"]
