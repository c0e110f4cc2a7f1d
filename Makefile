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

# The shipped model's recipe (about 1.5 h on 2 CPU cores; rerun after an interruption and
# --resume continues each stage from its last finished epoch): 8 class-balanced epochs at
# 96 px from random weights, then 5 more at 128 px starting from those weights.
train: venv
	$(PY) -m model_training.train --weights none --image-size 96 --head gap --balance sampling \
		--epochs 8 --lr-schedule cosine --learning-rate 1e-3 --seed 0 --out models/stage1_96px.h5 --resume
	$(PY) -m model_training.train --weights none --init-from models/stage1_96px.h5 --image-size 128 \
		--head gap --balance sampling --epochs 5 --lr-schedule cosine --learning-rate 5e-4 --seed 1 \
		--out $(MODEL_PATH) --resume

evaluate: venv
	$(PY) -m model_training.evaluate --model $(MODEL_PATH) --split test --target-recall 0.95 \
		--out reports/covid_resnet50

clean:
	rm -rf $(VENV) .pytest_cache reports/browser_*.png
