# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PKGS := crypto ledger consensus transfer node
# mypy cannot follow setuptools' editable finder, so it checks a tree of links
# that spells the installed namespace (mftp.crypto -> crypto/ ...).
TYPETREE := build/typetree

.PHONY: venv system-deps demo demo-join test lint typecheck pytest clean

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

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: system-deps $(STAMP)
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

pytest: system-deps $(STAMP)
	$(BIN)/pytest -n 2 -q

test: lint typecheck pytest

clean:
	rm -rf $(VENV) build
