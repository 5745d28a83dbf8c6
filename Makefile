# The two commands of a fresh machine: `make run` (the default study) and `make test`.
# Both create or refresh .venv from pyproject.toml and install the offline dataset first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CORES ?= 2
FASHION_MNIST := /usr/share/datasets/fashion-mnist

.PHONY: run test verify report gallery lint install system-data clean

run: install system-data
	$(BIN)/snakemake --cores $(CORES)

test: install system-data
	$(BIN)/python -m pytest -q -ra

# Checks every result of the default study against its checksums and removes the damaged
# ones with what was computed from them; `make run` then rebuilds exactly those.
verify: install
	$(BIN)/snakemake --cores 1 verify

# The default study's self-contained HTML report (runs the study first if needed).
report: run
	$(BIN)/snakemake --report results/demo/report.html

# The README's gallery: the default study's main figures, shrunk (900 px wide, 256
# colours) into docs/gallery/ so the committed files stay small.
GALLERY := jacobian_vs_gap jacobian_by_correctness ellipse_profile loss_bounds ellipse_kinds
gallery: run
	mkdir -p docs/gallery
	$(BIN)/python -c "import sys; from PIL import Image; \
	[Image.open(f'results/demo/figures/{s}.png').convert('RGB').reduce(max(1, Image.open(f'results/demo/figures/{s}.png').width // 900)).quantize(256).save(f'docs/gallery/{s}.png', optimize=True) for s in sys.argv[1:]]" $(GALLERY)

lint: install
	$(BIN)/snakemake --lint

install: $(STAMP)

# Re-installs whenever pyproject.toml changes (the pins live there).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Debian ships real Fashion-MNIST for machines without internet; install it when apt can.
system-data:
	@if [ -f $(FASHION_MNIST)/train-images-idx3-ubyte.gz ]; then \
		echo "Fashion-MNIST present in $(FASHION_MNIST)"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	elif command -v apt-get >/dev/null && command -v sudo >/dev/null && sudo -n true 2>/dev/null; then \
		sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	else \
		echo "Not installing Debian's dataset-fashion-mnist: no apt-get with root rights here."; \
		echo "The default study then needs data.root (the four idx .gz files) or data.download: true."; \
	fi

clean:
	rm -rf results .snakemake
