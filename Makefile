# `make demo` and `make test` each build .venv/ on first use (pip: torch comes from local disk).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo demo_vit test bench zoo campaign clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e ".[train,test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/accelerate launch --num_processes 1 --cpu recipes/pretrain.py --config recipes/configs/demo.yaml

# The same 5-minute demo on a small timm ViT (needs timm: the test extra installs it).
demo_vit: $(STAMP)
	$(VENV)/bin/accelerate launch --num_processes 1 --cpu recipes/pretrain.py --config recipes/configs/demo_vit.yaml

# The suite on two workers of one thread each (most tests wait on process start-up, not arithmetic), then the few
# that time the machine or wait for it to be quiet, alone (marked `serial` in tests/conftest.py).
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 -m "not serial"
	$(PY) -m pytest -q -n 1 -m serial

bench: $(STAMP)
	$(PY) benchmarks/loss_scaling.py
	$(PY) benchmarks/augment_speed.py
	$(PY) benchmarks/pipeline.py
	$(PY) benchmarks/probes.py
	$(PY) benchmarks/views_at_equal_time.py

# Train, evaluate, publish and bundle every zoo entry (tools/release_zoo.py); offline: the loopback Hub.
zoo: $(STAMP)
	$(PY) tools/release_zoo.py --data ../shared/data/cifar10 --data_name uoft-cs/cifar10 --loopback

# One chunk of a zoo entry's long training (tools/campaign.py): resumes where the last chunk stopped.
# CAMPAIGN_DATA: this machine's local CIFAR-10 copy (the recipe itself defaults to the Hub id), as an absolute
# path: a run resumes only with the data argument it started with.
# UNTIL: total training seconds at which the campaign ends (empty: the preset's epochs end it).
ENTRY ?= barlowtwins_resnet18_cifar10
CHUNK ?= 3600
UNTIL ?=
CAMPAIGN_DATA ?= $(abspath ../shared/data/cifar10)
campaign: $(STAMP)
	$(PY) tools/campaign.py $(ENTRY) --chunk_seconds $(CHUNK) --data $(CAMPAIGN_DATA) $(if $(UNTIL),--until_seconds $(UNTIL))

clean:
	rm -rf $(VENV) runs
