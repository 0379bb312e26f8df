"""apiserver_effective_flags: everything kube-apiserver's command line gets, by the control each flag satisfies.

The role's variables name the choices (an audit log, cipher suites, the anonymous mode...); this turns them into
flags, in one place a unit test reaches (tests/unit/test_role_filters.py). A None value removes a flag.
"""

from __future__ import annotations


def apiserver_effective_flags(flags: dict, *, audit_log: dict, admission_dir: str, authentication_dir: str,
                              tls_cipher_suites: list, request_timeout: str, kubelet_certificate_authority: str,
                              encryption_config_exists: bool, encryption_provider_config: str,
                              encryption_automatic_reload: bool, anonymous_mode: str, extra_flags: dict) -> dict:
    effective = dict(flags)
    effective.update({  # KH-K8S-4, 1.2.16-1.2.19: the audit log; 1.2.9: EventRateLimit's configuration
        "audit-policy-file": audit_log["policy_file"], "audit-log-path": audit_log["path"],
        "audit-log-maxage": str(audit_log["maxage"]), "audit-log-maxbackup": str(audit_log["maxbackup"]),
        "audit-log-maxsize": str(audit_log["maxsize"]),
        "admission-control-config-file": f"{admission_dir}/admission-config.yaml"})
    if tls_cipher_suites:  # 1.2.29
        effective["tls-cipher-suites"] = ",".join(tls_cipher_suites)
    if request_timeout:  # 1.2.20
        effective["request-timeout"] = request_timeout
    if kubelet_certificate_authority:  # 1.2.5
        effective["kubelet-certificate-authority"] = kubelet_certificate_authority
    if encryption_config_exists:  # 1.2.27: only once the etcd role wrote the file
        effective["encryption-provider-config"] = encryption_provider_config
        effective["encryption-provider-config-automatic-reload"] = "true" if encryption_automatic_reload else None
    if anonymous_mode == "disabled":  # 1.2.1
        effective["anonymous-auth"] = "false"
    elif anonymous_mode == "endpoints":  # 1.2.1 with health endpoints left open (AuthenticationConfiguration)
        effective["anonymous-auth"] = None
        effective["authentication-config"] = f"{authentication_dir}/authentication-config.yaml"
    effective.update(extra_flags or {})
    return effective


class FilterModule:
    def filters(self):
        return {"apiserver_effective_flags": apiserver_effective_flags}
