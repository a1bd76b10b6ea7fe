# -*- coding: utf-8 -*-
# Copyright: autopilot.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tracks what a module changes, for ``changed`` and ``--diff``.

This module util is PRIVATE to the collection: its API may change at any time.
"""

from __future__ import annotations


class DifferenceTracker:
    """Records (name, before, after) for each parameter a module looked at."""

    def __init__(self):
        self._items = []

    def add(self, name, before, after):
        self._items.append((name, before, after))

    @property
    def changed(self):
        return any(before != after for _name, before, after in self._items)

    def changes(self):
        """Names of the parameters whose value differs."""
        return [name for name, before, after in self._items if before != after]

    def before(self):
        return dict((name, before) for name, before, _after in self._items)

    def after(self):
        return dict((name, after) for name, _before, after in self._items)

    def diff(self):
        """The ``diff`` return value Ansible renders for ``--diff``."""
        return dict(before=self.before(), after=self.after())
