# Two commands do everything on a fresh Debian machine (as root):
#   make demo   installs what is needed and runs the service on a demo root in ./demo
#   make test   installs what is needed and runs the checks and the tests
PYTHON ?= python3
APT_PACKAGES = clamav-daemon clamav imagemagick redis-server potrace libmagic1 inotify-tools systemd chromium prometheus gimp-data openssh-server sshfs
BENCH_APT_PACKAGES = libvips-tools parallel
DEMO_ROOT ?= demo

.PHONY: setup apt pip demo test lint bench-deps

setup: apt pip

apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

pip:
	$(PYTHON) -m pip install -q -e '.[test]'

# The peers bench/bench_peers.py compares against (run by hand, not part of make test).
bench-deps:
	@$(MAKE) --no-print-directory apt APT_PACKAGES="imagemagick $(BENCH_APT_PACKAGES)"
	$(PYTHON) -m pip install -q -e '.[bench]'

lint:
	ruff check daemon tests bench
	mypy

test: setup lint
	$(PYTHON) -m pytest

demo: setup
	./scripts/demo $(DEMO_ROOT)
