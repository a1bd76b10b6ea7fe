# autopilot.kvm — the two commands are `make demo` and `make test` (see README.md).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
ROOT := $(CURDIR)
VENV := $(ROOT)/.venv
BIN := $(VENV)/bin
export PATH := $(BIN):$(PATH)
export ANSIBLE_CONFIG := $(ROOT)/ansible.cfg
export LAB_DIR ?= /var/tmp/autopilot-lab
TEST_TREE := $(ROOT)/.build/test/ansible_collections/autopilot/kvm
LAB_CTL := $(ROOT)/tests/lab/bin/lab-ctl
PYVER := 3.12
# module code must also compile on the oldest target Python (3.9); pyenv has one on this kind of machine
PY39_BIN := $(firstword $(wildcard $(HOME)/.pyenv/versions/3.9*/bin) $(dir $(shell command -v python3.9 2>/dev/null)))

.PHONY: help setup venv runtime-tree test-tree demo test sanity units lint changelog-lint docs-check \
        integration lab-up lab-down lab-test demo-guests demo-run clean

help:
	@echo "make demo   - set up, build the lab, start 4 guests on h1, run the rebalance playbook"
	@echo "make test   - set up and run every test tier (sanity, units, lint, integration, lab)"
	@echo "make lab-up / make lab-down - build / tear down the lab"

setup: venv runtime-tree

venv:
	@tests/setup/venv.sh

# ansible-playbook autopilot.kvm.NAME finds the collection through this symlink tree
runtime-tree:
	@mkdir -p .build/runtime/ansible_collections/autopilot
	@ln -sfn ../../../.. .build/runtime/ansible_collections/autopilot/kvm

test-tree: venv
	@tests/setup/ansible-test-tree.sh >/dev/null

# ---------------------------------------------------------------- test tiers
test: setup
	@tests/run-all.sh

sanity: test-tree
	cd $(TEST_TREE) && ansible-test sanity --venv --python $(PYVER) --color no --skip-test pslint
	@if [ -n "$(PY39_BIN)" ]; then \
	  cd $(TEST_TREE) && PATH="$(PY39_BIN):$$PATH" ansible-test sanity --venv --python 3.9 --color no --test compile plugins/modules/ plugins/module_utils/; \
	else echo "error: no Python 3.9 found to check that module code compiles on it" >&2; exit 1; fi

units: test-tree
	cd $(TEST_TREE) && ansible-test units --local --python $(PYVER) --color no

lint: setup
	ansible-lint --profile production

changelog-lint: venv
	antsibull-changelog lint

docs-check: setup
	tests/setup/docs-check.sh

integration: test-tree
	cd $(TEST_TREE) && ansible-test integration --local --python $(PYVER) --color no

# ---------------------------------------------------------------- the lab
lab-up: setup
	tests/lab/lab-up.sh

lab-down:
	tests/lab/lab-down.sh

lab-test: lab-up
	python3 -m pytest --version >/dev/null 2>&1 || true
	$(BIN)/pytest -p no:cacheprovider tests/lab/e2e -v

# ---------------------------------------------------------------- the demo
demo: lab-up demo-guests demo-run
	@echo
	@echo "The lab is still up (guests included). Tear it down with: make lab-down"

demo-guests:
	/usr/bin/python3 tests/lab/lib/labguests.py cleanup
	/usr/bin/python3 tests/lab/lib/labguests.py start --host h1 --count 4 --prefix vm

demo-run:
	@echo "== placement before"; /usr/bin/python3 tests/lab/lib/labguests.py placement
	$(LAB_CTL) $(BIN)/ansible-playbook autopilot.kvm.rebalance -i inventories/lab
	@echo "== placement after"; /usr/bin/python3 tests/lab/lib/labguests.py placement

clean:
	rm -rf .build tests/output .ansible
