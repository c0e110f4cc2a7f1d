# Two commands for a newcomer: `make run` (set up + start the app) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8080
MODEL_PATH ?= models/covid_resnet50.h5
export PORT MODEL_PATH

.PHONY: venv dev run test train evaluate clean

$(VENV)/.runtime: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev: requirements-dev.txt $(VENV)/.runtime
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

venv: $(VENV)/.runtime
dev: $(VENV)/.dev

run: venv
	$(VENV)/bin/gunicorn -c gunicorn.conf.py "app.wsgi:app"

test: dev
	$(PY) -m pytest

train: venv
	$(PY) -m model_training.train --weights none --image-size 96 --head gap --balance sampling \
		--epochs 8 --lr-schedule cosine --out $(MODEL_PATH) --resume

evaluate: venv
	$(PY) -m model_training.evaluate --model $(MODEL_PATH) --split test --target-recall 0.95 \
		--out reports/covid_resnet50

clean:
	rm -rf $(VENV) .pytest_cache reports/browser_*.png
