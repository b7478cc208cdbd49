# otel-tcplife: `make run` starts the agent, `make test` runs every test.
# Both run `make setup` first, which is idempotent: Debian packages only when
# missing, the venv only when pyproject.toml, setup.py or this file changed, the BPF object only when
# bpf/ changed.

# Debian's own python3, not whichever is first on PATH (a pyenv build, say): Debian's binary
# has the interpreter linked in, where a shared-library build calls it through libpython's PLT,
# and the agent spends less CPU per session on it (bench/README.md).
PYTHON ?= /usr/bin/python3
VENV := .venv
PY := $(VENV)/bin/python
BPF_OBJECT := otel_tcplife/bpf/tcplife.bpf.o
# The bcc backend (--backend bcc, for kernels without BTF): bcc's Python module (Debian's only, not
# on PyPI) and kernel headers, which bcc needs to compile at all (offsets come from BTF when the
# kernel has it, so headers of another kernel do). The venv imports bcc through a .pth file naming
# a directory that holds only a link to Debian's bcc package: the rest of Debian's stays out.
BCC_PACKAGES := python3-bpfcc linux-headers-$(shell dpkg --print-architecture 2>/dev/null || echo amd64)
BCC_PYTHON_PACKAGE := /usr/lib/python3/dist-packages/bcc
BASE_PACKAGES := python3 python3-venv clang llvm libbpf-dev libbpf1 bpftool iproute2
APT_PACKAGES := $(BASE_PACKAGES) $(BCC_PACKAGES)

# bcc in the venv $(1): a .pth naming a directory that holds only a link to Debian's bcc package.
link_bcc = mkdir -p "$(1)/bcc-site" && ln -sfn $(BCC_PYTHON_PACKAGE) "$(1)/bcc-site/bcc" && \
  echo "$(1)/bcc-site" > "$$("$(1)/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/bcc-site.pth"
ARGS ?=

# `make install`: the product, without the checkout. A venv at $(PREFIX) holding the wheel
# (with the compiled BPF object) and its runtime dependencies only: $(PREFIX)/bin/otel-tcplife is
# the agent (deploy/otel-tcplife.service and deploy/Containerfile run exactly that path) and
# $(PREFIX)/share/man/man8/otel-tcplife.8 its man page. Run again to upgrade in place. On a host
# without kernel BTF it also installs what the bcc backend needs there: python3-bpfcc and the
# running kernel's headers.
PREFIX ?= /opt/otel-tcplife

.PHONY: setup apt run test bench install clean

setup: apt $(VENV)/.installed $(BPF_OBJECT)

apt:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(VENV)/.installed: pyproject.toml setup.py Makefile
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,bench]'
	$(call link_bcc,$(abspath $(VENV)))
	touch $@

$(BPF_OBJECT): bpf/tcplife.bpf.c bpf/tcplife.h bpf/kernel_types.h bpf/build.py
	$(PYTHON) bpf/build.py $@

run: setup
	$(VENV)/bin/otel-tcplife --format ndjson $(ARGS)

test: setup
	$(VENV)/bin/pytest -ra $(ARGS)

bench: setup
	$(PY) bench/run.py $(ARGS)

install: export PIP_DISABLE_PIP_VERSION_CHECK = 1
install:
	@$(MAKE) --no-print-directory apt APT_PACKAGES="$(BASE_PACKAGES)"
	@case "$(PREFIX)" in /*) ;; *) echo "make install: PREFIX must be an absolute path, not '$(PREFIX)'" >&2; exit 2;; esac
	@if [ -e "$(PREFIX)" ] && [ ! -e "$(PREFIX)/pyvenv.cfg" ] && [ -n "$$(ls -A "$(PREFIX)")" ]; then \
	  echo "make install: $(PREFIX) is neither empty nor an otel-tcplife install; choose another PREFIX" >&2; exit 2; \
	fi
	[ -e "$(PREFIX)/pyvenv.cfg" ] || $(PYTHON) -m venv "$(PREFIX)"
	@# The wheel first (pip wheel builds the BPF object into it), then its dependencies; the
	@# package itself is reinstalled every time, so a rebuilt wheel of the same version lands.
	wheels=$$(mktemp -d) && trap 'rm -rf "$$wheels"' EXIT && \
	  "$(PREFIX)/bin/python" -m pip wheel -q --no-deps --wheel-dir "$$wheels" . && \
	  "$(PREFIX)/bin/python" -m pip install -q "$$wheels"/*.whl && \
	  "$(PREFIX)/bin/python" -m pip install -q --no-deps --force-reinstall "$$wheels"/*.whl
	@if [ ! -e /sys/kernel/btf/vmlinux ]; then \
	  $(MAKE) --no-print-directory apt APT_PACKAGES="python3-bpfcc linux-headers-$$(uname -r)"; \
	fi
	if [ ! -e /sys/kernel/btf/vmlinux ]; then $(call link_bcc,$(PREFIX)); fi
	mkdir -p "$(PREFIX)/share/man/man8"
	"$(PREFIX)/bin/python" -m otel_tcplife.manpage > "$(PREFIX)/share/man/man8/otel-tcplife.8.tmp"
	mv "$(PREFIX)/share/man/man8/otel-tcplife.8.tmp" "$(PREFIX)/share/man/man8/otel-tcplife.8"
	@echo "installed: $(PREFIX)/bin/otel-tcplife, man page: man -M $(PREFIX)/share/man otel-tcplife"

clean:
	rm -rf $(VENV) build dist *.egg-info $(BPF_OBJECT)
