"""node_os_managed_units: the units node_os keeps enabled, running or masked, from the areas that are on.

The role's variables say which areas are on and which packages are installed or still pending (check mode);
this builds the one list kubeharden_services applies, in one place a unit test reaches
(tests/unit/test_role_filters.py). In a container a unit is enabled but never started: there is no boot to
run it for, and a container's systemd may not start it (kubeharden_container).
"""

from __future__ import annotations

JOURNALD_CONF = "/etc/systemd/journald.conf.d/kubeharden.conf"
TIMESYNCD_CONF = "/etc/systemd/timesyncd.conf.d/kubeharden.conf"


def node_os_managed_units(pending_packages: list, *, container: bool, auditd: bool, services: bool, swap_off: bool,
                          time_sync: bool, has_chrony: bool, apparmor: bool, security_packages: list,
                          changed_files: list, aide: bool = False, journald: bool = False) -> list[dict]:
    running = None if container else "started"
    installed = set(security_packages) - set(pending_packages)
    units = []
    if auditd and "auditd" not in pending_packages:  # KH-OS-6
        units.append({"name": "auditd.service", "enabled": True, "state": running})
    if aide and "aide-common" not in pending_packages:  # CIS Debian 12 6.3.2: the daily check
        units.append({"name": "dailyaidecheck.timer", "enabled": True, "state": running})
    if services and journald:  # journald runs wherever systemd does, a container's included
        units.append({"name": "systemd-journald.service", "state": "restarted",
                      "restart": JOURNALD_CONF in changed_files})
    if services and swap_off:  # KH-OS-9: the kubelet wants no swap
        units.append({"name": "swap.target", "masked": True})
    if services and time_sync:
        servers_changed = not has_chrony and TIMESYNCD_CONF in changed_files
        units.append({"name": "chrony.service" if has_chrony else "systemd-timesyncd.service", "enabled": True,
                      "state": None if container else "restarted" if servers_changed else "started",
                      "restart": servers_changed})
    if services and apparmor and "apparmor" not in pending_packages:
        units.append({"name": "apparmor.service", "enabled": True})
    if services and "fail2ban" in installed:
        units.append({"name": "fail2ban.service", "enabled": True, "state": "restarted",
                      "restart": "/etc/fail2ban/jail.local" in changed_files})
    if services and "usbguard" in installed:
        units.append({"name": "usbguard.service", "enabled": True, "state": None if container else "restarted",
                      "restart": "/etc/usbguard/rules.d/50-kubeharden.conf" in changed_files})
    return units


class FilterModule:
    def filters(self):
        return {"node_os_managed_units": node_os_managed_units}
