"""The traced process's Resource: its OTEL environment, its container and pod from real cgroups,
and nothing false once its pid is gone or reused."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from otel_tcplife.enrich import ProcessNames
from otel_tcplife.identity import CgroupPaths, ProcessResources, cgroup2_mount, container_facts

CID = "0123456789abcdef" * 4
POD = "4f3c2b1a-0d9e-4c8b-a7f6-e5d4c3b2a190"
AGENT = {"service.name": "otel-tcplife", "service.instance.id": "x", "host.name": "node-1",
         "k8s.node.name": "node-1", "os.type": "linux"}


@pytest.mark.parametrize("path,facts", [
    (f"/system.slice/docker-{CID}.scope", {"container.id": CID}),
    (f"/docker/{CID}", {"container.id": CID}),
    (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{POD.replace('-', '_')}.slice/"
     f"cri-containerd-{CID}.scope", {"container.id": CID, "k8s.pod.uid": POD}),
    (f"/kubepods.slice/kubepods-pod{POD.replace('-', '_')}.slice/crio-{CID}.scope",
     {"container.id": CID, "k8s.pod.uid": POD}),
    (f"/kubepods/burstable/pod{POD}/{CID}", {"container.id": CID, "k8s.pod.uid": POD}),
    (f"/machine.slice/libpod-{CID}.scope", {"container.id": CID}),
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD.replace('-', '_')}.slice",
     {"k8s.pod.uid": POD}),
    # Not containers: the host's own cgroups, and a 32-hex v1 memory cgroup name.
    ("/user.slice/user-0.slice/session-1.scope", {}),
    ("/process_api/2841ca0cbf5ffb717de3783af3c2fcc3", {}),
    (f"/pod{POD}", {}),  # a pod uid outside kubepods is not one
])
def test_container_facts_from_every_runtimes_path_form(path, facts):
    assert container_facts(path) == facts


def test_the_agents_attributes_are_shared_but_not_its_own_service(tmp_path):
    resources = ProcessResources(AGENT, proc=str(tmp_path), cgroups=CgroupPaths(root=str(tmp_path)))
    resource = dict(resources.resource(4242, "curl"))
    # /proc/4242 is not there: gone before it was looked up.
    assert resource == {"service.name": "unknown_service:curl", "process.pid": 4242,
                        "process.executable.name": "curl", "host.name": "node-1", "k8s.node.name": "node-1",
                        "os.type": "linux"}


@pytest.fixture
def cgroup_dir():
    """A cgroup v2 directory named as containerd under kubelet names it; removed at the end."""
    root = cgroup2_mount()
    if root is None or os.geteuid() != 0:
        pytest.skip("needs root and a cgroup v2 hierarchy")
    pod = str(uuid.uuid4())
    path = os.path.join(root, f"tl-kubepods-{pod[:8]}.slice",
                        f"kubepods-besteffort-pod{pod.replace('-', '_')}.slice", f"cri-containerd-{CID}.scope")
    os.makedirs(path)
    yield root, path, pod
    for directory in (path, os.path.dirname(path), os.path.dirname(os.path.dirname(path))):
        os.rmdir(directory)


def test_a_live_process_in_a_container_with_its_own_otel_environment(cgroup_dir):
    root, path, pod = cgroup_dir
    env = {**os.environ, "OTEL_SERVICE_NAME": "checkout",
           "OTEL_RESOURCE_ATTRIBUTES": "service.namespace=shop,service.version=1.2%2C3,deployment.environment.name=prod,"
                                       "host.name=liar,bad-entry"}
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE, env=env)
    try:
        with open(os.path.join(path, "cgroup.procs"), "w") as f:
            f.write(str(proc.pid))
        resources = ProcessResources(AGENT, names=ProcessNames())
        cgroup_id = os.stat(path).st_ino
        resource = resources.resource(proc.pid, "python3", cgroup_id=cgroup_id)
        # Without a cgroup id from the kernel: the same, from /proc/PID/cgroup.
        assert dict(ProcessResources(AGENT).resource(proc.pid, "python3")) == dict(resource)
    finally:
        proc.stdin.close()
        proc.wait()
    assert resource[0] == ("service.name", "checkout")
    attributes = dict(resource)
    assert attributes == {
        "service.name": "checkout", "service.namespace": "shop", "service.version": "1.2,3",
        "deployment.environment.name": "prod", "host.name": "node-1", "process.pid": proc.pid,
        "process.executable.name": os.path.basename(os.path.realpath(sys.executable)),
        "container.id": CID, "k8s.pod.uid": pod, "k8s.node.name": "node-1", "os.type": "linux"}
    # Gone now: a cached process keeps its Resource; the cgroup id alone still names the container.
    assert resources.resource(proc.pid, "python3", cgroup_id=cgroup_id) == resource
    late = dict(ProcessResources(AGENT).resource(proc.pid, "python3", cgroup_id=cgroup_id))
    assert late["service.name"] == "unknown_service:python3"
    assert (late["container.id"], late["k8s.pod.uid"]) == (CID, pod)


def test_a_reused_pid_is_not_taken_for_the_process_the_kernel_saw():
    me = os.getpid()
    with open(f"/proc/{me}/stat", "rb") as f:
        ticks = int(f.read().rsplit(b")", 1)[1].split()[19])
    ns_per_tick = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    same = dict(ProcessResources(AGENT).resource(me, "pytest", start_ns=ticks * ns_per_tick + 1))
    other = dict(ProcessResources(AGENT).resource(me, "pytest", start_ns=(ticks + 7) * ns_per_tick))
    assert same["process.executable.name"] != "pytest"  # read from /proc/PID/exe
    assert (other["process.executable.name"], other["service.name"]) == ("pytest", "unknown_service:pytest")
