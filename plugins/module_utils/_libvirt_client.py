# -*- coding: utf-8 -*-
# Copyright: autopilot.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collection's one libvirt client wrapper.

This module util is PRIVATE to the collection: its API may change at any time.
It owns the connection and turns every libvirt error into a clear ``fail_json``
carrying libvirt's own text, so modules never show a bare traceback.
"""

from __future__ import annotations

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

LIBVIRT_IMPORT_ERROR = None
try:
    import libvirt
except ImportError:  # reported by create_module() through missing_required_lib
    libvirt = None
    LIBVIRT_IMPORT_ERROR = traceback.format_exc()

LIBVIRT_REQUIREMENT = "libvirt-python (on Debian: the python3-libvirt package)"

DEFAULT_URI = "qemu:///system"


def libvirt_argument_spec():
    """Options every module of the collection shares (documented in doc_fragments/_libvirt.py)."""
    return dict(
        uri=dict(type="str", default=DEFAULT_URI),
    )


def libvirt_error_text(error):
    """libvirt's own message for an error, without the Python wrapper's decoration."""
    message = None
    if hasattr(error, "get_error_message"):
        message = error.get_error_message()
    return message or str(error)


class LibvirtClient:
    """A lazily opened libvirt connection bound to an AnsibleModule."""

    def __init__(self, module, uri=None):
        self.module = module
        self.uri = uri or module.params.get("uri") or DEFAULT_URI
        self._conn = None

    @property
    def conn(self):
        if self._conn is None:
            self._conn = self.call("connect to libvirt at %s" % self.uri, libvirt.open, self.uri)
        return self._conn

    def fail(self, msg, **kwargs):
        """Fail the module with ``msg``; the connection is closed first."""
        self.close()
        kwargs.setdefault("uri", self.uri)
        self.module.fail_json(msg=msg, **kwargs)

    def call(self, what, func, *args, **kwargs):
        """Run a libvirt call; a libvirt error fails the module with libvirt's text."""
        try:
            return func(*args, **kwargs)
        except libvirt.libvirtError as error:
            self.fail(
                "Cannot %s: %s" % (what, libvirt_error_text(error)),
                libvirt_error=libvirt_error_text(error),
                libvirt_error_code=error.get_error_code(),
            )
        return None  # not reached: fail() exits

    def try_call(self, func, *args, **kwargs):
        """Run a libvirt call that may legitimately be unsupported; returns (value, error text)."""
        try:
            return func(*args, **kwargs), None
        except libvirt.libvirtError as error:
            return None, libvirt_error_text(error)

    def find_domain(self, name):
        """The domain called ``name`` on this connection, or None when it is not defined here."""
        try:
            return self.conn.lookupByName(name)
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            self.fail("Cannot look up guest %r: %s" % (name, libvirt_error_text(error)),
                      libvirt_error=libvirt_error_text(error))
        return None

    def domain(self, name):
        """The domain called ``name``; fails clearly when it does not exist."""
        dom = self.find_domain(name)
        if dom is None:
            self.fail("Guest %r not found on %s" % (name, self.uri))
        return dom

    def close(self):
        if self._conn is not None:
            try:
                self._conn.close()
            except libvirt.libvirtError:
                pass  # closing a broken connection is not worth a failure
            self._conn = None


def _quiet_error_handler(_context, _error):
    """libvirt prints every error to stderr by default; errors are reported by fail() instead."""


def create_module(argument_spec=None, **kwargs):
    """Build the AnsibleModule with the shared options and return ``(module, client)``.

    A missing libvirt binding fails with Ansible's ``missing_required_lib`` message.
    """
    spec = libvirt_argument_spec()
    spec.update(argument_spec or {})
    module = AnsibleModule(argument_spec=spec, **kwargs)
    if libvirt is None:
        module.fail_json(msg=missing_required_lib(LIBVIRT_REQUIREMENT), exception=LIBVIRT_IMPORT_ERROR)
    libvirt.registerErrorHandler(_quiet_error_handler, None)
    return module, LibvirtClient(module)
