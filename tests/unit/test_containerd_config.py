"""kubeharden_containerd_config and the containerd readers, judged by the real containerd the lab builds: every
candidate file goes through `containerd config dump`, as on a node."""

from __future__ import annotations

import os

import pytest
from ansible.module_utils import kubeharden_containerd as containerd
from ansible.module_utils import kubeharden_controls as controls
from ansible.module_utils import kubeharden_node as node
from ansible.module_utils import kubeharden_readers_kubernetes as readers

from kubeharden.lab import go_tool, runtime
from tests.conftest import run_module

LAB_CONFIG = runtime.containerd_config("registry.k8s.io/pause:3.10.2")
RUNTIME = "io.containerd.cri.v1.runtime"
HARDENED = {"plugins": {RUNTIME: {"enable_unprivileged_ports": False, "enable_unprivileged_icmp": False},
                        "io.containerd.cri.v1.images": {"registry": {"config_path": "/etc/containerd/certs.d"}}}}


@pytest.fixture(scope="module")
def binary() -> str:
    """The lab's cached containerd build, or a skip naming the command that builds it (a failure in CI)."""
    tool = runtime.containerd_tool(runtime.CONTAINERD_RELEASES[runtime.DEFAULT_CONTAINERD])
    if not go_tool.cached(tool):
        message = "no containerd build is cached: run `kubeharden lab build`"
        if os.environ.get("KUBEHARDEN_REQUIRE_LAB") == "1":
            pytest.fail(f"KUBEHARDEN_REQUIRE_LAB=1 but {message}")
        pytest.skip(message)
    return str(tool.directory / "bin" / "containerd")


def configure(tmp_path, text: str, binary: str, settings: dict = HARDENED, check: bool = False) -> dict:
    path = tmp_path / "config.toml"
    if text is not None:
        path.write_text(text)
    return run_module("kubeharden_containerd_config", {"path": str(path), "settings": settings, "containerd": binary,
                                                       "backup_dir": str(tmp_path / "backups")}, check=check, diff=True)


def test_settings_are_merged_kept_by_containerd_and_a_second_run_changes_nothing(tmp_path, binary):
    planned = configure(tmp_path, LAB_CONFIG, binary, check=True)
    assert planned["changed"] and (tmp_path / "config.toml").read_text() == LAB_CONFIG
    done = configure(tmp_path, LAB_CONFIG, binary)
    assert done["changed"] and not done["failed"] and os.path.exists(done["backup_file"])
    config, unknown = containerd.effective(str(tmp_path / "config.toml"), binary)  # containerd's own reading
    cri = config["plugins"][RUNTIME]
    assert (cri["enable_unprivileged_ports"], cri["enable_unprivileged_icmp"]) == (False, False) and not unknown
    # the operator's settings are kept: the lab's systemd cgroups, pinned sandbox image and OOM restriction
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is True and cri["restrict_oom_score_adj"]
    assert config["plugins"]["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"].endswith("pause:3.10.2")
    assert f"plugins.{RUNTIME!r}.enable_unprivileged_ports" in done["managed"]
    written = (tmp_path / "config.toml").read_text()
    assert "  # Lab only: this host has no CAP_SYS_RESOURCE" in written  # the operator's comments stay
    assert "  sandbox = 'registry.k8s.io/pause:3.10.2'" in written  # and lines kubeharden does not set, as written
    assert not configure(tmp_path, None, binary)["changed"]


def test_a_managed_setting_changed_by_hand_is_set_back(tmp_path, binary):
    configure(tmp_path, LAB_CONFIG, binary)
    path = tmp_path / "config.toml"
    path.write_text(path.read_text().replace("enable_unprivileged_ports = false", "enable_unprivileged_ports = true"))
    repaired = configure(tmp_path, None, binary)
    assert repaired["changed"] and "enable_unprivileged_ports = false" in path.read_text()


RUNTIME_LINE = "  restrict_oom_score_adj = true\n"


@pytest.mark.parametrize(("extra", "message"), [
    ("  enable_unprivileged_ports = true\n",
     "plugins.'io.containerd.cri.v1.runtime'.enable_unprivileged_ports = true (kubeharden sets false)"),
    ("[debug]\n  address = '0.0.0.0:1338'\n",
     "io.containerd.server.v1.debug address '0.0.0.0:1338' is not a unix socket"),
    ("[metrics]\n  address = '0.0.0.0:1338'\n", "io.containerd.server.v1.metrics address '0.0.0.0:1338' is not on "
                                                 "loopback"),
    ("[plugins.'io.containerd.grpc.v1.cri']\n  stream_server_address = '0.0.0.0'\n",
     "stream_server_address '0.0.0.0' is not on loopback"),
    ("[plugins.'io.containerd.cri.v1.images'.registry.mirrors.'docker.io']\n  endpoint = ['http://mirror']\n",
     "registry.mirrors is set"),
    ("  max_container_log_line_size = 'big'\n",
     "containerd refuses"),
    ("[plugins.x\n", "is not valid TOML"),
])
def test_what_breaks_a_rule_or_containerd_is_named_and_nothing_is_written(tmp_path, binary, extra, message):
    # a key of the runtime's section goes into the lab's own section (TOML allows a table once)
    text = LAB_CONFIG.replace(RUNTIME_LINE, RUNTIME_LINE + extra) if extra.startswith("  ") else LAB_CONFIG + extra
    result = configure(tmp_path, text, binary)
    assert result["failed"] and message in result["msg"], result["msg"]
    assert (tmp_path / "config.toml").read_text() == text and not (tmp_path / "backups").exists()


def test_an_unknown_setting_is_refused_by_containerd_s_own_reading(tmp_path, binary):
    settings = {"plugins": {RUNTIME: {"enable_unprivileged_portz": False}}}
    result = configure(tmp_path, LAB_CONFIG, binary, settings=settings)
    assert result["failed"] and f"{RUNTIME}: enable_unprivileged_portz" in result["msg"], result["msg"]
    assert (tmp_path / "config.toml").read_text() == LAB_CONFIG


def test_a_containerd_1_configuration_is_left_for_migration(tmp_path, binary):
    text = "version = 2\n[plugins.'io.containerd.grpc.v1.cri']\n  sandbox_image = 'registry.k8s.io/pause:3.8'\n"
    result = configure(tmp_path, text, binary)
    assert result["failed"] and "containerd config migrate" in result["msg"]


def test_registry_hosts_without_tls_verification_or_over_http_are_named(tmp_path, binary):
    certs = tmp_path / "certs.d"
    (certs / "docker.io").mkdir(parents=True)
    (certs / "docker.io" / "hosts.toml").write_text(
        'server = "https://registry-1.docker.io"\n[host."https://mirror.example"]\n  skip_verify = true\n'
        '[host."http://plain.example"]\n  capabilities = ["pull"]\n')
    (certs / "quay.io").mkdir()
    ca = tmp_path / "m.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    (certs / "quay.io" / "hosts.toml").write_text(f'server = "https://quay.io"\n[host."https://m.example"]\n'
                                                   f'  ca = "{ca}"\n[host."https://n.example"]\n'
                                                   f'  client = [["{ca}", "{tmp_path}/n.key"]]\n')
    settings = {"plugins": {"io.containerd.cri.v1.images": {"registry": {"config_path": str(certs)}}}}
    result = configure(tmp_path, LAB_CONFIG, binary, settings=settings)
    assert result["failed"] and (tmp_path / "config.toml").read_text() == LAB_CONFIG
    assert result["problems"] == [f"{certs}/docker.io/hosts.toml: host https://mirror.example sets skip_verify = true "
                                  "(TLS not verified)", f"{certs}/docker.io/hosts.toml: host http://plain.example is "
                                  "plain HTTP", f"{certs}/quay.io/hosts.toml: host https://n.example names client "
                                  f"{tmp_path}/n.key, which does not exist (every pull would fail TLS)"]


def test_toml_text_is_read_back_identically_by_containerd(tmp_path, binary):
    document = {"version": 3, "oom_score": -999, "plugins": {
        RUNTIME: {"cdi_spec_dirs": ["/etc/cdi", "/var/run/cdi"], "containerd": {"runtimes": {"runc": {
            "runtime_type": "io.containerd.runc.v2", "options": {"SystemdCgroup": True, "BinaryName": 'a"b'}}}}}}}
    path = tmp_path / "written.toml"
    path.write_text(containerd.toml_text(document, "# header\n"))
    assert containerd.parse(path.read_text(), str(path)) == document
    config, _unknown = containerd.effective(str(path), binary)
    assert config["plugins"][RUNTIME]["containerd"]["runtimes"]["runc"]["options"]["BinaryName"] == 'a"b'


def test_a_setting_whose_line_cannot_be_found_rewrites_the_whole_file_correctly():
    text = "version = 3\n[plugins.'io.containerd.cri.v1.runtime']\n  # theirs\n  cni.conf_dir = '/etc/cni/net.d'\n"
    current = containerd.parse(text, "t")
    settings = {"plugins": {RUNTIME: {"cni": {"conf_dir": "/etc/cni/kh"}, "enable_unprivileged_ports": False}}}
    written = containerd.written_text(text, current, settings, "# header\n")
    assert containerd.parse(written, "w") == containerd.merged(current, settings)
    assert "# theirs" not in written  # the dotted key has no line of its own to set: written anew
    simple = containerd.written_text(text, current, {"plugins": {RUNTIME: {"enable_unprivileged_ports": False}}},
                                     "# header\n")
    assert "  # theirs" in simple and simple.startswith("# header\nversion = 3\n")


def test_the_audit_judges_containerds_own_reading_of_the_file(tmp_path, binary, monkeypatch):
    """The readers behind KH-CRI: containerd's defaults count (the file need not name a setting), migrated
    version-3 sections are read under their version-4 names, and a file containerd refuses is an error."""
    path = tmp_path / "config.toml"
    path.write_text(LAB_CONFIG + "[debug]\n  address = '0.0.0.0:1338'\n")
    monkeypatch.setattr(containerd, "CONFIG", str(path))
    monkeypatch.setattr(containerd, "containerd_binary", lambda: binary)
    state = controls.Node(["workers"])
    ports = readers.read_containerd({"read": "containerd", "key": ["plugins", RUNTIME, "enable_unprivileged_ports"]},
                                     state)
    assert ports.value is True and "containerd config dump" in ports.evidence  # 2.x's default, not in the file
    endpoints = readers.read_containerd_rules({"read": "containerd_rules", "aspect": "endpoints"}, state)
    assert endpoints.value == ["io.containerd.server.v1.debug address '0.0.0.0:1338' is not a unix socket (the "
                               "debug API has no authentication)"]
    path.write_text("version = 3\n[plugins.'io.containerd.cri.v1.runtime']\n  enable_cdi = 'maybe'\n")
    with pytest.raises(node.ReadError, match="containerd refuses"):
        readers.read_containerd({"read": "containerd", "key": ["version"]}, controls.Node(["workers"]))
    monkeypatch.setattr(containerd, "containerd_binary", lambda: None)
    with pytest.raises(node.NotApplicable, match="containerd is not installed"):
        readers.read_containerd({"read": "containerd", "key": ["version"]}, controls.Node(["workers"]))
    # containerd 1.x dumps version 2 (its CRI settings elsewhere): an error, never a silent pass on a missing key.
    monkeypatch.setattr(containerd, "effective", lambda path, binary=None: (
        {"version": 2, "plugins": {"io.containerd.grpc.v1.cri": {"enable_unprivileged_ports": False}}}, []))
    with pytest.raises(node.ReadError, match=r"containerd 1\.x, out of upstream support"):
        readers.read_containerd({"read": "containerd", "key": ["plugins", RUNTIME, "enable_unprivileged_ports"]},
                                controls.Node(["workers"]))
