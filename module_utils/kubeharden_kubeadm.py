"""kubeadm's configuration file: rendered with kubeharden's hardening, and read back as what kubeadm will write.

kubeadm turns a ClusterConfiguration's `extraArgs` into static pod flags on top of its own defaults (an extra
argument with a default's name replaces it; none can remove one), its `extraVolumes` into hostPath mounts, and a
KubeletConfiguration into /var/lib/kubelet/config.yaml on top of its kubelet defaults. `effective()` does the
same, so the audit catalogue can judge a configuration before `kubeadm init` runs.

Standard library and PyYAML only: this runs on nodes (shipped with kubeharden's modules) and in the lab.
"""

from __future__ import annotations

import copy
import re

from ansible.module_utils import kubeharden_manifest as manifest
from ansible.module_utils.kubeharden_node import deep_merge, parse_minor

# The Kubernetes minors kubeharden supports (upstream's supported releases). The one list: the control_plane role's
# version check, the lab's builds and README are held to it by tests/unit/test_lab_kubernetes.py.
SUPPORTED_MINORS = ("1.35", "1.36", "1.37")
SUPPORTED = (parse_minor(SUPPORTED_MINORS[0]), parse_minor(SUPPORTED_MINORS[-1]))
# The next minor while only its pre-releases exist: rendered and hardened only where the inventory opts in
# (control_plane_allow_prerelease, the modules' allow_prerelease), for trying it on a test cluster before its release.
PRERELEASE_MINORS = ("1.38",)
PRERELEASE = {parse_minor(minor) for minor in PRERELEASE_MINORS}
V1BETA3, V1BETA4 = "kubeadm.k8s.io/v1beta3", "kubeadm.k8s.io/v1beta4"
PKI_DIR = "/etc/kubernetes/pki"
CLUSTER_DOMAIN = "cluster.local"
COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd")
# Where each component's settings live in a ClusterConfiguration.
SECTIONS = {"kube-apiserver": "apiServer", "kube-controller-manager": "controllerManager",
            "kube-scheduler": "scheduler", "etcd": "etcd"}

CA_DIRS = ("/etc/ssl/certs", "/etc/ca-certificates", "/usr/local/share/ca-certificates", "/usr/share/ca-certificates")
# The hostPath mounts kubeadm gives each static pod: a flag's file outside them needs an extraVolume.
DEFAULT_MOUNTS = {
    "kube-apiserver": (*CA_DIRS, PKI_DIR),
    # (1.35's kubeadm also mounts the flexvolume directory; 1.36 dropped it, so no flag may count on it.)
    "kube-controller-manager": (*CA_DIRS, PKI_DIR, "/etc/kubernetes/controller-manager.conf"),
    "kube-scheduler": ("/etc/kubernetes/scheduler.conf",),
    "etcd": (f"{PKI_DIR}/etcd", "/var/lib/etcd"),
}

# What `kubeadm init` writes to /var/lib/kubelet/config.yaml before the user's KubeletConfiguration, 1.35-1.37
# alike (containerRuntimeEndpoint is the node's criSocket). tests/unit/test_kubeadm_defaults.py holds this, the
# default flags and the default mounts to what each release's kubeadm writes.
KUBELET_DEFAULTS = {
    "apiVersion": "kubelet.config.k8s.io/v1beta1",
    "authentication": {"anonymous": {"enabled": False}, "webhook": {"cacheTTL": "0s", "enabled": True},
                       "x509": {"clientCAFile": f"{PKI_DIR}/ca.crt"}},
    "authorization": {"mode": "Webhook", "webhook": {"cacheAuthorizedTTL": "0s", "cacheUnauthorizedTTL": "0s"}},
    "cgroupDriver": "systemd", "crashLoopBackOff": {}, "clusterDNS": ["10.96.0.10"], "clusterDomain": CLUSTER_DOMAIN,
    "containerRuntimeEndpoint": "", "cpuManagerReconcilePeriod": "0s", "evictionPressureTransitionPeriod": "0s",
    "fileCheckFrequency": "0s", "healthzBindAddress": "127.0.0.1", "healthzPort": 10248,
    "httpCheckFrequency": "0s", "imageMaximumGCAge": "0s", "imageMinimumGCAge": "0s",
    "kind": "KubeletConfiguration",
    "logging": {"flushFrequency": 0, "options": {"json": {"infoBufferSize": "0"}, "text": {"infoBufferSize": "0"}},
                "verbosity": 0},
    "memorySwap": {}, "nodeStatusReportFrequency": "0s", "nodeStatusUpdateFrequency": "0s",
    "rotateCertificates": True, "runtimeRequestTimeout": "0s",
    "shutdownGracePeriod": "0s", "shutdownGracePeriodCriticalPods": "0s",
    "staticPodPath": "/etc/kubernetes/manifests", "streamingConnectionIdleTimeout": "0s",
    "syncFrequency": "0s", "volumeStatsAggPeriod": "0s",
}
# Plain (not pointer) fields of the kubelet's Go struct: kubeadm leaves them out of config.yaml when zero, which
# the kubelet reads as zero again (readOnlyPort 0: the unauthenticated port off).
KUBELET_OMITTED_WHEN_ZERO = ("readOnlyPort", "protectKernelDefaults", "serverTLSBootstrap")
# The kubelet's command line on a kubeadm node (10-kubeadm.conf drop-in and kubeadm-flags.env).
KUBELET_FLAGS = {"bootstrap-kubeconfig": "/etc/kubernetes/bootstrap-kubelet.conf",
                 "kubeconfig": "/etc/kubernetes/kubelet.conf", "config": "/var/lib/kubelet/config.yaml",
                 "container-runtime-endpoint": "unix:///var/run/containerd/containerd.sock"}


class ConfigError(ValueError):
    """A kubeadm configuration kubeharden refuses to render or read; the message names the setting."""


def parse_version(text: str, allow_prerelease: bool = False) -> tuple[int, int]:
    version = parse_minor(text) if re.match(r"^v?\d", str(text).strip()) else None
    if version is None:
        raise ConfigError(f"kubernetes_version {text!r} is not a version such as v1.37.2")
    prerelease = version in PRERELEASE
    if prerelease and not allow_prerelease:
        raise ConfigError(f"kubernetes_version {text} is a pre-release for kubeharden (its flags and configuration "
                          f"are proven on {'.'.join(map(str, SUPPORTED[0]))} to {'.'.join(map(str, SUPPORTED[1]))}): "
                          "set control_plane_allow_prerelease: true to try it on a test cluster, never in production")
    if not prerelease and not SUPPORTED[0] <= version <= SUPPORTED[1]:
        raise ConfigError(f"kubernetes_version {text} is not supported: kubeharden renders kubeadm configurations "
                          f"for Kubernetes {'.'.join(map(str, SUPPORTED[0]))} to {'.'.join(map(str, SUPPORTED[1]))}")
    return version


def api_version(version: tuple[int, int]) -> str:
    """kubeadm v1beta4 (extraArgs as a list of name/value pairs): the only one kubeadm reads from 1.36, and
    current in 1.35 (v1beta3 is deprecated there)."""
    return V1BETA4


def default_flags(component: str, cluster: dict) -> dict[str, str]:
    """The flags kubeadm writes into a component's static pod (1.35-1.37 alike), before any extraArgs."""
    p, ip, port = PKI_DIR, cluster["advertise_address"], str(cluster.get("bind_port", 6443))
    service_subnet = cluster.get("service_subnet", "10.96.0.0/12")
    if component == "kube-apiserver":
        return {
            "advertise-address": ip, "allow-privileged": "true", "authorization-mode": "Node,RBAC",
            "client-ca-file": f"{p}/ca.crt", "enable-admission-plugins": "NodeRestriction",
            "enable-bootstrap-token-auth": "true", "etcd-cafile": f"{p}/etcd/ca.crt",
            "etcd-certfile": f"{p}/apiserver-etcd-client.crt", "etcd-keyfile": f"{p}/apiserver-etcd-client.key",
            "etcd-servers": cluster.get("etcd_servers", "https://127.0.0.1:2379"),
            "kubelet-client-certificate": f"{p}/apiserver-kubelet-client.crt",
            "kubelet-client-key": f"{p}/apiserver-kubelet-client.key",
            "kubelet-preferred-address-types": "InternalIP,ExternalIP,Hostname",
            "proxy-client-cert-file": f"{p}/front-proxy-client.crt",
            "proxy-client-key-file": f"{p}/front-proxy-client.key",
            "requestheader-allowed-names": "front-proxy-client",
            "requestheader-client-ca-file": f"{p}/front-proxy-ca.crt",
            "requestheader-extra-headers-prefix": "X-Remote-Extra-", "requestheader-group-headers": "X-Remote-Group",
            "requestheader-username-headers": "X-Remote-User", "secure-port": port,
            "service-account-issuer": f"https://kubernetes.default.svc.{CLUSTER_DOMAIN}",
            "service-account-key-file": f"{p}/sa.pub", "service-account-signing-key-file": f"{p}/sa.key",
            "service-cluster-ip-range": service_subnet, "tls-cert-file": f"{p}/apiserver.crt",
            "tls-private-key-file": f"{p}/apiserver.key",
        }
    if component == "kube-controller-manager":
        conf = "/etc/kubernetes/controller-manager.conf"
        flags = {
            "authentication-kubeconfig": conf, "authorization-kubeconfig": conf, "bind-address": "127.0.0.1",
            "client-ca-file": f"{p}/ca.crt", "cluster-name": cluster.get("cluster_name", "kubernetes"),
            "cluster-signing-cert-file": f"{p}/ca.crt", "cluster-signing-key-file": f"{p}/ca.key",
            "controllers": "*,bootstrapsigner,tokencleaner", "kubeconfig": conf, "leader-elect": "true",
            "requestheader-client-ca-file": f"{p}/front-proxy-ca.crt", "root-ca-file": f"{p}/ca.crt",
            "service-account-private-key-file": f"{p}/sa.key", "service-cluster-ip-range": service_subnet,
            "use-service-account-credentials": "true",
        }
        if cluster.get("pod_subnet"):
            flags.update({"allocate-node-cidrs": "true", "cluster-cidr": cluster["pod_subnet"]})
        return flags
    if component == "kube-scheduler":
        conf = "/etc/kubernetes/scheduler.conf"
        return {"authentication-kubeconfig": conf, "authorization-kubeconfig": conf, "bind-address": "127.0.0.1",
                "kubeconfig": conf, "leader-elect": "true"}
    if component == "etcd":
        name, etcd = cluster["node_name"], f"{p}/etcd"
        return {
            "advertise-client-urls": f"https://{ip}:2379", "cert-file": f"{etcd}/server.crt",
            "client-cert-auth": "true", "data-dir": cluster.get("etcd_data_dir", "/var/lib/etcd"),
            "feature-gates": "InitialCorruptCheck=true", "watch-progress-notify-interval": "5s",
            "initial-advertise-peer-urls": f"https://{ip}:2380",
            "initial-cluster": cluster.get("initial_cluster", f"{name}=https://{ip}:2380"),
            "key-file": f"{etcd}/server.key", "listen-client-urls": f"https://127.0.0.1:2379,https://{ip}:2379",
            "listen-metrics-urls": "http://127.0.0.1:2381", "listen-peer-urls": f"https://{ip}:2380", "name": name,
            "peer-cert-file": f"{etcd}/peer.crt", "peer-client-cert-auth": "true", "peer-key-file": f"{etcd}/peer.key",
            "peer-trusted-ca-file": f"{etcd}/ca.crt", "snapshot-count": "10000", "trusted-ca-file": f"{etcd}/ca.crt",
        }
    raise ConfigError(f"unknown component {component!r}")


def to_extra_args(flags: dict[str, str]) -> list[dict]:
    return [{"name": name, "value": str(value)} for name, value in sorted(flags.items())]


def from_extra_args(value, where: str) -> dict[str, str]:
    """v1beta4 extraArgs (a list of name/value pairs) as a map."""
    if value in (None, [], {}):
        return {}
    if not isinstance(value, list) or not all(isinstance(i, dict) and "name" in i for i in value):
        raise ConfigError(f"{where}.extraArgs must be a list of name/value pairs in {V1BETA4}")
    return {str(i["name"]): str(i.get("value", "")) for i in value}


def hardened_args(component: str, cluster: dict, hardening: dict, user: dict) -> dict[str, str]:
    """The extraArgs of a component: kubeharden's flags and the user's, which must not contradict each other."""
    defaults = default_flags(component, cluster)
    args: dict[str, str] = {}
    for name, value in hardening.items():
        if value is None:
            if name in defaults:
                raise ConfigError(f"{component}: kubeharden removes --{name}, which kubeadm sets by default and "
                                  "extraArgs cannot remove")
            continue
        if defaults.get(name) != str(value):
            args[name] = str(value)
    for name, value in user.items():
        wanted = hardening.get(name)
        if name in hardening and (wanted is None or str(wanted) != str(value)):
            raise ConfigError(f"extra_args for {component} sets --{name}={value}, which conflicts with kubeharden's "
                              f"{'removal' if wanted is None else f'--{name}={wanted}'}: change the hardening "
                              "variable instead (or drop the extra argument)")
        if defaults.get(name) != str(value):
            args[name] = str(value)
    return args


def render(spec: dict) -> list[dict]:
    """The kubeadm configuration documents for one node (see the kubeharden_kubeadm_config module's options)."""
    version = parse_version(spec["kubernetes_version"], spec.get("allow_prerelease", False))
    api = api_version(version)
    cluster = cluster_facts(spec)
    registration: dict = {"name": spec["node_name"], "criSocket": KUBELET_FLAGS["container-runtime-endpoint"]}
    if spec.get("ignore_preflight_errors"):
        registration["ignorePreflightErrors"] = sorted(spec["ignore_preflight_errors"])
    documents: list[dict] = []
    if spec.get("join"):
        join = spec["join"]
        for key in ("api_server_endpoint", "token", "ca_cert_hashes"):
            if not join.get(key):
                raise ConfigError(f"join.{key} is required to render a JoinConfiguration")
        document = {"apiVersion": api, "kind": "JoinConfiguration", "nodeRegistration": registration,
                    "discovery": {"bootstrapToken": {"apiServerEndpoint": join["api_server_endpoint"],
                                                     "token": join["token"],
                                                     "caCertHashes": list(join["ca_cert_hashes"])}}}
        if join.get("control_plane"):
            document["controlPlane"] = {"localAPIEndpoint": {"advertiseAddress": spec["advertise_address"],
                                                             "bindPort": cluster["bind_port"]}}
            if join.get("certificate_key"):
                document["controlPlane"]["certificateKey"] = join["certificate_key"]
        return [document]
    init = {"apiVersion": api, "kind": "InitConfiguration", "nodeRegistration": registration,
            "localAPIEndpoint": {"advertiseAddress": spec["advertise_address"], "bindPort": cluster["bind_port"]}}
    if spec.get("skip_phases"):
        init["skipPhases"] = list(spec["skip_phases"])
    documents.append(init)
    configuration: dict = {
        "apiVersion": api, "kind": "ClusterConfiguration", "kubernetesVersion": spec["kubernetes_version"],
        "clusterName": cluster["cluster_name"],
        "networking": {"serviceSubnet": cluster["service_subnet"], "dnsDomain": CLUSTER_DOMAIN},
    }
    if cluster.get("pod_subnet"):
        configuration["networking"]["podSubnet"] = cluster["pod_subnet"]
    if spec.get("control_plane_endpoint"):
        configuration["controlPlaneEndpoint"] = spec["control_plane_endpoint"]
    for component in COMPONENTS:
        args = hardened_args(component, cluster, (spec.get("flags") or {}).get(component) or {},
                             (spec.get("extra_args") or {}).get(component) or {})
        section: dict = {}
        if args:
            section["extraArgs"] = to_extra_args(args)
        volumes = [_volume(v, component) for v in (spec.get("volumes") or {}).get(component) or []]
        volumes += flag_volumes(component, args, [v["hostPath"] for v in volumes])
        if volumes and component != "etcd":
            section["extraVolumes"] = volumes
        if component == "etcd":
            image = {"imageTag": spec["etcd_image_tag"]} if spec.get("etcd_image_tag") else {}
            section = {"local": {"dataDir": cluster["etcd_data_dir"], **image, **section}}
        if section:
            configuration[SECTIONS[component]] = section
    documents.append(configuration)
    kubelet = copy.deepcopy(spec.get("kubelet") or {})
    documents.append({"apiVersion": KUBELET_DEFAULTS["apiVersion"], "kind": "KubeletConfiguration", **{
        k: v for k, v in kubelet.items() if k not in ("apiVersion", "kind")}})
    # CIS 4.3.1: kube-proxy's metrics only on loopback (its configuration lives in the cluster, set here once).
    kube_proxy = {k: v for k, v in (spec.get("kube_proxy") or {}).items() if k not in ("apiVersion", "kind")}
    documents.append({"apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
                      "metricsBindAddress": "127.0.0.1:10249", **kube_proxy})
    return documents


def flag_volumes(component: str, args: dict[str, str], explicit: list[str]) -> list[dict]:
    """A read-only hostPath volume (writable for log and data paths) for each flag's file no mount shows."""
    covered = set(DEFAULT_MOUNTS[component]) | set(explicit)
    volumes = []
    for flag, path in manifest.flag_paths([component, *(f"--{k}={v}" for k, v in sorted(args.items()))]):
        if not manifest.is_mounted(path, covered):
            directory = path.rsplit("/", 1)[0] or "/"
            covered.add(directory)
            volumes.append({"name": manifest.volume_name(directory), "hostPath": directory, "mountPath": directory,
                            "readOnly": flag not in manifest.WRITABLE_PATH_FLAGS, "pathType": "DirectoryOrCreate"})
    return volumes


def _volume(volume: dict, component: str) -> dict:
    path = volume.get("path") or volume.get("hostPath")
    if not path or not str(path).startswith("/"):
        raise ConfigError(f"volumes.{component}: every volume needs an absolute path, not {volume!r}")
    name = volume.get("name") or manifest.volume_name(path)
    return {"name": name, "hostPath": path, "mountPath": volume.get("mountPath", path),
            "readOnly": bool(volume.get("read_only", volume.get("readOnly", True))),
            "pathType": volume.get("pathType", "DirectoryOrCreate" if not volume.get("file") else "File")}


def cluster_facts(spec: dict) -> dict:
    for key in ("advertise_address", "node_name"):
        if not spec.get(key):
            raise ConfigError(f"{key} is required")
    return {"advertise_address": spec["advertise_address"], "node_name": spec["node_name"],
            "bind_port": int(spec.get("bind_port") or 6443),
            "service_subnet": spec.get("service_subnet") or "10.96.0.0/12", "pod_subnet": spec.get("pod_subnet"),
            "cluster_name": spec.get("cluster_name") or "kubernetes",
            "etcd_data_dir": spec.get("etcd_data_dir") or "/var/lib/etcd"}


def effective(documents: list[dict]) -> dict:
    """What kubeadm init writes from these documents: each component's flags and the kubelet's configuration."""
    kinds = {d.get("kind"): d for d in documents if isinstance(d, dict)}
    init, configuration = kinds.get("InitConfiguration"), kinds.get("ClusterConfiguration")
    if not init or not configuration:
        raise ConfigError("an InitConfiguration and a ClusterConfiguration are needed to tell what kubeadm init "
                          "writes (a JoinConfiguration takes the cluster's configuration from the cluster)")
    api = configuration.get("apiVersion")
    if api == V1BETA3:
        raise ConfigError(f"ClusterConfiguration uses {V1BETA3}, which kubeadm no longer reads from Kubernetes 1.36: "
                          f"migrate it with `kubeadm config migrate` to {V1BETA4}")
    if api != V1BETA4:
        raise ConfigError(f"ClusterConfiguration apiVersion {api!r} is not {V1BETA4}")
    # Reading only: a pre-release's configuration exists because its rendering was opted in.
    parse_version(configuration.get("kubernetesVersion", ""), allow_prerelease=True)
    endpoint = init.get("localAPIEndpoint") or {}
    networking = configuration.get("networking") or {}
    etcd_local = (configuration.get("etcd") or {}).get("local") or {}
    cluster = {"advertise_address": endpoint.get("advertiseAddress", "0.0.0.0"),
               "bind_port": endpoint.get("bindPort", 6443),
               "node_name": (init.get("nodeRegistration") or {}).get("name", "node"),
               "service_subnet": networking.get("serviceSubnet", "10.96.0.0/12"),
               "pod_subnet": networking.get("podSubnet"), "cluster_name": configuration.get("clusterName"),
               "etcd_data_dir": etcd_local.get("dataDir", "/var/lib/etcd")}
    flags = {}
    for component in COMPONENTS:
        section = etcd_local if component == "etcd" else configuration.get(SECTIONS[component]) or {}
        flags[component] = {**default_flags(component, cluster),
                            **from_extra_args(section.get("extraArgs"), SECTIONS[component])}
    registration = init.get("nodeRegistration") or {}
    kubelet = deep_merge({**KUBELET_DEFAULTS, "containerRuntimeEndpoint": registration.get("criSocket", "")},
                         dict(kinds.get("KubeletConfiguration") or {}))
    for key in KUBELET_OMITTED_WHEN_ZERO:
        if kubelet.get(key) == 0:
            del kubelet[key]
    return {"api_version": api, "kubernetes_version": configuration["kubernetesVersion"], "flags": flags,
            "kubelet": kubelet, "kube_proxy": dict(kinds.get("KubeProxyConfiguration") or {}),
            "volumes": {c: (configuration.get(SECTIONS[c]) or {}).get("extraVolumes") or [] for c in COMPONENTS}}


# -- the cluster's own kubeadm configuration (kube-system/kubeadm-config and kubelet-config) ------------------

def _leaves(mapping: dict, prefix: str = "") -> dict[str, object]:
    """Dotted path -> value of every leaf of a nested mapping."""
    found: dict[str, object] = {}
    for key, value in mapping.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            found.update(_leaves(value, path + "."))
        else:
            found[path] = value
    return found


def _section(configuration: dict, component: str) -> dict | None:
    """The part of a ClusterConfiguration a component's extraArgs live in; None for an external etcd."""
    if component != "etcd":
        return configuration.setdefault(SECTIONS[component], {})
    etcd = configuration.setdefault("etcd", {})
    return None if "external" in etcd else etcd.setdefault("local", {})


def harden_cluster_configuration(configuration: dict, hardening: dict, volumes: dict,
                                 managed: dict) -> tuple[dict, dict[str, list[str]]]:
    """The ClusterConfiguration kubeadm keeps in the cluster, carrying kubeharden's flags as extraArgs and their
    files as extraVolumes, so that `kubeadm upgrade` writes hardened manifests by itself.

    `hardening`: component -> flag -> value (None: the flag must be absent), for the components the caller owns
    (the etcd role passes etcd only); `volumes`: component -> explicit volumes; `managed`: component -> the flags
    kubeharden wrote there before. Every other extraArg is the operator's and is kept; one that contradicts a
    hardening flag raises ConfigError naming it. A flag kubeharden wrote before and no longer sets is removed.
    Returns the new configuration and what kubeharden now manages, for every component."""
    api = configuration.get("apiVersion")
    if api != V1BETA4:
        raise ConfigError(f"the cluster's ClusterConfiguration is {api!r}, not {V1BETA4}")
    result = copy.deepcopy(configuration)
    now_managed = {component: list(names) for component, names in (managed or {}).items()}
    for component in COMPONENTS:
        if component not in (hardening or {}):
            continue
        flags = hardening[component] or {}
        section = _section(result, component)
        if section is None:
            continue
        args = from_extra_args(section.get("extraArgs"), f"{SECTIONS[component]}")
        owned = set((managed or {}).get(component) or [])
        for name, value in sorted(flags.items()):
            if name in args and name not in owned and (value is None or args[name] != str(value)):
                wanted = "removal of the flag" if value is None else f"--{name}={value}"
                raise ConfigError(f"kube-system/kubeadm-config: {SECTIONS[component]}.extraArgs sets --{name}="
                                  f"{args[name]}, which contradicts kubeharden's {wanted}: change the hardening "
                                  "variable, or remove the extra argument from the ConfigMap")
        for name in owned - {n for n, v in flags.items() if v is not None}:
            args.pop(name, None)
        for name, value in flags.items():
            if value is None:
                args.pop(name, None)
            else:
                args[name] = str(value)
        now_managed[component] = sorted(n for n, v in flags.items() if v is not None)
        if args:
            section["extraArgs"] = to_extra_args(args)
        else:
            section.pop("extraArgs", None)
        if component == "etcd":
            continue
        present = list(section.get("extraVolumes") or [])
        wanted = [_volume(v, component) for v in (volumes or {}).get(component) or []]
        wanted += flag_volumes(component, args, [v["hostPath"] for v in wanted + present])
        paths = {v.get("hostPath") for v in present}
        present += [v for v in wanted if v["hostPath"] not in paths]
        if present:
            section["extraVolumes"] = present
    for component in COMPONENTS:  # leave no empty section behind
        key = SECTIONS[component]
        if result.get(key) == {} or (key == "etcd" and result.get("etcd") == {"local": {}}):
            result.pop(key)
    return result, now_managed


def harden_kubelet_configuration(current: dict, settings: dict, managed: list[str]) -> tuple[dict, list[str]]:
    """The KubeletConfiguration kubeadm keeps in kube-system/kubelet-config, with kubeharden's settings merged in,
    so that `kubeadm upgrade node` and `kubeadm join` write a hardened config.yaml.

    A setting already there with another value is the operator's unless kubeharden wrote it (`managed`, dotted
    paths) or it is kubeadm's own default: then it raises ConfigError naming it."""
    wanted = _leaves(settings or {})
    present = _leaves(current or {})
    defaults = _leaves(KUBELET_DEFAULTS)
    for path, value in sorted(wanted.items()):
        kubeadms_default = path in defaults and present.get(path) == defaults[path]
        if path in present and present[path] != value and path not in managed and not kubeadms_default:
            raise ConfigError(f"kube-system/kubelet-config sets {path}: {present[path]!r}, which contradicts "
                              f"kubeharden's {value!r}: change the kubelet role's variable, or the ConfigMap")
    # kubeadm leaves a plain field out when zero, as it re-uploads this ConfigMap at each upgrade: already right.
    carried = {key: value for key, value in (settings or {}).items()
               if not (key in KUBELET_OMITTED_WHEN_ZERO and value in (0, False) and key not in (current or {}))}
    return deep_merge(current or {}, carried), sorted(wanted)


def harden_kube_proxy_configuration(current: dict, settings: dict, managed: list[str]) -> tuple[dict, list[str]]:
    """The KubeProxyConfiguration kubeadm keeps in kube-system/kube-proxy (config.conf), which kube-proxy's pods read
    and `kubeadm upgrade apply` carries over, with kubeharden's settings merged in.

    kubeadm writes every field, unset ones as "" or null (kube-proxy's own default then applies). A setting already
    there with another value is the operator's unless kubeharden wrote it (`managed`): ConfigError names it."""
    wanted = _leaves(settings or {})
    present = _leaves(current or {})
    for path, value in sorted(wanted.items()):
        unset = present.get(path) in ("", None)
        if path in present and present[path] != value and path not in managed and not unset:
            raise ConfigError(f"kube-system/kube-proxy sets {path}: {present[path]!r}, which contradicts "
                              f"kubeharden's {value!r}: change the kubelet role's variable, or the ConfigMap")
    return deep_merge(current or {}, settings or {}), sorted(wanted)


# -- kube-proxy's DaemonSet (kubeadm's addon) ------------------------------------------------------------------

KUBE_PROXY = "kube-proxy"  # the ConfigMap, the DaemonSet and its volume of that ConfigMap, as kubeadm names them


def config_volume(daemonset: dict) -> tuple[int, dict]:
    """Index and definition of kube-proxy's configuration volume in its DaemonSet (ConfigError when absent)."""
    volumes = daemonset["spec"]["template"]["spec"].get("volumes") or []
    for index, volume in enumerate(volumes):
        if (volume.get("configMap") or {}).get("name") == KUBE_PROXY:
            return index, volume
    raise ConfigError(f"kube-system/{KUBE_PROXY}: the DaemonSet mounts no volume of the {KUBE_PROXY} ConfigMap")


def mode_patch(daemonset: dict, mode: int) -> list[dict] | None:
    """A JSON patch setting the configuration volume's defaultMode (the API's default is 0644), None when set."""
    index, volume = config_volume(daemonset)
    if volume["configMap"].get("defaultMode", 0o644) == mode:
        return None
    path = f"/spec/template/spec/volumes/{index}"
    return [{"op": "test", "path": f"{path}/name", "value": volume["name"]},
            {"op": "add", "path": f"{path}/configMap/defaultMode", "value": mode}]
