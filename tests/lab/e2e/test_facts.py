"""host_info and guest_info on real lab hosts, through Ansible over SSH."""

from __future__ import annotations

import pytest

from conftest import run_playbook


@pytest.fixture(scope="module")
def one_guest(lab):
    lab.cleanup("fact")
    lab.start("h2", 1, prefix="fact")
    yield "fact1"
    lab.cleanup("fact")


def test_fact_modules_report_each_host_and_its_guests(one_guest):
    run = run_playbook("tests/lab/e2e/playbooks/facts.yml", log="facts")
    assert run.returncode == 0, run.output[-4000:]
    recap = run.recap()
    assert sorted(recap) == ["h1", "h2", "h3"]
    assert all(row["failed"] == 0 and row["changed"] == 0 for row in recap.values()), recap
