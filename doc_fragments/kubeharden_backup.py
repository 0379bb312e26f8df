"""The backup options every kubeharden module that replaces a file shares, documented once.

Modules list it in `extends_documentation_fragment` (`kubeharden_backup` in a checkout, through ansible.cfg's
doc_fragment_plugins; `kubeharden.hardening.kubeharden_backup` in the collection). Their argument specs take the
same options from module_utils/kubeharden_files.py (BACKUP_OPTIONS, BACKUP_DIR_OPTION).
"""

from __future__ import annotations


class ModuleDocFragment:
    # backup and backup_dir: modules that may be told not to keep a copy.
    DOCUMENTATION = r"""
options:
  backup:
    description: Keep a copy of each file it replaces.
    type: bool
    default: true
  backup_dir:
    description: Where backups go, mirroring each file's path (never next to the original).
    type: path
    default: /var/backups/kubeharden
"""

    # backup_dir only: modules that always keep a copy (keys, certificates, configurations the cluster reads).
    BACKUP_DIR = r"""
options:
  backup_dir:
    description: Where the copies of replaced files go, mirroring each file's path (never next to the original).
    type: path
    default: /var/backups/kubeharden
"""
