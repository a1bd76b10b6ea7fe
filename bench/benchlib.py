"""What the bench commands share: importing the planner, citing its version, measuring peak memory, writing
their output."""
from __future__ import annotations

import hashlib
import os
import resource
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_PLANNER_PATH = os.path.join(REPO, "plugins", "plugin_utils")


def load_planner(path=None):
    """Import plan_document from <path>/planner/api.py (default: this repository's planner)."""
    path = path or DEFAULT_PLANNER_PATH
    if path not in sys.path:
        sys.path.insert(0, path)
    from planner.api import plan_document  # pylint: disable=import-error,import-outside-toplevel
    return plan_document


def planner_digest(path=None):
    """Short sha256 of the planner sources (the planner changes between runs; results cite it)."""
    root = os.path.join(path or DEFAULT_PLANNER_PATH, "planner")
    digest = hashlib.sha256()
    for name in sorted(os.listdir(root)):
        if name.endswith(".py"):
            with open(os.path.join(root, name), "rb") as f:
                digest.update(name.encode() + b"\0" + f.read())
    return digest.hexdigest()[:12]


def write_output(text, out):
    """A bench command's JSON text to ``out`` (a path), or to stdout when ``out`` is "-"."""
    if out == "-":
        sys.stdout.write(text + "\n")
    else:
        with open(out, "w", encoding="utf-8") as f:
            f.write(text)


def peak_rss_mib():
    """Peak resident set size of this process in MiB.

    VmHWM from /proc/self/status: getrusage's ru_maxrss would also count the parent's RSS when
    the parent spawned us with vfork+exec (Linux keeps the old mm's high-water mark at exec)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def peak_rss_children_mib():
    """Peak resident set size of the largest child this process waited for (the planner's forked searches), in MiB,
    or None when there was none. A forked child shares the parent's pages until it writes them, so this counts pages
    also counted in ``peak_rss_mib``: the two bound the memory used from above and are not to be added."""
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(peak / 1024.0, 1) if peak else None
