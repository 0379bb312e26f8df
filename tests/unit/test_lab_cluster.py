"""The whole-cluster lab's own logic: the runtime and addon builds, their images, manifests and configuration, the
node's CNI configuration writer and the connectivity table. The lab tests prove them on real nodes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import tomllib

import pytest
import yaml

from kubeharden.lab import addons, cluster, component_images, connectivity, go_tool, kubernetes, runtime
from kubeharden.lab.errors import LabError
from kubeharden.lab.image import NODE_FILES
from kubeharden.lab.lab import LabState, Topology
from tests.conftest import ROOT

FLANNEL_CNI = NODE_FILES / "usr/local/lib/kubeharden-lab/flannel-cni"


@pytest.fixture
def release(tmp_path, monkeypatch):
    """A release whose manifest names kubeadm's CoreDNS and the agnhost version, as a build records them."""
    monkeypatch.setattr(kubernetes, "cache_dir", lambda: tmp_path)
    found = kubernetes.Release("v1.37.2", "v3.6.16")
    found.directory.mkdir(parents=True)
    (found.directory / "manifest.json").write_text(json.dumps({"coredns_version": "v1.14.6",
                                                               "agnhost_version": "2.66.1"}))
    return found


def test_unknown_runtime_or_proxy_mode_is_refused_naming_the_option():
    with pytest.raises(LabError, match=r"--containerd '1.7' is not a containerd the lab builds: choose one of 2.3"):
        Topology(containerd="1.7").validate()
    with pytest.raises(LabError, match=r"--kube-proxy-mode 'ipvs' is not one the lab runs: choose one of iptables"):
        Topology(kube_proxy_mode="ipvs").validate()
    with pytest.raises(LabError, match=r"--cni 'calico' is not a pod network the lab runs: choose one of flannel"):
        Topology(cni="calico").validate()


def test_a_tool_that_cannot_be_built_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setattr(kubernetes, "cache_dir", lambda: tmp_path)
    monkeypatch.setattr(go_tool.shutil, "which", lambda name: None)
    with pytest.raises(LabError, match=r"building runc v1.5.3 needs Go: install it"):
        go_tool.ensure(runtime.RUNC, log=lambda line: None)
    assert not go_tool.cached(runtime.RUNC) and not list((tmp_path / "runc").glob("v1.5.3*"))


def test_a_lab_from_before_the_whole_cluster_is_told_apart(tmp_path):
    """Its nodes run Debian's containerd and no pod network: loading it says to take it down, never reuses it."""
    path = tmp_path / "old" / ".lab" / "state.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"name": "old", "topology": {
        "control_planes": 1, "workers": 1, "etcd": "static", "debian": "12", "cert_days": 365,
        "kubernetes": "v1.37.2", "kubeadm": True}, "network": "n", "subnet": "172.30.0.0/16",
        "image": "kubeharden-node:debian12-0", "nodes": []}))
    with pytest.raises(LabError, match=r"older kubeharden \(Debian's containerd 1.6.*`kubeharden lab down --name old`"):
        LabState.load(path)


def test_containerd_configuration_is_version_3_with_systemd_cgroups_and_the_pinned_pause_image():
    config = tomllib.loads(runtime.containerd_config("registry.k8s.io/pause:3.10.2"))
    assert config["version"] == 3
    plugins = config["plugins"]
    assert plugins["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"] == "registry.k8s.io/pause:3.10.2"
    options = plugins["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]["runc"]["options"]
    assert options == {"SystemdCgroup": True}


def test_go_tool_keys_follow_every_part_of_the_recipe():
    base = runtime.containerd_tool("v2.3.7")
    assert base.key == runtime.containerd_tool("v2.3.7").key
    assert base.key != runtime.containerd_tool("v2.4.2").key
    replaced = go_tool.GoTool(base.name, base.module, base.version, base.builds, replace=(("x/y", "v1.0.0"),))
    assert replaced.key != base.key
    assert base.binary_names == ["containerd", "ctr", "containerd-shim-runc-v2"]
    assert runtime.RUNC.builds[0].cgo and "seccomp" in runtime.RUNC.builds[0].tags
    assert "bridge" in runtime.CNI_PLUGINS.binary_names and "portmap" in runtime.CNI_PLUGINS.binary_names


def test_a_go_tool_entry_is_used_only_while_complete_and_unaltered(tmp_path, monkeypatch):
    monkeypatch.setattr(kubernetes, "cache_dir", lambda: tmp_path)
    tool = runtime.containerd_tool("v2.3.7")
    (tool.directory / "bin").mkdir(parents=True)
    for name in tool.binary_names:
        tool.binary(name).write_bytes(b"\x7fELF " + name.encode())
    (tool.directory / "containerd.service").write_text("[Unit]\n")
    assert not go_tool.cached(tool)  # no manifest: the build did not finish
    (tool.directory / "manifest.json").write_text(json.dumps({"key": tool.key,
                                                              "files": go_tool._checksums(tool.directory)}))
    assert go_tool.cached(tool)
    tool.binary("ctr").write_bytes(b"changed")
    assert not go_tool.cached(tool)


def test_addon_images_carry_kubeadms_names_and_netfilter_tools_where_they_are_run(release):
    images = {image.reference: image for image in addons.images(release)}
    assert set(images) == {"registry.k8s.io/kube-proxy:v1.37.2", "registry.k8s.io/coredns/coredns:v1.14.6",
                           "registry.k8s.io/e2e-test-images/agnhost:2.66.1",
                           f"ghcr.io/flannel-io/flannel:{addons.FLANNEL.version}",
                           f"docker.io/cloudnativelabs/kube-router:{addons.KUBE_ROUTER.version}"}
    assert {ref for ref, image in images.items() if image.base == "netfilter"} == {
        "registry.k8s.io/kube-proxy:v1.37.2", f"ghcr.io/flannel-io/flannel:{addons.FLANNEL.version}",
        f"docker.io/cloudnativelabs/kube-router:{addons.KUBE_ROUTER.version}"}
    assert images["registry.k8s.io/coredns/coredns:v1.14.6"].user == "65532:65532"


def test_an_archive_stores_a_shared_base_layer_once(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("kube-proxy", "flanneld"):
        (bin_dir / name).write_bytes(b"\x7fELF" + name.encode())
    base = tmp_path / "base.tar"
    with tarfile.open(base, "w") as layer:
        info = tarfile.TarInfo("usr/sbin/nft")
        info.size = 3
        layer.addfile(info, io.BytesIO(b"nft"))
    images = [component_images.ComponentImage("kube-proxy", "v1.37.2", ("kube-proxy",), base="netfilter"),
              component_images.ComponentImage("flannel", "v0.28.10", ("flanneld",), base="netfilter",
                                              paths=(("flanneld", "opt/bin/flanneld"),))]
    component_images.write_archive(images, bin_dir, tmp_path / "a.tar", bases={"netfilter": base.read_bytes()})
    with tarfile.open(tmp_path / "a.tar") as archive:
        manifest = json.load(archive.extractfile("manifest.json"))
        assert [len(entry["Layers"]) for entry in manifest] == [2, 2]
        assert manifest[0]["Layers"][0] == manifest[1]["Layers"][0]
        assert len([n for n in archive.getnames() if n.endswith("layer.tar")]) == 3
        with tarfile.open(fileobj=archive.extractfile(manifest[1]["Layers"][1])) as layer:
            assert "opt/bin/flanneld" in layer.getnames()


def test_coredns_binary_carries_the_capability_upstreams_image_gives_it(release, tmp_path):
    """CoreDNS runs as nonroot and binds port 53 through its file capability (`setcap cap_net_bind_service=+ep`),
    which a containerd without unprivileged ports (the container_runtime role) leaves it as its only way."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "coredns").write_bytes(b"\x7fELF")
    coredns = next(image for image in addons.images(release) if image.name == "coredns/coredns")
    component_images.write_archive([coredns], bin_dir, tmp_path / "a.tar")
    with tarfile.open(tmp_path / "a.tar") as archive:
        layer_name = json.load(archive.extractfile("manifest.json"))[0]["Layers"][0]
        with tarfile.open(fileobj=archive.extractfile(layer_name)) as layer:
            record = layer.getmember("coredns").pax_headers["SCHILY.xattr.security.capability"]
    # the bytes `setcap cap_net_bind_service=+ep` writes (revision 2, effective, permitted bit 10)
    assert record.encode("utf-8", "surrogateescape").hex() == "0100000200040000000000000000000000000000"


def test_network_addons_run_on_every_node_with_the_pod_subnet(release):
    documents = addons.network_manifests(release, cluster.POD_SUBNET)
    daemonsets = {d["metadata"]["name"]: d for d in documents if d["kind"] == "DaemonSet"}
    assert set(daemonsets) == {"flannel", "kube-router"}
    for daemonset in daemonsets.values():
        spec = daemonset["spec"]["template"]["spec"]
        assert daemonset["metadata"]["namespace"] == "kube-system" and spec["hostNetwork"] is True
        assert {"operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]  # control planes too
    config = next(d for d in documents if d["kind"] == "ConfigMap")
    assert json.loads(config["data"]["net-conf.json"]) == {"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}
    router = daemonsets["kube-router"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--run-router=false" in router and "--run-firewall=true" in router and "--run-service-proxy=false" in router


def test_probe_pods_meet_the_restricted_pod_security_standard(release):
    documents = addons.probe_manifests(release)
    pods = [d["spec"]["template"]["spec"] for d in documents if d["kind"] == "DaemonSet"]
    assert len(pods) == 2
    for pod in pods:
        container = pod["containers"][0]
        assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["seccompProfile"] == {
            "type": "RuntimeDefault"}
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    node_port = next(d for d in documents if d["kind"] == "Service" and d["spec"].get("type") == "NodePort")
    assert node_port["spec"]["ports"][0]["nodePort"] == addons.PROBE_NODE_PORT


def test_kubeadm_configuration_carries_the_lab_facts_for_kube_proxy_and_the_resolver():
    node = cluster.ClusterNode("cp1", "control-plane", "172.30.0.11", "kh-x-cp1", 0)
    release = kubernetes.Release("v1.37.2", "v3.6.16")
    text = cluster.init_configuration(node, release, "172.30.0.11:6443", 365, cluster.Secrets.create(),
                                      proxy_mode="nftables")
    kinds = {doc["kind"]: doc for doc in yaml.safe_load_all(text)}
    assert kinds["KubeProxyConfiguration"]["conntrack"] == {"maxPerCore": 0}
    assert kinds["KubeProxyConfiguration"]["mode"] == "nftables"
    assert "skipPhases" not in kinds["InitConfiguration"] or kinds["InitConfiguration"]["skipPhases"] == []
    assert kinds["KubeletConfiguration"]["resolvConf"] == "/etc/kubeharden-lab/resolv.conf"
    assert "nameserver 172.30.0.11" in cluster.lab_resolv_conf(node)


def run_flannel_cni(tmp_path, subnet_env: str) -> subprocess.CompletedProcess:
    """The node's CNI writer with its two paths under tmp_path."""
    script = FLANNEL_CNI.read_text().replace('"/run/flannel/subnet.env"', repr(str(tmp_path / "subnet.env"))) \
        .replace('"/etc/cni/net.d/10-flannel.conflist"', repr(str(tmp_path / "net.d/10-flannel.conflist")))
    (tmp_path / "subnet.env").write_text(subnet_env)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)


def test_the_node_writes_what_flannels_plugin_hands_the_bridge_plugin(tmp_path):
    done = run_flannel_cni(tmp_path, "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\n"
                                     "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")
    assert done.returncode == 0, done.stderr
    config = json.loads((tmp_path / "net.d/10-flannel.conflist").read_text())
    bridge = config["plugins"][0]
    assert bridge["type"] == "bridge" and bridge["mtu"] == 1450 and bridge["ipMasq"] is False
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.244.1.0/24"}]]
    assert bridge["ipam"]["routes"] == [{"dst": "10.244.0.0/16"}]
    assert not (tmp_path / "net.d/10-flannel.conflist.tmp").exists()
    again = run_flannel_cni(tmp_path, "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=1450\n")
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "net.d/10-flannel.conflist").read_text())["plugins"][0]["ipam"]["ranges"] == [
        [{"subnet": "10.244.7.0/24"}]]  # a node that joins again with another subnet follows it


def test_a_subnet_file_without_the_subnet_is_refused_and_nothing_written(tmp_path):
    done = run_flannel_cni(tmp_path, "FLANNEL_NETWORK=10.244.0.0/16\n")
    assert done.returncode != 0 and "cannot be read" in done.stderr
    assert not (tmp_path / "net.d").exists()


def test_the_matrix_names_each_failing_cell_and_prints_every_row():
    matrix = connectivity.Matrix(["cp1", "w1"], {row: {"cp1": connectivity.OK, "w1": connectivity.OK}
                                                 for row in connectivity.ROWS})
    matrix.cells["pod-pod-other-node"]["w1"] = "TIMEOUT"
    matrix.cells["nodeport-from-host"]["cp1"] = connectivity.NOT_APPLICABLE
    assert matrix.failures() == {("pod-pod-other-node", "w1"): "TIMEOUT"}
    table = matrix.table()
    assert all(text in table for text in connectivity.ROWS.values()) and "TIMEOUT" in table


def test_foreign_rules_are_grouped_by_table_and_chain_without_kubehardens(monkeypatch):
    listing = """table ip filter {
\tchain KUBE-FORWARD {
\t\tct state invalid counter drop
\t\tmeta mark & 0x00004000 == 0x00004000 counter accept
\t}
}
table inet kubeharden {
\tchain input {
\t\ttype filter hook input priority filter; policy drop;
\t}
}
"""
    monkeypatch.setattr(connectivity.docker, "exec_", lambda *args, **kwargs: subprocess.CompletedProcess(
        args, 0, listing, ""))
    assert connectivity.foreign_rules("kh-x-w1") == {"table ip filter": {"KUBE-FORWARD": [
        "ct state invalid counter drop", "meta mark & 0x00004000 == 0x00004000 counter accept"]}}


def test_the_lab_inventory_uses_the_firewall_preset_of_its_cni():
    from kubeharden.lab.lab import kubernetes_group_vars

    facts = yaml.safe_load(kubernetes_group_vars(kubernetes.Release("v1.37.2", "v3.6.16")))
    assert facts["firewall_cni_presets"] == ["vxlan"] and facts["firewall_pod_cidrs"] == [cluster.POD_SUBNET]
    assert facts["control_plane_kubeadm_skip_phases"] == []
    firewall = yaml.safe_load((ROOT / "roles/firewall/vars/main.yml").read_text())
    assert {"proto": "udp", "ports": ["4789", "8472"]} in firewall["firewall_cni_ports"]["vxlan"]


def test_molecule_scenarios_get_the_labs_own_cluster_facts():
    """Molecule's inventory is its own, not the lab's: the facts site.yml needs on the lab's cluster are there too."""
    from kubeharden.lab.lab import kubernetes_group_vars

    facts = yaml.safe_load(kubernetes_group_vars(kubernetes.Release("v1.37.2", "v3.6.16")))
    molecule = yaml.safe_load((ROOT / ".config/molecule/config.yml").read_text())["provisioner"]["inventory"][
        "group_vars"]["all"]
    for key in ("firewall_cni_presets", "firewall_pod_cidrs", "cluster_policies_namespaces"):
        assert molecule[key] == facts[key], key
