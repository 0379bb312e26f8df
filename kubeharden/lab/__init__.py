"""The node lab: systemd containers laid out like fresh kubeadm nodes, running real etcd and sshd."""
