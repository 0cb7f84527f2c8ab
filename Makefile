# faustgen — make demo: set up and run the main job; make test: set up and run the tests.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-done

.PHONY: all setup demo test lint format bench bench-scale zoo fuzz clean

all: test

$(STAMP): pyproject.toml setup.py scripts/setup.sh
	./scripts/setup.sh
	touch $@

setup: $(STAMP)

demo: setup
	$(VENV)/bin/faustgen demo

test: setup
	$(PY) -m pytest -n 2 -q

lint: setup
	$(VENV)/bin/ruff check faustgen tests benchmarks
	$(VENV)/bin/ruff format --check faustgen tests benchmarks

format: setup
	$(VENV)/bin/ruff format faustgen tests benchmarks

bench: setup
	$(PY) benchmarks/bench_models.py

# Build cost on real-size networks; EMX=path/to/emx-onnx-cgen times the peer side by side
# (install it in a scratch venv: python3 -m venv /tmp/emx && /tmp/emx/bin/pip install
# emx-onnx-cgen onnxruntime).
bench-scale: setup
	$(PY) benchmarks/bench_scale.py $(if $(EMX),--emx $(EMX))

zoo: setup
	$(PY) benchmarks/bench_zoo.py

fuzz: setup
	FAUSTGEN_FUZZ_EXAMPLES=5000 $(PY) -m pytest -q tests/fuzz

clean:
	rm -rf build dist *.egg-info demo_out .pytest_cache
