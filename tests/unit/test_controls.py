"""The audit engine's pure logic, on files it writes itself (no node needed)."""

from __future__ import annotations

import textwrap

import pytest
from ansible.module_utils import kubeharden_controls as controls
from ansible.module_utils import kubeharden_node as node
from ansible.module_utils import kubeharden_readers_os as readers_os


@pytest.mark.parametrize(("op", "actual", "expected", "result"), [
    ("eq", "false", "false", True), ("eq", True, "true", True), ("eq", "True", "false", False),
    ("neq", "Webhook", "AlwaysAllow", True), ("has", "Node,RBAC", "RBAC", True), ("has", "Node", "RBAC", False),
    ("nothave", "Node,AlwaysAllow", "AlwaysAllow", False), ("gte", "30", 30, True), ("gte", "7", 30, False),
    ("lte", "4", 4, True), ("gt", 0, 0, False), ("in", "secretbox", ["aescbc", "secretbox"], True),
    ("subset", "A,B", ["A", "B", "C"], True), ("subset", "A,D", ["A", "B"], False), ("subset", "", ["A"], False),
    ("set", "", None, False), ("set", "x", None, True), ("unset", None, None, True), ("eq", None, "x", False),
    ("regex", "300", "^([1-9]|300)$", True), ("gte", "many", 3, False),
])
def test_compare(op, actual, expected, result):
    assert controls.compare(op, actual, expected) is result


def test_unknown_comparison_is_an_error():
    with pytest.raises(ValueError, match="unknown comparison"):
        controls.compare("approximately", "1", "1")


def test_parse_flags_handles_pflag_forms():
    flags = node.parse_flags(["--a=1", "--b", "two", "--profiling", "--client-cert-auth", "--c=x", "--c=y"])
    assert flags == {"a": "1", "b": "two", "profiling": "true", "client-cert-auth": "true", "c": "y"}


@pytest.fixture
def systemd_dirs(tmp_path, monkeypatch):
    etc, lib = tmp_path / "etc", tmp_path / "lib"
    (lib / "kubelet.service.d").mkdir(parents=True)
    (etc / "kubelet.service.d").mkdir(parents=True)
    monkeypatch.setattr(node, "SYSTEMD_UNIT_DIRS", (str(etc), str(lib)))
    return etc, lib


def test_unit_exec_expands_environment_and_honours_dropin_order(tmp_path, systemd_dirs):
    etc, lib = systemd_dirs
    env_file = tmp_path / "kubeadm-flags.env"
    env_file.write_text('KUBELET_KUBEADM_ARGS="--container-runtime-endpoint=unix:///run/c.sock"\n')
    (lib / "kubelet.service").write_text("[Service]\nExecStart=/usr/bin/kubelet\n")
    (lib / "kubelet.service.d/10-kubeadm.conf").write_text(textwrap.dedent(f"""\
        [Service]
        Environment="KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml"
        EnvironmentFile=-{env_file}
        EnvironmentFile=-/nonexistent/default-kubelet
        ExecStart=
        ExecStart=/usr/bin/kubelet $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS
        """))
    (etc / "kubelet.service.d/20-override.conf").write_text(
        '[Service]\nEnvironment="KUBELET_EXTRA_ARGS=--config-dir=/etc/kubernetes/kubelet.conf.d"\n')
    unit = node.unit_exec("kubelet.service")
    assert node.parse_flags(unit["argv"][1:]) == {
        "config": "/var/lib/kubelet/config.yaml", "container-runtime-endpoint": "unix:///run/c.sock",
        "config-dir": "/etc/kubernetes/kubelet.conf.d"}


def write_debian_etcd_service(unit_dir, default_dir, environment: str, arguments: str = "") -> None:
    """etcd.service with Debian's etcd-server lines (its member named %H, its environment file /etc/default/%p, here
    under `default_dir`), and that environment file."""
    default_dir.mkdir(exist_ok=True)
    (default_dir / "etcd").write_text(environment)
    (unit_dir / "etcd.service").write_text(textwrap.dedent(f"""\
        [Service]
        Environment=ETCD_NAME=%H
        Environment=ETCD_DATA_DIR=/var/lib/etcd/default
        EnvironmentFile=-{default_dir}/%p
        ExecStart=/usr/bin/etcd $DAEMON_ARGS{arguments}
        """))


def test_unit_exec_expands_systemd_specifiers_as_debians_etcd_service_uses_them(tmp_path, systemd_dirs, monkeypatch):
    """Debian's etcd-server unit names its environment file /etc/default/%p and its member %H: read literally, a
    stopped etcd's settings would come from no file at all."""
    _etc, lib = systemd_dirs
    default = tmp_path / "default"
    write_debian_etcd_service(lib, default, "ETCD_DATA_DIR=/srv/etcd\nETCD_TRUSTED_CA_FILE=/etc/etcd/pki/ca.crt\n",
                              " --literal=100%%")
    monkeypatch.setattr(node.socket, "gethostname", lambda: "cp1")
    monkeypatch.setattr(node, "find_processes", lambda name: [])
    unit = node.unit_exec("etcd.service")
    assert unit["files"] == [str(lib / "etcd.service"), f"{default}/etcd"]
    assert unit["environment"]["ETCD_NAME"] == "cp1" and unit["argv"] == ["/usr/bin/etcd", "--literal=100%"]
    flags, source = node.etcd_flags()
    assert flags["data-dir"] == "/srv/etcd" and flags["trusted-ca-file"] == "/etc/etcd/pki/ca.crt"
    assert source.startswith("etcd.service: ")


def test_same_named_dropin_in_etc_overrides_usr_lib(systemd_dirs):
    etc, lib = systemd_dirs
    (lib / "kubelet.service").write_text("[Service]\nExecStart=/usr/bin/kubelet\n")
    for directory, value in ((lib, "lib"), (etc, "etc")):
        (directory / "kubelet.service.d/10-kubeadm.conf").write_text(
            f"[Service]\nExecStart=\nExecStart=/usr/bin/kubelet --a={value}\n")
    assert node.unit_exec("kubelet.service")["argv"] == ["/usr/bin/kubelet", "--a=etc"]


def test_kubelet_config_dir_dropins_override_the_config_file(tmp_path, systemd_dirs, monkeypatch):
    _, lib = systemd_dirs
    config, dropins = tmp_path / "config.yaml", tmp_path / "conf.d"
    dropins.mkdir()
    config.write_text("authentication:\n  anonymous:\n    enabled: true\n  webhook:\n    enabled: true\n")
    (dropins / "50-harden.conf").write_text("authentication:\n  anonymous:\n    enabled: false\n")
    (lib / "kubelet.service").write_text(
        f"[Service]\nExecStart=/usr/bin/kubelet --config={config} --config-dir={dropins}\n")
    monkeypatch.setattr(node, "find_processes", lambda name: [])
    state = node.kubelet_state()
    assert state["config"]["authentication"] == {"anonymous": {"enabled": False}, "webhook": {"enabled": True}}
    assert state["config_sources"] == [str(config), str(dropins / "50-harden.conf")]


def test_sysctl_persisted_follows_systemd_precedence(tmp_path, monkeypatch):
    etc, lib = tmp_path / "etc", tmp_path / "lib"
    etc.mkdir()
    lib.mkdir()
    (lib / "50-default.conf").write_text("kernel.kptr_restrict = 1\nnet.ipv4.ip_forward=0\n")
    (lib / "99-shadowed.conf").write_text("kernel.dmesg_restrict = 0\n")
    (etc / "99-shadowed.conf").write_text("kernel.dmesg_restrict = 1\n")
    (etc / "90-k8s.conf").write_text("# comment\nnet/ipv4/ip_forward = 1\n")
    monkeypatch.setattr(node, "SYSCTL_DIRS", (str(etc), str(lib)))
    values = {k: v for k, (v, _) in node.sysctl_persisted().items()}
    assert values["net.ipv4.ip_forward"] == "1"
    assert values["kernel.dmesg_restrict"] == "1"
    assert values["kernel.kptr_restrict"] == "1"


def test_modprobe_install_false_disables_and_blacklist_only_blacklists(tmp_path, monkeypatch):
    (tmp_path / "kh.conf").write_text("install cramfs /bin/false\nblacklist usb-storage\n")
    monkeypatch.setattr(node, "MODPROBE_DIRS", (str(tmp_path),))
    state = controls.Node(["workers"])
    assert readers_os.read_module({"module": "cramfs"}, state).value == "disabled"
    assert readers_os.read_module({"module": "usb-storage"}, state).value == "blacklisted"
    assert readers_os.read_module({"module": "tipc"}, state).value == "loadable"


def _manifest_control(tmp_path, monkeypatch, text):
    (tmp_path / "kube-apiserver.yaml").write_text(text)
    monkeypatch.setattr(node, "MANIFEST_DIR", str(tmp_path))
    return {"id": "1.2.15", "type": "automated", "node_roles": ["control_plane"],
            "check": {"read": "flag", "component": "kube-apiserver", "flag": "profiling", "op": "eq",
                      "value": "false", "default": "true"}}


def test_flag_default_applies_when_unset(tmp_path, monkeypatch):
    control = _manifest_control(tmp_path, monkeypatch,
                                "spec:\n  containers:\n  - command: [kube-apiserver, --secure-port=6443]\n")
    result = controls.evaluate(control, controls.Node(["control_plane"]))
    assert result["status"] == "fail" and result["actual"] == "true" and "default true applies" in result["evidence"]


def test_malformed_manifest_is_an_error_with_the_line(tmp_path, monkeypatch):
    control = _manifest_control(tmp_path, monkeypatch, "spec:\n  containers: [\n")
    result = controls.evaluate(control, controls.Node(["control_plane"]))
    assert result["status"] == "error" and "not valid YAML" in result["reason"] and "line" in result["reason"]


def test_manual_control_fails_only_when_required(tmp_path, monkeypatch):
    control = _manifest_control(tmp_path, monkeypatch, "spec:\n  containers:\n  - command: [kube-apiserver]\n")
    control["type"] = "manual"
    assert controls.evaluate(control, controls.Node(["control_plane"]))["status"] == "manual"
    control["required"] = True
    assert controls.evaluate(control, controls.Node(["control_plane"]))["status"] == "fail"


def test_file_modes_report_offenders(tmp_path):
    (tmp_path / "a.key").write_text("k")
    (tmp_path / "a.key").chmod(0o644)
    (tmp_path / "b.key").write_text("k")
    (tmp_path / "b.key").chmod(0o600)
    observation = readers_os.read_file({"path": str(tmp_path / "*.key"), "mode_max": "600"}, controls.Node([]))
    assert len(observation.value) == 1 and observation.value[0].startswith(str(tmp_path / "a.key") + " 0644")


def test_controls_apply_only_to_their_node_roles():
    only_etcd = {"id": "x", "node_roles": ["etcd"], "check": {"read": "none"}}
    assert controls.evaluate_all([only_etcd], ["workers", "k8s_cluster"]) == []
    assert [r["status"] for r in controls.evaluate_all([only_etcd], ["etcd"])] == ["manual"]


def test_container_fact_makes_declared_controls_not_applicable(monkeypatch):
    monkeypatch.setattr(node, "in_container", lambda: True)
    control = {"id": "t", "check": {"read": "service", "unit": "auditd.service", "container": "no audit netlink"}}
    result = controls.evaluate(control, controls.Node([]))
    assert result["status"] == "not_applicable" and "no audit netlink" in result["reason"]


class KubeletAt(controls.Node):
    """A node whose kubelet runs `version` with `config`: what check_at and the kubelet reader see."""

    def __init__(self, version, config):
        super().__init__(["workers"])
        self.__dict__["kubernetes_version"] = version
        self.__dict__["kubelet"] = {"flags": {"config": "/var/lib/kubelet/config.yaml"}, "flag_source": "test",
                                    "config": config, "config_path": "/var/lib/kubelet/config.yaml",
                                    "config_sources": ["/var/lib/kubelet/config.yaml"]}


def test_a_check_follows_the_meaning_the_nodes_release_gives_a_setting():
    """CIS 4.2.8: eventRecordQPS 0 meant the default (50) before 1.37 and means unlimited from 1.37 on."""
    from kubeharden import catalogue

    control = next(c for c in catalogue.load() if c["id"] == "4.2.8")
    before = controls.evaluate(control, KubeletAt((1, 36), {"eventRecordQPS": 0}))
    assert before["status"] == "pass" and "Kubernetes 1.37" not in before["expected"]
    after = controls.evaluate(control, KubeletAt((1, 37), {"eventRecordQPS": 0}))
    assert after["status"] == "manual" and after["expected"] == "gt 0 (the rule from Kubernetes 1.37 on)"
    assert controls.evaluate(control, KubeletAt((1, 37), {"eventRecordQPS": 5}))["status"] == "pass"
    assert controls.evaluate(control, KubeletAt(None, {"eventRecordQPS": 0}))["status"] == "pass"  # no kubelet
    assert controls.check_at(control["check"], (1, 38))[1] == "1.37"


def test_node_minor_parses_what_kubelet_and_kubeadm_print():
    assert node.parse_minor("Kubernetes v1.37.2\n") == (1, 37) == node.parse_minor("v1.37.2")
    assert node.parse_minor("1.35") == (1, 35) and node.parse_minor("") is None


def test_etcd_kind_tells_a_kubeadm_etcd_from_a_host_service():
    stacked, host = controls.Node(["control_plane", "etcd"]), controls.Node(["etcd"])
    worker = controls.Node(["workers"])
    stacked.etcd = ({"data-dir": "/var/lib/etcd"}, "manifest /etc/kubernetes/manifests/etcd.yaml")
    host.etcd = ({"data-dir": "/var/lib/etcd"}, "etcd.service: /etc/systemd/system/etcd.service")
    assert (stacked.etcd_kind, host.etcd_kind, worker.etcd_kind) == ("static_pod", "host", "none")


def test_an_exception_is_reported_with_its_reason_and_never_read(monkeypatch):
    def never(check, state):
        raise AssertionError("an exception's check is not read")

    monkeypatch.setitem(controls.READERS, "sysctl", never)
    control = {"id": "DEB12-3.3.1", "exception": "Kubernetes forwards pod traffic",
               "check": {"read": "sysctl", "key": "net.ipv4.ip_forward", "op": "eq", "value": "0"}}
    result = controls.evaluate(control, controls.Node([]))
    assert result["status"] == "exception" and result["reason"] == "exception: Kubernetes forwards pod traffic"


def config_control(check: dict) -> dict:
    return {"id": "T-1", "title": "t", "severity": "low", "type": "automated", "check": {"read": "config_key", **check}}


def test_a_config_key_is_read_as_its_program_reads_it_the_last_line_wins(tmp_path):
    """login.defs and pwquality take a key's last uncommented line, as the node_os role writes them: a first-match
    reading would pass PASS_MAX_DAYS on the 90 a later line overrides."""
    defs = tmp_path / "login.defs"
    defs.write_text("#PASS_MAX_DAYS 30\nPASS_MAX_DAYS\t90\nUMASK 022\nPASS_MAX_DAYS 99999\n")
    check = {"path": str(defs), "style": "space", "key": "PASS_MAX_DAYS", "op": "lte", "value": 365}
    result = controls.evaluate(config_control(check), controls.Node([]))
    assert (result["status"], result["actual"]) == ("fail", "99999"), result
    assert result["evidence"] == f"{defs}: PASS_MAX_DAYS 99999"
    defs.write_text("PASS_MAX_DAYS 99999\n# PASS_MAX_DAYS 99999  # disabled by kubeharden\nPASS_MAX_DAYS 365\n")
    assert controls.evaluate(config_control(check), controls.Node([]))["status"] == "pass"


def test_config_files_in_a_directory_override_in_order_and_flags_count_as_set(tmp_path):
    (tmp_path / "pwquality.conf.d").mkdir()
    (tmp_path / "pwquality.conf.d" / "10-site.conf").write_text("minlen = 8\n")
    (tmp_path / "pwquality.conf.d" / "20-kubeharden.conf").write_text("minlen=14\n")
    check = {"path": str(tmp_path / "pwquality.conf.d" / "*.conf"), "key": "minlen", "op": "gte", "value": 14}
    assert controls.evaluate(config_control(check), controls.Node([]))["status"] == "pass"
    faillock = tmp_path / "faillock.conf"
    faillock.write_text("# even_deny_root\ndeny = 3\n")
    flags = {"path": str(faillock), "keys": ["even_deny_root", "root_unlock_time"], "op": "set"}
    missing = controls.evaluate(config_control(flags), controls.Node([]))
    assert missing["status"] == "fail"
    assert missing["evidence"] == f"even_deny_root or root_unlock_time not set in {faillock}"
    faillock.write_text("deny = 3\neven_deny_root\n")
    found = controls.evaluate(config_control(flags), controls.Node([]))
    assert (found["status"], found["evidence"]) == ("pass", f"{faillock}: even_deny_root (flag)"), found
    gone = controls.evaluate(config_control({**flags, "path": str(tmp_path / "nothing.conf")}), controls.Node([]))
    assert gone["status"] == "fail" and gone["evidence"].endswith("nothing.conf does not exist")
