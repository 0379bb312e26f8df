"""Readers of Kubernetes' components on a node: static pod flags, the kubelet, kube-proxy, the apiserver's
configuration files, etcd, certificates, containerd, and the cluster's objects (CIS section 5)."""

from __future__ import annotations

import os

from ansible.module_utils import kubeharden_cluster as cluster
from ansible.module_utils import kubeharden_comparisons as comparisons
from ansible.module_utils import kubeharden_containerd as containerd
from ansible.module_utils import kubeharden_encryption as encryption
from ansible.module_utils import kubeharden_node as node
from ansible.module_utils import kubeharden_pki as pki
from ansible.module_utils import kubeharden_views as views

Observation = comparisons.Observation


def read_kube_proxy(check: dict, state: views.Node) -> Observation:
    """A setting of the running kube-proxy (its configuration file, or its flag `flag` without one)."""
    value, where = views.kube_proxy_setting(state.kube_proxy, check["key"], check.get("flag"))
    return Observation(value, f"{check['key']}: {value} ({where})" if value is not None
                       else f"{check['key']} not set ({where})")


def read_flag(check: dict, state: views.Node) -> Observation:
    """One flag's value; with a list of flags (a certificate and its key), all must be set."""
    flags, where = state.flags(check["component"])
    names = check["flag"] if isinstance(check["flag"], list) else [check["flag"]]
    values = [flags.get(name) for name in names]
    shown = " ".join(f"--{n}={v}" if v is not None else f"--{n} not set" for n, v in zip(names, values, strict=False))
    value = None if None in values else ",".join(values)
    return Observation(value, f"{shown} ({where})")


def read_kubelet(check: dict, state: views.Node) -> Observation:
    kubelet = state.kubelet
    flag, key = check.get("flag"), check.get("key")
    if flag and flag in kubelet["flags"]:
        return Observation(kubelet["flags"][flag], f"--{flag}={kubelet['flags'][flag]} ({kubelet['flag_source']})")
    if key:
        if kubelet["config_path"] is None:
            raise node.ReadError(f"the kubelet has no --config ({kubelet['flag_source']}) and --{flag} is not set")
        value = node.dig(kubelet["config"], key)
        if value is not None:
            return Observation(value, f"{key}: {value} ({', '.join(kubelet['config_sources'])})")
        return Observation(None, f"{key} not set ({', '.join(kubelet['config_sources'])})")
    return Observation(None, f"--{flag} not set ({kubelet['flag_source']})")


def read_kubelet_serving(check: dict, state: views.Node) -> Observation:
    """Who signed the certificate the kubelet serves (4.2.9): "cluster-ca" when `check["ca"]` verifies it.

    The kubelet serves --tls-cert-file/tlsCertFile when set; else, with serverTLSBootstrap, the certificate the
    cluster CA issued for its request (kubelet-server-current.pem, none while the request is pending); else one
    it signed itself (kubelet.crt), which no CA verifies."""
    kubelet = state.kubelet
    config, flags = kubelet["config"] or {}, kubelet["flags"]
    cert_dir = flags.get("cert-dir", pki.KUBELET_PKI_DIR)
    bootstrap = flags.get("rotate-server-certificates", node.dig(config, "serverTLSBootstrap"))
    if flags.get("tls-cert-file") or node.dig(config, "tlsCertFile"):
        path, how = flags.get("tls-cert-file") or node.dig(config, "tlsCertFile"), "tlsCertFile"
    elif str(bootstrap).lower() == "true":
        path, how = os.path.join(cert_dir, "kubelet-server-current.pem"), "serverTLSBootstrap"
    else:
        path, how = os.path.join(cert_dir, "kubelet.crt"), "signed by the kubelet itself"
    if not os.path.exists(path):
        return Observation("none", f"{path} does not exist ({how}; its certificate request may be pending)")
    blocks = [block for label, block in pki.pem_blocks(node.read_text(path)) if label == "CERTIFICATE"]
    if not blocks:
        return Observation("none", f"{path} holds no certificate ({how})")
    result = pki.openssl(["verify", "-CAfile", check["ca"]], stdin=blocks[0])
    if result.returncode == 0:
        return Observation("cluster-ca", f"{path} ({how}) verified by {check['ca']}")
    return Observation("not-cluster-ca", f"{path} ({how}) not verified by {check['ca']}")


def _apiserver_config(state: views.Node, flag: str) -> tuple[object, str]:
    flags, where = state.flags("kube-apiserver")
    path = flags.get(flag)
    if not path:
        return None, f"--{flag} not set ({where})"
    try:
        return node.load_yaml(path), path
    except FileNotFoundError:
        raise node.ReadError(f"--{flag} names {path}, which does not exist") from None


# What anonymous requests may reach: the health endpoints the kubelet's probes call, and the public document
# kubeadm's token discovery reads before a node joins (kubeadm grants system:anonymous `get` on it, no more).
HEALTH_PATHS = {"/livez", "/readyz", "/healthz", "/api/v1/namespaces/kube-public/configmaps/cluster-info"}


def read_anonymous_auth(check: dict, state: views.Node) -> Observation:
    """1.2.1: `false`, `health-only` (an AuthenticationConfiguration allows anonymous requests to health
    endpoints only, as the kubelet's probes need, and kubeadm's cluster-info for joining nodes), or `true`."""
    flags, where = state.flags("kube-apiserver")
    if "authentication-config" not in flags:
        value = flags.get("anonymous-auth", "true")
        return Observation(value, f"--anonymous-auth={value}" + ("" if "anonymous-auth" in flags else " (default)")
                           + f" ({where})")
    config, path = _apiserver_config(state, "authentication-config")
    anonymous = (config or {}).get("anonymous") or {}
    if not anonymous.get("enabled"):
        return Observation("false" if anonymous else "true", f"{path}: anonymous "
                           + ("disabled" if anonymous else "not configured (enabled by default)"))
    paths = {c.get("path") for c in anonymous.get("conditions") or []}
    value = "health-only" if paths and paths <= HEALTH_PATHS else "true"
    return Observation(value, f"{path}: anonymous allowed for {sorted(paths) if paths else 'every path'}")


def read_encryption_provider(check: dict, state: views.Node) -> Observation:
    """The first provider for `secrets` in the apiserver's EncryptionConfiguration: the one that encrypts."""
    config, where = _apiserver_config(state, "encryption-provider-config")
    if config is None:
        return Observation(None, where)
    for resource in (config or {}).get("resources") or []:
        if "secrets" in (resource.get("resources") or []) or "*.*" in (resource.get("resources") or []):
            providers = resource.get("providers") or []
            first = next(iter(providers[0]), None) if providers else None
            return Observation(first, f"{where}: first provider for secrets is {first}")
    return Observation(None, f"{where}: no provider list covers secrets")


def read_pod_security(check: dict, state: views.Node) -> Observation:
    config, where = _apiserver_config(state, "admission-control-config-file")
    if config is None:
        return Observation(None, where + " (Pod Security Admission defaults to privileged)")
    for plugin in (config or {}).get("plugins") or []:
        if plugin.get("name") == "PodSecurity":
            psa = plugin.get("configuration")
            if psa is None and plugin.get("path"):
                psa = node.load_yaml(plugin["path"])
            level = ((psa or {}).get("defaults") or {}).get(check.get("mode", "enforce"))
            return Observation(level, f"{where}: PodSecurity defaults.{check.get('mode', 'enforce')} = {level}")
    return Observation(None, f"{where}: no PodSecurity plugin configuration")


def read_same_file(check: dict, state: views.Node) -> Observation:
    """Whether two flags name files with identical content (etcd must not trust the cluster CA)."""
    first_flags, where = state.flags(check["component"])
    other_flags, _source = state.flags(check["other_component"])
    first, other = first_flags.get(check["flag"]), other_flags.get(check["other_flag"])
    if not first or not other:
        raise node.NotApplicable(f"--{check['flag']} or --{check['other_flag']} is not set ({where})")
    same = os.path.realpath(first) == os.path.realpath(other) or node.read_text(first) == node.read_text(other)
    return Observation("same" if same else "different", f"{first} vs {other}: {'same' if same else 'different'} CA")


def read_containerd(check: dict, state: views.Node) -> Observation:
    """A setting of containerd's effective configuration; `key` is its path, plugin sections by full name."""
    config, source = state.containerd
    value = containerd.dig(config, check["key"])
    shown = containerd.path_text(tuple(check["key"]))
    if value is None:  # the dump lists every setting with its default: a missing one is another containerd
        raise node.ReadError(f"{shown} is not in containerd's effective configuration ({source})")
    return Observation(value, f"{shown} = {value} ({source})")


def read_containerd_sandbox(check: dict, state: views.Node) -> Observation:
    """Whether containerd's sandbox (pause) image carries the tag of the pause image the kubelet's release names:
    the repository is the operator's (a mirror in an air-gapped cluster), the version is the release's."""
    config, source = state.containerd
    pinned = containerd.dig(config, ["plugins", containerd.CRI_IMAGES, "pinned_images", "sandbox"]) or ""
    release = state.release_pause_image
    same = pinned.rpartition(":")[2] == release.rpartition(":")[2] and pinned.rpartition("/")[2].startswith("pause:")
    return Observation("release" if same else "other",
                       f"sandbox {pinned or 'not set'} ({source}); the release's is {release} (kubeadm)")


CONTAINERD_RULES = {"endpoints": containerd.endpoint_problems, "registries": containerd.registry_problems}


def read_containerd_rules(check: dict, state: views.Node) -> Observation:
    """What breaks one of containerd's hardening rules (the container_runtime role refuses the same)."""
    config, source = state.containerd
    offenders = CONTAINERD_RULES[check["aspect"]](config)
    return Observation(offenders, f"{check['aspect']}: {len(offenders)} offending ({source})")


def read_etcd_encryption(check: dict, state: views.Node) -> Observation:
    """How values under `prefix` are stored in this node's etcd, read over TLS with the health-check client."""
    import ssl

    flags, where = state.flags("etcd")
    ca = flags.get("trusted-ca-file")
    urls = [url for url in str(flags.get("listen-client-urls", "")).split(",") if url.startswith("https://")]
    if not ca or not urls:
        raise node.ReadError(f"etcd has no trusted CA or no https client URL ({where})")
    local = next((url for url in urls if "127.0.0.1" in url or "localhost" in url), urls[0])
    clients = [f"{os.path.dirname(ca)}/healthcheck-client", "/etc/kubernetes/pki/etcd/healthcheck-client",
               "/etc/kubernetes/pki/apiserver-etcd-client"]
    client = next((c for c in clients if os.path.exists(f"{c}.crt") and os.path.exists(f"{c}.key")), None)
    if client is None:
        raise node.ReadError(f"no etcd client certificate to read with (looked for {', '.join(clients)})")
    try:
        tls = {"ca_path": ca, "client_cert": f"{client}.crt", "client_key": f"{client}.key"}
        kinds = [encryption.classify(value) for _key, value in encryption.etcd_range(local, tls, check["prefix"], 500)]
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise node.ReadError(f"cannot read {check['prefix']} from etcd at {local}: {exc}") from None
    plaintext = kinds.count("plaintext")
    counts = {kind: kinds.count(kind) for kind in sorted(set(kinds))}
    return Observation(plaintext, f"{check['prefix']} in etcd ({local}): "
                       + (", ".join(f"{count} {kind}" for kind, count in counts.items()) or "no values"))


def _certificate_offence(check: dict, cert: dict) -> str | None:
    aspect = check["aspect"]
    if aspect == "expiry" and cert["days_left"] < int(check["days"]):
        return f"{cert['days_left']} days left"
    weak = pki.weaknesses(cert["key_type"], cert["key_bits"], cert["signature_algorithm"])
    if aspect == "key_strength" and any(w.startswith("weak key") for w in weak):
        return f"{cert['key_type']} {cert['key_bits']} bits"
    if aspect == "signature" and any(w.startswith("weak signature") for w in weak):
        return cert["signature_algorithm"]
    if aspect == "chain":
        if cert["chain"] not in ("ok", "issuer not on this node"):
            return f"chain {cert['chain']}"
        if cert.get("key_matches") is False:
            return f"does not match its key {cert.get('key_path', cert['path'])}"
    return None


def read_certificates(check: dict, state: views.Node) -> Observation:
    certificates = state.certificates
    if not certificates:
        raise node.NotApplicable("no certificates on this node")
    offenders = [f"{c['name']}: {c['error']}" for c in certificates if "error" in c]
    for cert in (c for c in certificates if "error" not in c):
        offence = _certificate_offence(check, cert)
        if offence:
            offenders.append(f"{cert['name']}: {offence}")
    return Observation(offenders, f"{len(certificates)} certificates" + (f"; {'; '.join(offenders[:5])}"
                                                                         if offenders else ""))


def _with_exempt(offenders: list[str], exempt: list[str], what: str) -> Observation:
    evidence = f"{len(offenders)} {what}"
    if offenders:
        evidence += f": {'; '.join(offenders[:8])}" + ("..." if len(offenders) > 8 else "")
    if exempt:
        evidence += f"; exempt: {'; '.join(exempt)}"
    return Observation(offenders, evidence)


def _images_refused(view, state: views.Node) -> Observation:
    """The running pods whose images the cluster's image policy would refuse today, as the apiserver judges them
    (one dry run per namespace and set of images; pods of one workload share theirs)."""
    if not view.image_policy_enforcing():
        raise node.NotApplicable(f"no {cluster.IMAGE_POLICY} bound with Deny or Warn: nothing judges images "
                                 "(cluster_policies_image_policy)")
    offenders, exempt, judged = [], [], {}
    for pod in view.running_pods():
        namespace, images = pod["metadata"]["namespace"], cluster.pod_images(pod)
        reason = view.exemption(namespace, "image-policy")
        if reason is not None:
            exempt.append(f"{namespace} ({reason})")
            continue
        key = (namespace, tuple(images))
        if key not in judged:
            judged[key] = state.image_policy_dry_run(namespace, images)
        offenders += [f"{namespace}/{pod['metadata']['name']}: {message}" for message in judged[key]]
    return _with_exempt(sorted(offenders), sorted(set(exempt)), "pod(s) the image policy would refuse")


def read_cluster(check: dict, state: views.Node) -> Observation:
    """CIS section 5 over the API, once per cluster: the offending objects, and the namespaces exempt with the
    reason the cluster_policies role recorded on them."""
    view, aspect = state.cluster, check["aspect"]
    if isinstance(view, Exception):
        raise view
    if aspect == "grants":
        return _with_exempt(cluster.rbac_grants(view, check["resources"], check["verbs"]), [], "grant(s)")
    if aspect == "cluster_admin":
        return _with_exempt(cluster.cluster_admin_bindings(view), [], "binding(s) to cluster-admin")
    if aspect == "wildcards":
        return _with_exempt(cluster.wildcard_roles(view), [], "role(s) with wildcards")
    if aspect == "system_masters":
        return _with_exempt(cluster.system_masters(view), [], "binding(s) to system:masters")
    if aspect == "pod_security_labels":
        return _with_exempt(*cluster.pod_security_labels(view, state.pod_security_level), "namespace(s)")
    if aspect == "default_deny":
        return _with_exempt(*cluster.default_deny(view), "namespace(s)")
    if aspect == "default_service_accounts":
        return _with_exempt(*cluster.default_service_accounts(view), "finding(s)")
    if aspect == "would_be_rejected":
        level, offenders, exempt = state.pod_security_level, [], []
        for found in sorted(view.of("Namespace"), key=lambda n: n["metadata"]["name"]):
            namespace = found["metadata"]["name"]
            rejected = state.pod_security_dry_run(found, level)
            reason = view.exemption(namespace, "pod-security")
            if reason is not None and rejected:
                exempt.append(f"{namespace} ({reason}): {len(rejected)} pod line(s)")
            elif reason is None:
                offenders += [f"{namespace}: {line}" for line in rejected]
        return _with_exempt(offenders, exempt, f"pod(s) {level} would reject")
    if aspect == "exposure":
        return _with_exempt(cluster.exposure(view), [], "exposed")
    if aspect == "image_policy":
        return _with_exempt(*cluster.image_policy(view, state.policy_namespaces), "finding(s)")
    if aspect == "image_refused":
        return _images_refused(view, state)
    if aspect in cluster.POD_ASPECTS:
        return _with_exempt(*cluster.pods_with(view, aspect), "pod(s)")
    raise node.ReadError(f"unknown cluster aspect {aspect!r}")
