"""User errors on the command line are found before anything runs, with one line and exit code 2."""

from __future__ import annotations

from pathlib import Path

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


def test_without_i_the_inventory_is_the_one_ansible_would_use(tmp_path, capsys, monkeypatch):
    """No -i: $ANSIBLE_INVENTORY, else the inventory setting of the ansible.cfg Ansible reads (relative to that
    file); neither: a usage error, not a search for a lab inventory the user does not have."""
    from kubeharden.runner import default_inventory

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ANSIBLE_CONFIG", raising=False)
    monkeypatch.delenv("ANSIBLE_INVENTORY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    if Path("/etc/ansible/ansible.cfg").is_file():
        pytest.skip("this machine has an /etc/ansible/ansible.cfg, which Ansible would read")
    assert default_inventory() is None
    assert main(["audit", "--output", str(tmp_path / "out.json")]) == EXIT_ERROR
    assert capsys.readouterr().err == ("kubeharden: no inventory: pass -i INVENTORY (or set ANSIBLE_INVENTORY, or "
                                       "inventory in ansible.cfg)\n")
    config = tmp_path / "site" / "ansible.cfg"
    config.parent.mkdir()
    config.write_text("[defaults]\ninventory = inventory/prod.yml, other.yml\n")
    monkeypatch.setenv("ANSIBLE_CONFIG", str(config))
    assert default_inventory() == str(tmp_path / "site" / "inventory" / "prod.yml")
    monkeypatch.setenv("ANSIBLE_INVENTORY", "/srv/hosts.yml,/srv/more.yml")
    assert default_inventory() == "/srv/hosts.yml"


def test_a_state_directory_that_cannot_be_written_stops_before_the_run(tmp_path, capsys, monkeypatch):
    def no_run(*_args, **_kwargs):
        raise AssertionError("the run started")

    monkeypatch.setattr("kubeharden.cli.audit_and_record", no_run)
    monkeypatch.setattr("kubeharden.drift.run_drift", no_run)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for command in ("audit", "drift"):
        assert main([command, "-i", str(tmp_path / "hosts.yml"), "--state-dir", str(blocker / "state")]) == EXIT_ERROR
        assert capsys.readouterr().err.startswith(f"kubeharden: state directory {blocker / 'state'} cannot be created")


@pytest.mark.parametrize("content", ["[1, 2]", '{"version": 1, "nodes": []}', '{"version": 1, "nodes": {}}'])
def test_a_wrongly_shaped_history_record_is_named_not_a_traceback(tmp_path, capsys, content):
    (tmp_path / "history").mkdir()
    (tmp_path / "history" / "r1.json").write_text(content)
    assert main(["report", "--state-dir", str(tmp_path)]) == EXIT_ERROR
    assert capsys.readouterr().err == (f"kubeharden: {tmp_path / 'history' / 'r1.json'} is not a kubeharden record "
                                       "of version 1 (move it away to go on)\n")
