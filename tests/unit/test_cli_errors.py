"""User errors on the command line are found before anything runs, with one line and exit code 2."""

from __future__ import annotations

import pytest

from kubeharden.audit import EXIT_ERROR
from kubeharden.cli import main


@pytest.mark.parametrize("command", ["audit", "drift", "images"])
def test_an_output_path_that_cannot_be_written_stops_before_the_run(command, tmp_path, capsys, monkeypatch):
    def no_run(*_args, **_kwargs):
        raise AssertionError("the run started")

    monkeypatch.setattr("kubeharden.cli.audit_and_record", no_run)
    monkeypatch.setattr("kubeharden.drift.run_drift", no_run)
    monkeypatch.setattr("kubeharden.images.list_images", no_run)
    missing = tmp_path / "no-such-dir" / "report.json"
    assert main([command, "-i", str(tmp_path / "hosts.yml"), "--output", str(missing)]) == EXIT_ERROR
    assert capsys.readouterr().err == (f"kubeharden: --output {missing}: the directory {missing.parent} "
                                       "does not exist\n")
    assert main([command, "-i", str(tmp_path / "hosts.yml"), "--output", str(tmp_path)]) == EXIT_ERROR
    assert "not a file this user can write" in capsys.readouterr().err


def test_a_yaml_inventory_error_names_its_line_and_column(tmp_path, capsys):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  children:\n    workers:\n      hosts: {w1: {}\n    etcd: {}\n")
    assert main(["audit", "-i", str(inventory)]) == EXIT_ERROR
    error = capsys.readouterr().err
    assert error.startswith(f"kubeharden: inventory {inventory} could not be parsed: line 5, column 5:"), error
    assert "while parsing a flow mapping at line 4, column 14" in error


def test_an_inventory_ansible_cannot_parse_is_reported_without_warnings_of_other_libraries(tmp_path, capsys):
    """ansible-inventory's refusal is quoted as it is: no Python start-up notice or third-party deprecation in it."""
    inventory = tmp_path / "inventory"
    inventory.mkdir()  # empty: Ansible's refusal is short enough to be quoted whole
    assert main(["audit", "-i", str(inventory)]) == EXIT_ERROR
    error = capsys.readouterr().err
    assert error.startswith(f"kubeharden: inventory {inventory} could not be parsed:"), error
    assert "Warning" not in error and "-W option" not in error, error
