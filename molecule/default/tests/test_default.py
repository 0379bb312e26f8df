"""The lab contract seen through molecule and testinfra, over SSH like every role scenario."""


def test_sshd_runs(host):
    assert host.service("ssh").is_running


def test_the_connecting_user_can_become_root(host):
    assert host.user().name == "labadmin"
    assert host.run("sudo -n true").rc == 0


def test_node_keeps_its_kubeadm_kubelet_configuration_root_only(host):
    with host.sudo():  # /var/lib/kubelet is 0700, as kubeadm leaves it
        config = host.file("/var/lib/kubelet/config.yaml")
        assert config.exists and config.user == "root" and config.mode == 0o600  # kubeadm wrote 0644
        assert "kind: KubeletConfiguration" in config.content_string


def test_etcd_listens_only_on_control_plane_nodes(host):
    is_control_plane = host.backend.get_hostname().startswith("cp")
    assert host.socket("tcp://127.0.0.1:2379").is_listening == is_control_plane


def test_firewall_table_is_loaded_and_persisted(host):
    with host.sudo():
        assert "chain input" in host.run("nft list table inet kubeharden").stdout
        assert host.service("kubeharden-firewall.service").is_enabled
