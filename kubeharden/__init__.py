"""kubeharden: harden Kubernetes nodes with Ansible and prove it on real nodes."""

__version__ = "0.1.0"
