"""The kubelet role's real effects on lab nodes after the whole site, and the audit's verdict on them."""


import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared"))  # not a package
from lab_audit import audit_statuses


def test_configuration_has_the_cis_settings(host):
    with host.sudo():
        config = yaml.safe_load(host.file("/var/lib/kubelet/config.yaml").content_string)
    assert config["authentication"]["anonymous"]["enabled"] is False
    assert config.get("readOnlyPort", 0) == 0  # left out, as kubeadm writes it: a plain field reads as zero
    assert config["podPidsLimit"] == 4096 and config["seccompDefault"] is True
    assert config["streamingConnectionIdleTimeout"] == "5m0s"
    # kubeadm's own settings survive the merge
    assert config["staticPodPath"] == "/etc/kubernetes/manifests" and config["cgroupDriver"] == "systemd"


def test_kubelet_files_are_root_only(host):
    with host.sudo():
        for path in ("/var/lib/kubelet/config.yaml", "/usr/lib/systemd/system/kubelet.service",
                     "/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf", "/etc/kubernetes/kubelet.conf"):
            info = host.file(path)
            assert (info.mode, info.user, info.group) == (0o600, "root", "root"), path


def test_backup_of_the_original_configuration_is_outside_the_kubelet_dir(host):
    with host.sudo():
        backups = host.run("ls /var/backups/kubeharden/var/lib/kubelet/").stdout.split()
        assert any(name.startswith("config.yaml.") for name in backups)
        # The kubelet reads every file of its directories: no copy of its configuration is left beside it.
        assert not [name for name in host.run("ls /var/lib/kubelet/").stdout.split() if name.startswith("config.yaml.")]


def test_audit_passes_every_kubelet_control():
    """Run once from the controller (testinfra runs this test per host; the first run answers for all)."""
    code, nodes = audit_statuses("4.1,4.2")
    assert code == 0, nodes
    for node, statuses in nodes.items():
        assert not [cid for cid, s in statuses.items() if s in ("fail", "error")], (node, statuses)
        assert statuses["4.2.9"] == "pass"  # a serving certificate from the cluster CA, approved by the role
