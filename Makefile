# Two commands for a newcomer: `make run` (set up + start the app) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8080
MODEL_PATH ?= models/covid_resnet50.h5
export PORT MODEL_PATH

.PHONY: venv dev run test train evaluate gate clean export model-runtime bench verification-images
.PHONY: beam-venv archive-score

$(VENV)/.runtime: requirements.txt requirements-serve.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev: requirements-dev.txt $(VENV)/.runtime
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

venv: $(VENV)/.runtime
dev: $(VENV)/.dev

run: venv model-runtime
	$(VENV)/bin/gunicorn -c gunicorn.conf.py "app.wsgi:app"

# The ONNX Runtime copy of $(MODEL_PATH), verified against Keras on real X-rays, and its int8
# twin, kept only if it decides like fp32 on siim val (about a minute; skipped with a note
# without ../shared/data/siim); a no-op (sha256 checks) when both are settled. The app serves
# them when INFERENCE_BACKEND=auto (INFERENCE_PRECISION=auto: the twin when it passed).
export: venv
	$(PY) -m model_training.export --model $(MODEL_PATH) --if-missing

# Two real test X-rays per class, shipped beside the model (models/verification/): the
# Docker build verifies its ONNX export on them, where the data set is not available.
DATA_DIR ?= ../shared/data/cxr
verification-images:
	mkdir -p models/verification
	for c in covid normal; do ls $(DATA_DIR)/test/$$c/*.jpg | sort | head -2 | xargs -I{} install -m 0644 {} models/verification/; done

# Before `make run`: build the export when a model is there; if that fails, the app still
# serves the .h5 with TensorFlow.
model-runtime: venv
	@if [ -f "$(MODEL_PATH)" ]; then \
		$(PY) -m model_training.export --model $(MODEL_PATH) --if-missing \
		|| echo "warning: ONNX export failed; the app will serve $(MODEL_PATH) with TensorFlow"; \
	else echo "warning: $(MODEL_PATH) not found (train one: make train)"; fi

# Serving benchmark (issue 5): one run, same machine; writes bench/results.json + RESULTS.md.
bench: dev model-runtime
	$(PY) bench/serving.py

# The whole suite: Ruff first (ruff.toml; seconds, and a lint error stops before the long run),
# then pytest; tests/test_architecture.py runs lint-imports on .importlinter (the house's doors).
test: dev beam-venv
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

# The shipped model's recipe (issue 11; see MODEL_CARD.md). Stages 1-2 learn chest X-rays in
# general on cxr (source-confounded, so the head they end with reads the hospital); stages 3-4
# start from those weights and learn Covid vs Normal on siim alone, where both classes come from
# the same hospitals, selecting epochs on siim's validation AUC (within-source). The shipped
# model stopped stage 3 after its 4th epoch (best: 3rd) and stage 4 after its 1st, for lack of
# CPU time; run to the end, these commands train longer. Stage 5 (issue 20) goes on from stage 4
# on siim plus the cxr train images that are SIIM radiographs, with SIIM's own reading, in
# bfloat16 (faster here), 20 cosine epochs at lr 1e-4 (2e-4 made the val AUC swing: MODEL_CARD.md).
# Each stage checkpoints every epoch; rerun after an interruption and --resume continues it.
CXR_DIR ?= ../shared/data/cxr
SIIM_DIR ?= ../shared/data/siim
SIIM_OTHER_DIR ?= ../shared/data/siim_other
train: venv
	$(PY) -m model_training.train --data-dir $(CXR_DIR) --weights none --image-size 96 --head gap \
		--balance sampling --augment basic --epochs 8 --lr-schedule cosine --learning-rate 1e-3 --seed 0 \
		--out models/stage1_96px.h5 --resume
	$(PY) -m model_training.train --data-dir $(CXR_DIR) --weights none --init-from models/stage1_96px.h5 \
		--image-size 128 --head gap --balance sampling --augment basic --epochs 5 --lr-schedule cosine \
		--learning-rate 5e-4 --seed 1 --out models/stage2_cxr_128px.h5 --resume
	$(PY) -m model_training.train --data-dir $(SIIM_DIR) --weights none --init-from models/stage2_cxr_128px.h5 \
		--image-size 128 --head gap --balance weights --augment basic --epochs 14 --patience 6 \
		--lr-schedule cosine --learning-rate 5e-4 --seed 3 --out models/stage3_siim_128px.h5 --resume
	$(PY) -m model_training.train --data-dir $(SIIM_DIR) --weights none --init-from models/stage3_siim_128px.h5 \
		--image-size 128 --head gap --balance weights --augment robust --epochs 4 --patience 4 \
		--lr-schedule cosine --learning-rate 1e-4 --seed 4 --out models/stage4_siim_128px.h5 --resume
	$(PY) -m model_training.train --data-dir $(SIIM_DIR) --siim-read-cxr $(CXR_DIR) --weights none \
		--init-from models/stage4_siim_128px.h5 --image-size 128 --head gap --balance weights --augment robust \
		--epochs 20 --patience 20 --lr-schedule cosine --learning-rate 1e-4 --seed 5 \
		--precision mixed_bfloat16 --out $(MODEL_PATH) --resume
	$(MAKE) evaluate  # fits calibration and operating points on siim val, then scores test
	$(MAKE) gate  # a new model needs its own input gate (the old one's sha256 no longer matches)

# Scoring an archive on Apache Beam (issue 25): its own virtualenv, so Beam's pinned dependencies
# never reach the app's or training's (requirements-beam.txt; ~2 minutes to install). DirectRunner
# here; BEAM_ARGS passes pipeline options, e.g. BEAM_ARGS="--direct_num_workers 2
# --direct_running_mode multi_processing --intra-op-threads 1" (README, "Scoring an archive").
BEAM_VENV ?= .venv-beam
$(BEAM_VENV)/.beam: requirements-beam.txt requirements-serve.txt
	test -x $(BEAM_VENV)/bin/python || $(PYTHON) -m venv $(BEAM_VENV)
	$(BEAM_VENV)/bin/python -m pip install -q --upgrade pip
	$(BEAM_VENV)/bin/python -m pip install -q -r requirements-beam.txt
	touch $@

beam-venv: $(BEAM_VENV)/.beam

archive-score: beam-venv model-runtime
	@test -n "$(IN)" -a -n "$(OUT)" || { echo "usage: make archive-score IN=<folder|glob|gs://...> OUT=<csv> [BEAM_ARGS=...]"; exit 2; }
	$(BEAM_VENV)/bin/python -m model_training.beam_predict --input "$(IN)" --output "$(OUT)" --model $(MODEL_PATH) $(BEAM_ARGS)

evaluate: venv
	$(PY) -m model_training.evaluate --model $(MODEL_PATH) --data-dir $(SIIM_DIR) --data-dir $(CXR_DIR) \
		--split test --calibrate --other-dir $(SIIM_OTHER_DIR) --explain-samples 8 --out reports/covid_resnet50

# The input gate (issue 12) reads the classifier's own features, so it is fitted again for every
# new model (its artefacts carry the model's sha256; serving ignores a stale gate). Needs the
# ONNX export for speed (about 3 minutes on 2 cores) and ../shared/data/non_cxr.
NON_CXR_DIR ?= ../shared/data/non_cxr
gate: model-runtime
	$(PY) -m model_training.gate --model $(MODEL_PATH) --data-dir $(CXR_DIR) --data-dir $(SIIM_DIR) \
		--non-cxr $(NON_CXR_DIR) --out reports/covid_resnet50/gate

clean:
	rm -rf $(VENV) $(BEAM_VENV) .pytest_cache reports/browser_*.png
