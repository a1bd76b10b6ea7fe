# -*- coding: utf-8 -*-
# Copyright: autopilot.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Documentation shared by every module that talks to libvirt (PRIVATE to the collection)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  uri:
    description:
      - The libvirt connection URI of the hypervisor on the managed host.
      - Set it once for a play with C(module_defaults) and the action group C(group/autopilot.kvm.libvirt).
    type: str
    default: qemu:///system
requirements:
  - libvirt-python on the managed host (on Debian and Ubuntu the C(python3-libvirt) package).
"""

    ACTIONGROUP = r"""
attributes:
  action_group:
    description: Use C(group/autopilot.kvm.libvirt) in C(module_defaults) to set defaults for this module.
    support: full
    membership:
      - autopilot.kvm.libvirt
"""
