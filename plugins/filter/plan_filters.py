# -*- coding: utf-8 -*-
# Copyright: autopilot.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of the plan and apply roles: saving a plan, reporting steps, comparing predictions with measurements."""

from __future__ import annotations

from ansible_collections.autopilot.kvm.plugins.plugin_utils.apply_report import prediction_report, step_outcome
from ansible_collections.autopilot.kvm.plugins.plugin_utils.saved_plan import save


class FilterModule:
    def filters(self):
        return {
            "step_outcome": step_outcome,
            "prediction_report": prediction_report,
            "saved_plan": save,
        }
