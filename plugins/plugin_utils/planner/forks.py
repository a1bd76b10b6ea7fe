"""Searches side by side: the same search from the same placement in forked processes, each with its own seed.

A local search's answer depends on its random path more than on most of its settings (on ROADEF a2_4 four seeds at
300 s ended 1.02-1.12 times the best known), so a controller with idle cores gets a better expected answer by running
one search per core and keeping the cheapest. A forked process starts with the parent's whole model, so nothing is
sent in; only the answer comes back, pickled, through a pipe (the child is this very code, so the data is trusted).
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import time

# Seconds a forked search may answer after the deadline before it is stopped and left out: its own clock stops at
# the deadline, so this only covers pickling its answer (a 1,000-guest answer with its kept placements is a few MB)
# and a machine busy with other work.
GRACE_S = 5.0
READ_CHUNK = 1 << 20


def can_fork():
    return hasattr(os, "fork")


def start(seeds, search):
    """Run ``search(seed)`` in one forked process per seed. Returns handles for ``collect`` (fewer than seeds when
    the system refuses a fork)."""
    handles = []
    for seed in seeds:
        r, w = os.pipe()
        try:
            pid = os.fork()
        except OSError:
            os.close(r)
            os.close(w)
            break
        if pid == 0:  # pragma: no cover - runs in the child, which leaves by os._exit
            os.close(r)
            try:
                try:
                    answer = ("ok", search(seed))
                except Exception as exc:  # pylint: disable=broad-exception-caught
                    # The parent reports it; a traceback here would go nowhere useful.
                    answer = ("error", "%s: %s" % (type(exc).__name__, exc))
                data = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
                with os.fdopen(w, "wb") as pipe:
                    pipe.write(data)
            finally:
                os._exit(0)
        os.close(w)
        handles.append((pid, r))
    return handles


def collect(handles, until):
    """Each forked search's answer, in order: ("ok", value), ("error", text) when it raised, or ("lost", text)
    when it ended without answering or was still running at monotonic time ``until`` (it is then killed)."""
    answers = []
    for pid, r in handles:
        chunks, answer = [], None
        try:
            while True:
                if not select.select([r], [], [], max(0.0, until - time.monotonic()))[0]:
                    answer = ("lost", "no answer by the deadline; stopped")
                    os.kill(pid, signal.SIGKILL)
                    break
                chunk = os.read(r, READ_CHUNK)
                if not chunk:
                    break
                chunks.append(chunk)
        finally:
            os.close(r)
            os.waitpid(pid, 0)
        if answer is None:
            try:
                answer = pickle.loads(b"".join(chunks))
            except (EOFError, pickle.UnpicklingError):
                answer = ("lost", "ended without an answer")
        answers.append(answer)
    return answers


def stop(handles):
    """Kill and reap forked searches whose answers are no longer wanted (the parent's own search failed)."""
    for pid, r in handles:
        os.close(r)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
