# The two commands of a fresh machine: `make run` (the default study) and `make test`.
# Both create or refresh .venv from pyproject.toml and install the offline dataset first.
# run, check, verify and report take a study: make run STUDY=studies/mine.yaml (several
# files are merged in order: STUDY="a.yaml b.yaml"); the default study is config.yaml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SNAKEMAKE := $(BIN)/snakemake
STAMP := $(VENV)/.installed-stamp
CORES ?= 2
STUDY ?= config.yaml
FASHION_MNIST := /usr/share/datasets/fashion-mnist

.PHONY: run check test test-fast verify report gallery lint install system-data clean

# --configfile comes last: it takes every name after it, targets (verify) included.
run: check system-data
	$(SNAKEMAKE) --cores $(CORES) --configfile $(STUDY)

# The study's files, checked before Snakemake reads them: Snakemake's own message for a
# YAML error names neither file nor line; this names file, line and column, or the key.
check: install
	$(BIN)/python -m workflow_src.config check $(STUDY)

# The tiers (tests/README.md). test: the whole suite, what CI (.ci/run) runs. test-fast: unit
# and numerical reference tests, no Snakemake, SLURM, presets or slow tests (a few minutes),
# with one thread per process (OMP_NUM_THREADS=1: its networks are tiny, and two threads
# on a busy 2-core machine made it several times slower). Both print the slowest tests.
PYTEST := $(BIN)/python -m pytest -q -ra --strict-markers --durations=15
FAST := not workflow and not slurm and not presets and not slow

test: install system-data
	$(PYTEST)

test-fast: install
	OMP_NUM_THREADS=1 $(PYTEST) -m "$(FAST)"

# Checks every result of the study against its checksums and removes the damaged ones
# with what was computed from them; `make run` (same STUDY) then rebuilds exactly those.
verify: check
	$(SNAKEMAKE) --cores 1 verify --configfile $(STUDY)

# The study's self-contained HTML report, results/<study>/report.html (runs the study
# first if needed).
report: run
	results=$$($(BIN)/python -m workflow_src.config results-dir $(STUDY)) && \
	$(SNAKEMAKE) --report $$results/report.html --configfile $(STUDY)

# The README's gallery: the default study's main figures, shrunk (900 px wide, 256
# colours) into docs/gallery/ so the committed files stay small.
GALLERY := jacobian_vs_gap jacobian_by_correctness ellipse_profile loss_bounds ellipse_kinds
gallery: override STUDY := config.yaml
gallery: run
	mkdir -p docs/gallery
	$(BIN)/python -c "import sys; from PIL import Image; \
	[Image.open(f'results/demo/figures/{s}.png').convert('RGB').reduce(max(1, Image.open(f'results/demo/figures/{s}.png').width // 900)).quantize(256).save(f'docs/gallery/{s}.png', optimize=True) for s in sys.argv[1:]]" $(GALLERY)

lint: install
	$(BIN)/snakemake --lint

install: $(STAMP)

# Re-installs whenever pyproject.toml changes (the pins live there).
# pip prints a line per package (no progress bars, so CI logs stay short).
$(STAMP): pyproject.toml
	@echo "== Installing gensens into $(VENV): PyTorch, Snakemake, SciPy and the rest of" \
		"pyproject.toml's pins. On a fresh machine this takes 4-5 minutes."
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --progress-bar off -e '.[test]'
	touch $(STAMP)
	@echo "== $(VENV) is ready."

# Debian ships real Fashion-MNIST for machines without internet; install it when apt can.
system-data:
	@if [ -f $(FASHION_MNIST)/train-images-idx3-ubyte.gz ]; then \
		echo "Fashion-MNIST present in $(FASHION_MNIST)"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "== Installing Debian's dataset-fashion-mnist (apt-get) into $(FASHION_MNIST)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	elif command -v apt-get >/dev/null && command -v sudo >/dev/null && sudo -n true 2>/dev/null; then \
		echo "== Installing Debian's dataset-fashion-mnist (sudo apt-get) into $(FASHION_MNIST)"; \
		sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	else \
		echo "Not installing Debian's dataset-fashion-mnist: no apt-get with root rights here."; \
		echo "The default study then needs data.root (the four idx .gz files) or data.download: true."; \
	fi

clean:
	rm -rf results .snakemake
