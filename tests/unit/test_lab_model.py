import pytest

from kubeharden.cli import build_parser
from kubeharden.lab.errors import LabError
from kubeharden.lab.image import ImageSpec
from kubeharden.lab.lab import Lab, Topology


@pytest.mark.parametrize(("topology", "message"), [
    (Topology(control_planes=2), "--control-planes must be 1, 3 or 5"),
    (Topology(workers=21), "--workers must be between 0 and 20"),
    (Topology(etcd="external"), "--etcd must be one of static, host"),
    (Topology(debian="11"), "unsupported Debian release '11'"),
])
def test_bad_topologies_are_refused_with_the_option_named(topology, message):
    with pytest.raises(LabError, match=message):
        topology.validate()


def test_node_names_follow_roles():
    assert Topology(control_planes=3, workers=2).node_names() == [
        ("cp1", "control-plane"), ("cp2", "control-plane"), ("cp3", "control-plane"), ("w1", "worker"),
        ("w2", "worker")]


def test_image_tag_depends_on_release_and_is_stable():
    assert ImageSpec("12").tag == ImageSpec("12").tag
    assert ImageSpec("12").tag != ImageSpec("13").tag
    assert ImageSpec("12").tag.startswith("kubeharden-node:debian12-")


def test_lab_names_are_restricted():
    with pytest.raises(LabError, match="letters, digits and dashes"):
        Lab("bad name; rm -rf /")


def test_cli_parses_lab_up():
    args = build_parser().parse_args(["lab", "up", "--control-planes", "3", "--etcd", "host"])
    assert (args.control_planes, args.workers, args.etcd) == (3, None, "host")


def test_missing_debootstrap_says_how_to_install_it(monkeypatch):
    from kubeharden.lab import image

    monkeypatch.setattr(image.shutil, "which", lambda name: None)
    with pytest.raises(LabError, match=r"apt-get install -y debootstrap"):
        image._require_debootstrap()


def test_missing_docker_engine_says_how_to_get_one(monkeypatch):
    from kubeharden.lab import docker

    monkeypatch.setattr(docker.shutil, "which", lambda name: None)
    with pytest.raises(LabError, match=r"apt-get install -y docker\.io"):
        docker.require_engine()


def test_a_lab_from_before_real_kubernetes_is_told_apart(tmp_path):
    """Its state has no release (its nodes hold imitation files): loading it says to take it down, never reuses it."""
    from kubeharden.lab.lab import LabState

    path = tmp_path / "old" / ".lab" / "state.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"name": "old", "topology": {"control_planes": 1, "workers": 1, "etcd": "static", '
                    '"debian": "12", "cert_days": 365}, "network": "n", "subnet": "172.30.0.0/16", '
                    '"image": "kubeharden-node:debian12-0", "nodes": []}')
    with pytest.raises(LabError, match=r"before real Kubernetes .* run `kubeharden lab down --name old`"):
        LabState.load(path)


def test_down_tries_again_when_the_engine_missed_a_containers_exit(tmp_path, monkeypatch):
    """Seen in CI: `docker rm -f` refused ("did not receive an exit event") while the engine was loaded; the
    container ended anyway and a second attempt removed it. Four refusals in a row are an error naming the last."""
    import subprocess

    from kubeharden.lab import lab as lab_module

    running = {"c1", "c2"}
    refusals = iter([True])
    calls = []

    def run(*args, check=True, input=None):
        calls.append(args)
        if args[0] == "rm" and next(refusals, False):
            return subprocess.CompletedProcess(args, 1, "", "tried to kill container, but did not receive an exit "
                                                            "event")
        if args[0] == "rm":
            running.difference_update(args[3:])
        return subprocess.CompletedProcess(args, 0, "", "")

    monkeypatch.setattr(lab_module.docker, "require_engine", lambda: None)
    monkeypatch.setattr(lab_module.docker, "list_ids",
                        lambda kind, label: sorted(running) if kind == "container" else [])
    monkeypatch.setattr(lab_module.docker, "run", run)
    monkeypatch.setattr(lab_module, "REMOVE_RETRY_SECONDS", 0)
    monkeypatch.setattr(lab_module, "thaw", lambda container: [])
    lab = lab_module.Lab("flaky", tmp_path, log=lambda line: None)
    assert lab.down(quiet=True) == 2 and not running
    assert [c[0] for c in calls] == ["rm", "rm"]
    running.update({"c3"})
    refusals = iter([True] * 4)
    with pytest.raises(LabError, match="docker rm -f failed 4 times: tried to kill container"):
        lab.down(quiet=True)


def test_down_thaws_the_frozen_cgroups_a_node_left(tmp_path):
    """A pod cgroup runc left FROZEN inside a node keeps the kernel from ending it: every frozen one is thawed."""
    from kubeharden.lab.lab import thaw

    node = tmp_path / "284610ad346f775f" / "kubepods.slice"
    (node / "pod-a").mkdir(parents=True)
    (node / "pod-b").mkdir()
    (node / "pod-a" / "freezer.state").write_text("FROZEN\n")
    (node / "pod-b" / "freezer.state").write_text("THAWED\n")
    (tmp_path / "99other" / "x").mkdir(parents=True)
    (tmp_path / "99other" / "x" / "freezer.state").write_text("FROZEN\n")
    assert thaw("284610ad346f", tmp_path) == [node / "pod-a" / "freezer.state"]
    assert (node / "pod-a" / "freezer.state").read_text() == "THAWED"
    assert (tmp_path / "99other" / "x" / "freezer.state").read_text() == "FROZEN\n"  # another container's
