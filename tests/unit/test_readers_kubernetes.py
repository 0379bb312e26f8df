"""The readers of Kubernetes' components (module_utils/kubeharden_readers_kubernetes.py), each on input shaped as
the node gives it: static pod manifests, the apiserver's configuration files, kube-proxy's settings, the cluster's
objects. containerd's readers are judged with the lab's real containerd in test_containerd_config.py."""

from __future__ import annotations

import pytest
from ansible.module_utils import kubeharden_controls as controls
from ansible.module_utils import kubeharden_node as node
from ansible.module_utils import kubeharden_readers_kubernetes as readers


def apiserver(tmp_path, monkeypatch, *flags: str) -> controls.Node:
    """A control-plane node whose kube-apiserver manifest carries `flags`."""
    command = ", ".join(["kube-apiserver", *flags])
    (tmp_path / "kube-apiserver.yaml").write_text(f"spec:\n  containers:\n  - command: [{command}]\n")
    monkeypatch.setattr(node, "MANIFEST_DIR", str(tmp_path))
    return controls.Node(["control_plane"])


@pytest.mark.parametrize(("flags", "auth_config", "expected"), [
    (["--secure-port=6443"], None, "true"),
    (["--anonymous-auth=false"], None, "false"),
    (["--authentication-config={auth}"],
     "anonymous:\n  enabled: true\n  conditions: [{path: /livez}, {path: /readyz}, {path: /healthz}]\n", "health-only"),
    (["--authentication-config={auth}"], "anonymous:\n  enabled: true\n  conditions: [{path: /api}]\n", "true"),
    (["--authentication-config={auth}"], "anonymous:\n  enabled: false\n", "false"),
    (["--authentication-config={auth}"], "jwt: []\n", "true"),
])
def test_anonymous_auth_understands_authentication_configuration(tmp_path, monkeypatch, flags, auth_config,
                                                                 expected):
    auth = tmp_path / "auth.yaml"
    if auth_config is not None:
        auth.write_text("apiVersion: apiserver.config.k8s.io/v1beta1\nkind: AuthenticationConfiguration\n"
                        + auth_config)
    command = ", ".join(["kube-apiserver", *(f.format(auth=auth) for f in flags)])
    (tmp_path / "kube-apiserver.yaml").write_text(f"spec:\n  containers:\n  - command: [{command}]\n")
    monkeypatch.setattr(node, "MANIFEST_DIR", str(tmp_path))
    observation = readers.read_anonymous_auth({}, controls.Node(["control_plane"]))
    assert observation.value == expected


def test_encryption_provider_is_the_first_provider_for_secrets(tmp_path, monkeypatch):
    config = tmp_path / "encryption.yaml"
    config.write_text("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n"
                      "- resources: [configmaps]\n  providers: [{identity: {}}]\n"
                      "- resources: [secrets]\n  providers: [{secretbox: {keys: [{name: k1, secret: c2VjcmV0}]}},"
                      " {identity: {}}]\n")
    state = apiserver(tmp_path, monkeypatch, f"--encryption-provider-config={config}")
    observed = readers.read_encryption_provider({}, state)
    assert observed.value == "secretbox" and observed.evidence.endswith("first provider for secrets is secretbox")
    missing = apiserver(tmp_path, monkeypatch, f"--encryption-provider-config={tmp_path / 'gone.yaml'}")
    with pytest.raises(node.ReadError, match="which does not exist"):
        readers.read_encryption_provider({}, missing)
    assert readers.read_encryption_provider({}, apiserver(tmp_path, monkeypatch)).value is None


def test_same_file_compares_content_not_only_paths(tmp_path, monkeypatch):
    (tmp_path / "ca.crt").write_text("CLUSTER CA")
    (tmp_path / "etcd-ca.crt").write_text("ETCD CA")
    state = controls.Node(["control_plane"])
    state._manifest_flags = {"etcd": ({"trusted-ca-file": str(tmp_path / "etcd-ca.crt")}, "manifest etcd.yaml"),
                             "kube-apiserver": ({"client-ca-file": str(tmp_path / "ca.crt")}, "manifest")}
    state.__dict__["etcd"] = state._manifest_flags["etcd"]
    check = {"component": "etcd", "flag": "trusted-ca-file", "other_component": "kube-apiserver",
             "other_flag": "client-ca-file"}
    assert readers.read_same_file(check, state).value == "different"
    (tmp_path / "etcd-ca.crt").write_text("CLUSTER CA")  # a copy of the cluster CA is the same CA
    assert readers.read_same_file(check, state).value == "same"


def test_kube_proxy_reads_its_configuration_file_before_its_flags():
    state = controls.Node(["workers"])
    state.__dict__["kube_proxy"] = {"pid": 42, "config": {"metricsBindAddress": "127.0.0.1:10249", "mode": ""},
                                    "config_path": "/var/lib/kube-proxy/config.conf",
                                    "flags": {"metrics-bind-address": "0.0.0.0:10249"}, "root": "/proc/42/root"}
    metrics = readers.read_kube_proxy({"key": "metricsBindAddress", "flag": "metrics-bind-address"}, state)
    assert metrics.value == "127.0.0.1:10249" and "config.conf of kube-proxy (pid 42)" in metrics.evidence
    assert readers.read_kube_proxy({"key": "mode"}, state).value is None  # "" as kubeadm writes unset fields
    state.__dict__["kube_proxy"] = {**state.kube_proxy, "config": None}
    assert readers.read_kube_proxy({"key": "metricsBindAddress", "flag": "metrics-bind-address"},
                                   state).value == "0.0.0.0:10249"


def test_running_pods_the_image_policy_would_refuse_are_judged_once_per_namespace_and_images(monkeypatch):
    """One dry run per namespace and set of images: the pods of one workload share it; exempt namespaces are
    counted with their reason; without a policy that says no, nothing judges images."""
    from ansible.module_utils import kubeharden_cluster as cluster

    web = [{"kind": "Pod", "metadata": {"namespace": "shop", "name": f"web-{i}"}, "status": {"phase": "Running"},
            "spec": {"containers": [{"image": "docker.io/nginx:latest"}]}} for i in range(3)]
    vendor = {"kind": "Namespace", "metadata": {"name": "vendor", "annotations": {
        cluster.EXEMPT_FROM: "image-policy", cluster.EXEMPTION_REASON: "its own"}}}
    theirs = {"kind": "Pod", "metadata": {"namespace": "vendor", "name": "agent"}, "status": {"phase": "Running"},
              "spec": {"containers": [{"image": "quay.io/agent:1"}]}}
    policy = {"kind": "ValidatingAdmissionPolicy", "metadata": {"name": cluster.IMAGE_POLICY}, "spec": {}}
    binding = {"kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": cluster.IMAGE_POLICY},
               "spec": {"policyName": cluster.IMAGE_POLICY, "validationActions": ["Deny"]}}
    state = controls.Node(["cluster"])
    asked = []

    def dry_run(namespace, images):
        asked.append((namespace, tuple(images)))
        return ["docker.io/nginx:latest not from an allowed registry"]

    monkeypatch.setattr(state, "image_policy_dry_run", dry_run)
    state.__dict__["cluster"] = cluster.ClusterState([*web, vendor, theirs])
    with pytest.raises(node.NotApplicable, match="nothing judges images"):
        readers.read_cluster({"aspect": "image_refused"}, state)
    state.__dict__["cluster"] = cluster.ClusterState([*web, vendor, theirs, policy, binding])
    observed = readers.read_cluster({"aspect": "image_refused"}, state)
    assert asked == [("shop", ("docker.io/nginx:latest",))]
    assert observed.value == [f"shop/web-{i}: docker.io/nginx:latest not from an allowed registry" for i in range(3)]
    assert "vendor (its own)" in observed.evidence


def test_the_sandbox_image_is_judged_by_the_release_s_pause_tag_from_any_registry(monkeypatch):
    import subprocess

    from ansible.module_utils import kubeharden_containerd as containerd

    answers = {("kubelet", "--version"): "Kubernetes v1.37.2\n",
               ("kubeadm", "config", "images", "list", "--kubernetes-version", "v1.37.2"):
                   "registry.k8s.io/kube-apiserver:v1.37.2\nregistry.k8s.io/pause:3.10.2\nregistry.k8s.io/etcd:3.7.0-0\n"}
    monkeypatch.setattr(node, "run", lambda argv, **kwargs: subprocess.CompletedProcess(argv, 0, answers[tuple(argv)],
                                                                                         ""))

    def judged(sandbox: str) -> str:
        state = controls.Node(["workers"])
        state.__dict__["_containerd"] = ({"version": 4, "plugins": {containerd.CRI_IMAGES: {
            "pinned_images": {"sandbox": sandbox}}}}, "containerd config dump")
        return readers.read_containerd_sandbox({}, state).value

    assert judged("registry.k8s.io/pause:3.10.2") == "release"
    assert judged("mirror.example:5000/k8s/pause:3.10.2") == "release"  # an air-gapped cluster's own mirror
    assert judged("registry.k8s.io/pause:3.8") == "other"
