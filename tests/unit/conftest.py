"""Lets plain pytest (outside ansible-test) import the collection as ansible_collections.autopilot.kvm."""

from __future__ import annotations

import os
import sys

from hypothesis import settings as _hypothesis_settings

# Property tests draw the same examples on every run, so `make test` is repeatable; set
# HYPOTHESIS_PROFILE=explore to search with fresh random examples.
_hypothesis_settings.register_profile("repeatable", derandomize=True, database=None)
_hypothesis_settings.register_profile("explore", derandomize=False)
_hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
_PARTS = _ROOT.split(os.sep)
if _PARTS[-3:-2] != ["ansible_collections"]:
    # Not inside ansible_collections/autopilot/kvm (ansible-test arranges that itself):
    # use the symlink tree the Makefile keeps at .build/runtime.
    _RUNTIME = os.path.join(_ROOT, ".build", "runtime")
    _LINK = os.path.join(_RUNTIME, "ansible_collections", "autopilot", "kvm")
    if not os.path.exists(_LINK):
        os.makedirs(os.path.dirname(_LINK), exist_ok=True)
        os.symlink(os.path.join("..", "..", "..", ".."), _LINK)
    if _RUNTIME not in sys.path:
        sys.path.insert(0, _RUNTIME)

    # Plugin loaders (lookup_loader.get('autopilot.kvm.plan')) need Ansible's collection finder.
    from ansible.utils.collection_loader._collection_finder import _AnsibleCollectionFinder

    _AnsibleCollectionFinder(paths=[_RUNTIME])._install()
