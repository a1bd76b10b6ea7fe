"""Runs a module's main() in-process and returns what it exited or failed with."""

from __future__ import annotations

import json

import pytest

from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args


class ModuleExit(Exception):
    """Raised instead of sys.exit by exit_json / fail_json."""

    def __init__(self, result, failed):
        super().__init__(json.dumps(result, default=str))
        self.result = result
        self.failed = failed


class ExitJson(Exception):
    """exit_json's keyword arguments, raised by the ``capture`` fixture."""


class FailJson(Exception):
    """fail_json's keyword arguments (``msg`` included), raised by the ``capture`` fixture."""


@pytest.fixture
def capture(monkeypatch):
    """exit_json / fail_json raise ExitJson / FailJson carrying the result instead of exiting."""

    def exit_json(_self, **kwargs):
        raise ExitJson(kwargs)

    def fail_json(_self, msg, **kwargs):
        kwargs["msg"] = msg
        raise FailJson(kwargs)

    monkeypatch.setattr(basic.AnsibleModule, "exit_json", exit_json)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)


def run_module(monkeypatch, main, args, check_mode=False, diff=False):
    """Call ``main`` with ``args``; returns the result dict (``failed`` set when it failed)."""

    def exit_json(self, **kwargs):
        raise ModuleExit(kwargs, failed=False)

    def fail_json(self, msg, **kwargs):
        kwargs["msg"] = msg
        kwargs["failed"] = True
        raise ModuleExit(kwargs, failed=True)

    monkeypatch.setattr(basic.AnsibleModule, "exit_json", exit_json)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)
    full = dict(args)
    full["_ansible_check_mode"] = check_mode
    full["_ansible_diff"] = diff
    with patch_module_args(full):
        with pytest.raises(ModuleExit) as caught:
            main()
    return caught.value.result
