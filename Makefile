# Two commands matter: `make run` and `make test`. Everything else is what they are made of.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
PRESET ?= presets/default.toml
# Torch first: the CPU build where no NVIDIA GPU is present (never the multi-GB CUDA wheels),
# the default (CUDA) build where `nvidia-smi` works. Override with TORCH_SPEC / TORCH_INDEX.
TORCH_SPEC  ?= torch==2.13.0
HAVE_GPU    := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo yes)
TORCH_INDEX ?= $(if $(HAVE_GPU),,https://download.pytorch.org/whl/cpu)

.PHONY: run test venv test-deps bench doctor clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@# A CPU wheel that pip's configuration offers locally (find-links) is taken first; otherwise the CPU index
	@# (no GPU) or PyPI's default build (GPU). Torch's own dependencies come from the normal index either way.
	$(BIN)/pip install -q --no-deps --no-index "$(TORCH_SPEC)" 2>/dev/null || \
	  $(BIN)/pip install -q --no-deps "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e '.[test]'
	touch $@

run: venv
	$(BIN)/vprod run $(PRESET)

test-deps:
	scripts/install-test-deps.sh

test: venv test-deps
	$(BIN)/python -m pytest

bench: venv
	$(BIN)/vprod bench host --json

doctor: venv
	$(BIN)/vprod doctor

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
