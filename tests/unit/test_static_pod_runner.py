from tests.conftest import load_static_pod_runner

runner = load_static_pod_runner()

POD = {"spec": {
    "securityContext": {"runAsUser": 100},
    "containers": [{"command": ["etcd"], "securityContext": {"runAsGroup": 101},
                    "volumeMounts": [{"mountPath": "/etc/kubernetes/pki/etcd", "name": "certs"},
                                     {"mountPath": "/var/lib/etcd", "name": "data"}]}],
    "volumes": [{"name": "certs", "hostPath": {"path": "/etc/kubernetes/pki/etcd"}},
                {"name": "data", "hostPath": {"path": "/var/lib/etcd"}}]}}


def test_files_inside_mounts_are_visible():
    mounts = runner.host_path_map(POD)
    assert runner.unmounted_paths(["etcd", "--data-dir=/var/lib/etcd", "--cert-file=/etc/kubernetes/pki/etcd/s.crt",
                                   "--listen-client-urls=https://127.0.0.1:2379"], mounts) == []


def test_files_outside_mounts_are_reported_even_in_lists():
    mounts = runner.host_path_map(POD)
    command = ["etcd", "--trusted-ca-file=/etc/kubernetes/pki/ca.crt", "--x=/var/lib/etcd,/var/lib/etcd-other/a"]
    assert runner.unmounted_paths(command, mounts) == ["/etc/kubernetes/pki/ca.crt", "/var/lib/etcd-other/a"]


def test_container_security_context_overrides_the_pods():
    assert runner.run_as(POD) == (100, 101)
    assert runner.run_as({"spec": {"containers": [{}]}}) == (None, None)
