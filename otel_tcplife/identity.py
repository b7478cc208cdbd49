"""Whose session it is: the Resource of the traced process, as OpenTelemetry SDKs and eBPF
instrumentations report it, not the agent's.

    service.name            the process's OTEL_SERVICE_NAME, else service.name in its
                            OTEL_RESOURCE_ATTRIBUTES, else unknown_service:<process.executable.name>
    ...                     the other keys of its OTEL_RESOURCE_ATTRIBUTES
    process.pid, process.executable.name
    container.id            from its cgroup path (docker, containerd/CRI, CRI-O, podman; v1 and v2 forms)
    k8s.pod.uid             from a kubepods cgroup path
    host.*, os.type, ...    the agent's own Resource (its OTEL_RESOURCE_ATTRIBUTES, e.g. k8s.node.name),
                            but not its service.* keys nor its service.instance.id

The kernel gives what only it knows while the process lives: the pid, the process's start time
(against pid reuse) and its cgroup id. The rest is read from /proc, once per process (cached by
pid and start time), and once per cgroup. A process gone before it was looked up, or whose pid was
reused since, gets only what the kernel gave (process.pid, container.id and k8s.pod.uid through the
cgroup id) and service.name unknown_service:<comm>: nothing from another process, nothing false.

Reading another user's /proc/PID/environ needs CAP_SYS_PTRACE: without it those processes get
unknown_service (preflight warns once at start).
"""

from __future__ import annotations

import os
import re
import time
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping

from .abi import comm_text
from .enrich import ProcessNames, system_text
from .resource import parse_resource_attributes

Resource = tuple[tuple[str, object], ...]  # attributes in output order; hashable, so outputs group by it

CACHE_LIMIT = 8192
ENVIRON_LIMIT = 1 << 20  # bytes of /proc/PID/environ read at most
CGROUP_RESCAN_SECONDS = 1.0  # an unknown cgroup id rescans the hierarchy at most this often
TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")

# A container's id: the last path component naming one. systemd driver: <runtime>-<id>.scope;
# cgroupfs driver: /docker/<id>, /kubepods/<qos>/pod<uid>/<id>, /machine.slice/libpod-<id>.scope.
CONTAINER_ID = re.compile(r"^(?:(?:docker|cri-containerd|crio|libpod)-)?([0-9a-f]{64})(?:\.scope)?$")
# A pod's uid: kubepods-<qos>-pod<uid, '_' for '-'>.slice (systemd) or pod<uid> (cgroupfs).
POD_UID = re.compile(r"^(?:kubepods(?:-[a-z]+)?-)?pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}"
                     r"[-_][0-9a-f]{12})(?:\.slice)?$")


def container_facts(cgroup_path: str) -> dict[str, str]:
    """container.id and k8s.pod.uid named by a cgroup path, where it names them."""
    facts = {}
    for part in reversed(cgroup_path.split("/")):
        if "container.id" not in facts and (match := CONTAINER_ID.match(part)):
            facts["container.id"] = match.group(1)
        elif "k8s.pod.uid" not in facts and "kubepods" in cgroup_path and (match := POD_UID.match(part)):
            facts["k8s.pod.uid"] = match.group(1).replace("_", "-")
    return facts


def cgroup2_mount(mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid hosts)."""
    try:
        with open(mountinfo) as f:
            for line in f:
                fields = line.split()
                if " - cgroup2 " in line:
                    return fields[4]
    except OSError:
        pass
    return None


class CgroupPaths:
    """cgroup v2 id -> path. A cgroup's id is the inode number of its directory in the v2 hierarchy
    (what bpf_get_current_cgroup_id() returns), so one walk of the hierarchy maps them all; an id not
    found rescans it, at most once every CGROUP_RESCAN_SECONDS."""

    def __init__(self, root: str | None = None) -> None:
        self.root = root if root is not None else cgroup2_mount()
        self._paths: dict[int, str] = {}
        self._scanned = float("-inf")

    def path(self, cgroup_id: int) -> str | None:
        path = self._paths.get(cgroup_id)
        if path is None and self.root and time.monotonic() - self._scanned >= CGROUP_RESCAN_SECONDS:
            self._scan()
            path = self._paths.get(cgroup_id)
        return path

    def _scan(self) -> None:
        self._scanned = time.monotonic()
        paths = {}
        for directory, _, _ in os.walk(self.root):
            try:
                paths[os.stat(directory).st_ino] = "/" + os.path.relpath(directory, self.root).lstrip(".")
            except OSError:
                continue  # removed meanwhile
        self._paths = paths


def read_environ(proc: str, pid: int) -> dict[bytes, bytes] | None:
    """The process's initial environment (bounded), or None when it cannot be read."""
    try:
        with open(f"{proc}/{pid}/environ", "rb") as f:
            data = f.read(ENVIRON_LIMIT)
    except OSError:
        return None
    return dict(entry.partition(b"=")[::2] for entry in data.split(b"\0") if entry)


def start_ticks(proc: str, pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), or None."""
    try:
        with open(f"{proc}/{pid}/stat", "rb") as f:
            stat = f.read(4096)
    except OSError:
        return None
    # The comm (field 2) may hold spaces and parentheses: count fields after its last ')'.
    return int(stat[stat.rindex(b")") + 2:].split()[19])


class ProcessResources:
    """The Resource of the process that owns a session, cached per process."""

    def __init__(self, agent: Mapping[str, object], names: ProcessNames | None = None, proc: str = "/proc",
                 cgroups: CgroupPaths | None = None) -> None:
        # What every Resource shares: the agent's own attributes, but not those naming the agent.
        self.shared = tuple((k, v) for k, v in agent.items()
                            if not k.startswith("service.") and not k.startswith("process."))
        self.names = names or ProcessNames(proc)
        self.proc = proc
        self.cgroups = cgroups or CgroupPaths()
        self._resources: dict[tuple, Resource] = {}
        self._containers: dict[int, dict[str, str]] = {}
        self._by_owner: dict[tuple, Resource] = {}  # an owner as events hold it -> its Resource

    def group(self, events: list[tuple], owners: Iterable[tuple]) -> list[tuple[Resource, list[tuple]]]:
        """A batch's events grouped by the Resource of their owner, in order of first appearance.
        owners: per event, (pid, raw comm[, start_ns, cgroup_id]) as the event holds them; each
        distinct one is resolved once, and cached."""
        by_owner: defaultdict[tuple, list[tuple]] = defaultdict(list)
        # The per-event work, one lookup and one append, runs in C (map), not in a Python loop.
        deque(map(list.append, map(by_owner.__getitem__, owners), events), maxlen=0)
        groups: dict[Resource, list[tuple]] = {}
        for owner, owned in by_owner.items():
            resource = self.owner_resource(owner)
            if resource in groups:  # owners can share one (threads of a process with names of their own)
                groups[resource] += owned
            else:
                groups[resource] = owned
        return list(groups.items())

    def owner_resource(self, owner: tuple) -> Resource:
        """The Resource of an owner as an event holds it: (pid, raw comm[, start_ns, cgroup_id])."""
        resource = self._by_owner.get(owner)
        if resource is None:
            if len(self._by_owner) >= CACHE_LIMIT:
                self._by_owner.clear()
            resource = self._by_owner[owner] = self.resource(owner[0], comm_text(owner[1]), *owner[2:])
        return resource

    def resource(self, pid: int, comm: str, start_ns: int = 0, cgroup_id: int = 0) -> Resource:
        """start_ns: the process's start (boot-time ns, as the kernel's task start_boottime), 0 if
        unknown; cgroup_id: its cgroup v2 id, 0 if unknown."""
        key = (pid, comm, start_ns, cgroup_id)
        resource = self._resources.get(key)
        if resource is None:
            if len(self._resources) >= CACHE_LIMIT:
                self._resources.clear()
            resource = self._resources[key] = self._resolve(pid, comm, start_ns, cgroup_id)
        return resource

    def _resolve(self, pid: int, comm: str, start_ns: int, cgroup_id: int) -> Resource:
        alive = self._same_process(pid, start_ns)
        environ = read_environ(self.proc, pid) if alive else None
        attributes: dict[str, object] = {}
        if environ:
            text = system_text(environ.get(b"OTEL_RESOURCE_ATTRIBUTES", b""))
            attributes.update(parse_resource_attributes(text, strict=False))
            if service_name := system_text(environ.get(b"OTEL_SERVICE_NAME", b"")):
                attributes["service.name"] = service_name
        executable = self.names.executable_name(pid, comm) if alive else comm
        attributes.setdefault("service.name", f"unknown_service:{executable}")
        attributes["process.pid"] = pid
        attributes["process.executable.name"] = executable
        attributes.update(self._container(pid, cgroup_id, alive))
        # service.name first, as SDKs write it; the agent's shared attributes last, and they win.
        ordered = {"service.name": attributes.pop("service.name"), **attributes}
        ordered.update(self.shared)
        return tuple(ordered.items())

    def _same_process(self, pid: int, start_ns: int) -> bool:
        """Whether /proc/PID is still the process the kernel saw (not gone, pid not reused)."""
        ticks = start_ticks(self.proc, pid)
        if ticks is None:
            return False
        return not start_ns or ticks == start_ns * TICKS_PER_SECOND // 1_000_000_000

    def _container(self, pid: int, cgroup_id: int, alive: bool) -> dict[str, str]:
        if cgroup_id:
            facts = self._containers.get(cgroup_id)
            if facts is None:
                path = self.cgroups.path(cgroup_id)
                if path is None:
                    return {}  # not found (yet): look again next time
                if len(self._containers) >= CACHE_LIMIT:
                    self._containers.clear()
                facts = self._containers[cgroup_id] = container_facts(path)
            return facts
        if not alive:
            return {}
        try:  # no cgroup id from the kernel: the process's own v2 (or v1) paths
            with open(f"{self.proc}/{pid}/cgroup") as f:
                lines = f.read(65536).splitlines()
        except OSError:
            return {}
        facts: dict[str, str] = {}
        for line in lines:
            facts = container_facts(line.partition(":")[2].partition(":")[2]) or facts
        return facts
