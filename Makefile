# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PKGS := crypto ledger consensus transfer node
# mypy cannot follow setuptools' editable finder, so it checks a tree of links
# that spells the installed namespace (mftp.crypto -> crypto/ ...).
TYPETREE := build/typetree

.PHONY: venv system-deps viewer demo demo-join test lint typecheck pytest clean

# Orthanc is the real PACS of the tests and the demo; tesseract reads burned-in text for the
# pixel cleaning, and dciodvfy (dicom3tools) validates de-identified output in the tests; slapd is
# the real directory (LDAP) of the people tests (Debian packages).  The tests run their own slapd
# on free loopback ports; on a host with systemd, installing slapd also starts Debian's own
# service, which they do not use.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
system-deps:
	@command -v Orthanc >/dev/null 2>&1 && command -v tesseract >/dev/null 2>&1 && \
	  command -v dciodvfy >/dev/null 2>&1 || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq orthanc orthanc-dicomweb \
	    tesseract-ocr dicom3tools >/dev/null; }
	@[ -x /usr/sbin/slapd ] && command -v ldapsearch >/dev/null 2>&1 || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq slapd ldap-utils >/dev/null; }
	@# Chromium: the browser tests of the viewer drive Debian's build through Playwright
	@# (Playwright's own browser download cannot reach its host from here).
	@command -v chromium >/dev/null 2>&1 || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium nodejs npm >/dev/null; }

# The OHIF viewer the node serves (node/viewing/ohif.py): the prebuilt app from npm, pinned,
# unpacked into a git-ignored folder and never committed.  The AI runtime (dist/ort, 136 MB)
# and the microscopy viewer are never loaded for CT/MR/US, so they are left out.
OHIF_VERSION := 3.13.2
OHIF_DIR := .ohif
OHIF_STAMP := $(OHIF_DIR)/.installed-$(OHIF_VERSION)
$(OHIF_STAMP):
	@command -v npm >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nodejs npm >/dev/null; }
	rm -rf $(OHIF_DIR) && mkdir -p $(OHIF_DIR)/pack
	cd $(OHIF_DIR)/pack && npm pack --silent @ohif/app@$(OHIF_VERSION) >/dev/null
	tar -xzf $(OHIF_DIR)/pack/ohif-app-$(OHIF_VERSION).tgz -C $(OHIF_DIR) \
	  --exclude='package/dist/ort' --exclude='package/dist/dicom-microscopy-viewer*'
	mv $(OHIF_DIR)/package/dist $(OHIF_DIR)/dist && rm -rf $(OHIF_DIR)/package $(OHIF_DIR)/pack
	@# Compressed once here, served as they are (aiohttp picks name.gz when the browser accepts gzip).
	find $(OHIF_DIR)/dist -type f \( -name '*.js' -o -name '*.css' -o -name '*.html' -o -name '*.json' \
	  -o -name '*.svg' -o -name '*.wasm' -o -name '*.map' \) -exec gzip -k -9 {} +
	touch $(OHIF_STAMP)

viewer: $(OHIF_STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: system-deps $(STAMP) viewer
	$(BIN)/python scripts/demo.py

# A hospital asks to join a running consortium, three members approve, it syncs, votes and sends.
demo-join: $(STAMP)
	$(BIN)/python scripts/demo_join.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	rm -rf $(TYPETREE) && mkdir -p $(TYPETREE)/mftp
	for p in $(PKGS); do ln -s ../../../$$p $(TYPETREE)/mftp/$$p; done
	cd $(TYPETREE) && ../../$(BIN)/mypy --config-file ../../pyproject.toml $(addprefix -p mftp.,$(PKGS))

pytest: system-deps $(STAMP) viewer
	$(BIN)/pytest -n 2 -q

test: lint typecheck pytest

clean:
	rm -rf $(VENV) build $(OHIF_DIR)
