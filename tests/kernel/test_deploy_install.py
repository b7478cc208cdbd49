"""Installed like a product: `make install PREFIX=/opt/otel-tcplife` from what the Containerfile's
build stage copies, then the installed agent run as deploy/otel-tcplife.service runs it, and,
where systemd-nspawn exists, under a real systemd that starts that very unit.

Nothing is written to the host's /opt: each command runs in a mount namespace of its own where
a temporary directory is mounted on /opt, so the install has its real path (the venv's scripts
name /opt/otel-tcplife/bin/python) and the host stays as it was.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from otel_tcplife import __version__, manpage
from otel_tcplife.probe.preflight import CAPABILITIES, CAPABILITY_NAMES

from ..support import ROOT, row_of_one_connection
from ..unit.test_deploy import AGENT, CONTAINERFILE, UNIT
from .test_deploy_unit import DYNAMIC_USERS, as_the_unit, dynamic_uid, parse_status, the_units_flags, unit_pins

PREFIX = str(Path(AGENT).parent.parent)  # /opt/otel-tcplife
DEV_ONLY = {"pytest", "hypothesis", "rotel", "py-spy", "build", "cryptography", "kubernetes-validate"}
CAPABILITY_MASK = sum(1 << number for number, name in CAPABILITY_NAMES.items() if name in CAPABILITIES)
pytestmark = pytest.mark.slow


def in_opt(opt: Path, *argv: str) -> list[str]:
    """argv run with `opt` mounted on /opt, in a mount namespace of its own."""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", 'mount --bind "$0" /opt && exec "$@"',
            str(opt), *argv]


def copy_build_context(target: Path) -> None:
    """What the Containerfile's build stage COPYs from the checkout, and nothing else."""
    for line in CONTAINERFILE.read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            *sources, destination = line.split()[1:]
            for source in sources:  # a directory's contents into the destination, as COPY does
                if (ROOT / source).is_dir():
                    shutil.copytree(ROOT / source, target / destination,
                                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.tmp"))
                else:
                    shutil.copy2(ROOT / source, target / destination)


@pytest.fixture(scope="module")
def opt(tmp_path_factory) -> Path:
    """An /opt holding `make install PREFIX=/opt/otel-tcplife`, run twice: again over an install, it
    must succeed (an upgrade in place)."""
    base = tmp_path_factory.mktemp("install")
    source, opt = base / "src", base / "opt"
    source.mkdir()
    opt.mkdir()
    copy_build_context(source)
    for _ in range(2):
        result = subprocess.run(in_opt(opt, "make", "-C", str(source), "install", f"PREFIX={PREFIX}"),
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    opt.chmod(0o755)  # mounted on /opt: the agent's user must get through it
    return opt


def test_make_install_gives_the_agent_its_runtime_dependencies_and_its_man_page(opt):
    installed = opt / "otel-tcplife"
    version = subprocess.run(in_opt(opt, AGENT, "--version"), capture_output=True, text=True, timeout=60)
    assert version.stdout == f"otel-tcplife {__version__}\n", version.stderr
    packages = json.loads(subprocess.run([str(installed / "bin" / "python"), "-m", "pip", "list", "--format=json",
                                          "--disable-pip-version-check"], capture_output=True, text=True,
                                         check=True).stdout)
    names = {p["name"].lower() for p in packages}
    assert "otel-tcplife" in names and "grpcio" in names
    assert names & DEV_ONLY == set()
    (probe,) = installed.glob("lib/python3*/site-packages/otel_tcplife/bpf/tcplife.bpf.o")
    assert probe.read_bytes()[:4] == b"\x7fELF"
    assert (installed / "share" / "man" / "man8" / "otel-tcplife.8").read_text() == manpage.render()


@pytest.mark.parametrize("prefix", ["relative/dir", "not-a-venv"])
def test_make_install_refuses_a_prefix_it_would_spoil_with_one_line(prefix, tmp_path):
    if prefix == "not-a-venv":
        prefix = str(tmp_path / prefix)
        Path(prefix).mkdir()
        (Path(prefix) / "data").write_text("someone else's\n")
    result = subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), "install", f"PREFIX={prefix}"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    # Make's own lines, and any of its setup prerequisites', aside: one line of ours.
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("make install: ")]
    assert prefix in line
    if Path(prefix).is_absolute():
        assert [p.name for p in Path(prefix).iterdir()] == ["data"]


def test_the_installed_agent_runs_as_the_unit_runs_it(opt, traffic):
    server, port = traffic.server(name="tl-server", linger_ms=300)
    uid = dynamic_uid()
    with unit_pins(uid) as pins:
        argv = as_the_unit(list(CAPABILITIES), *the_units_flags(), "-L", str(port), "--pin-path", pins, uid=uid)
        python_m = argv.index("-m") - 1
        argv[python_m:python_m + 3] = [AGENT]  # the installed agent, not this checkout's
        _, row = row_of_one_connection(in_opt(opt, *argv), traffic, server, port)
    assert (row["process.pid"], row["thread.name"], row["network.local.port"]) == (server.pid, "tl-server", port)


# Under a real systemd: systemd-nspawn boots one in a container (/usr shared read-only with the
# host, /etc copied, its own network with only loopback) that starts deploy/otel-tcplife.service
# as written; a script inside makes one connection and collects what the unit did.
CHECK = r"""#!/bin/sh
out=/results
mount -t tracefs nodev /sys/kernel/tracing
systemctl start --no-block otel-tcplife.service
for i in $(seq 300); do
  journalctl -b -u otel-tcplife -o cat | grep -q "tracing via" && break
  systemctl is-failed -q otel-tcplife && break
  sleep 0.1
done
python3 - "$(cat $out/port)" <<'END'
import ctypes, socket, sys
port = int(sys.argv[1])
ctypes.CDLL(None).prctl(15, b"tl-server")
server = socket.create_server(("127.0.0.1", port))
client = socket.create_connection(("127.0.0.1", port))
accepted, _ = server.accept()
client.sendall(b"x" * 1000)
received = 0
while received < 1000:
    received += len(accepted.recv(4096))
accepted.close(); client.close(); server.close()
END
sleep 2
cat /proc/$(systemctl show -p MainPID --value otel-tcplife)/status > $out/status
timeout 30 systemctl stop otel-tcplife
systemctl show -p Result --value otel-tcplife > $out/result
journalctl -b -u otel-tcplife -o json > $out/journal.json
# The same sandbox, another command: what the agent's user may see of other users' processes.
sed -e 's|^ExecStart=.*|ExecStart=/bin/readlink /proc/1/exe|' -e '/^ExecStartPre=/d' /etc/systemd/system/otel-tcplife.service \
  > /etc/systemd/system/procview.service
mkdir -p /etc/systemd/system/procview.service.d
printf '[Service]\nType=oneshot\nRestart=no\nStandardOutput=file:/results/procview\n' \
  > /etc/systemd/system/procview.service.d/test.conf
systemctl daemon-reload
timeout 30 systemctl start procview.service
journalctl -b -o short > $out/boot.log
systemctl poweroff
"""


def container_root(root: Path) -> None:
    for name in ("usr/lib", "dev", "proc", "sys", "run", "tmp", "var", "opt/otel-tcplife", "results", "root"):
        (root / name).mkdir(parents=True, exist_ok=True)
    for name, target in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")):
        (root / name).symlink_to(target)
    shutil.copy2("/usr/lib/os-release", root / "usr/lib/os-release")  # nspawn looks before /usr is mounted
    shutil.copytree("/etc", root / "etc", symlinks=True, ignore_dangling_symlinks=True,
                    ignore=shutil.ignore_patterns("shadow*", "gshadow*", "ssh", "machine-id"))
    system = root / "etc/systemd/system"
    for wants in system.glob("*.wants"):  # boot nothing of the host's but what the test needs
        shutil.rmtree(wants)
    for masked in ("systemd-networkd-wait-online.service", "systemd-firstboot.service"):  # no waiting, no prompts
        (system / masked).unlink(missing_ok=True)
        (system / masked).symlink_to("/dev/null")
    shutil.copy2(UNIT, system / "otel-tcplife.service")
    (system / "otel-tcplife-test.target").write_text(
        "[Unit]\nRequires=basic.target\nAfter=basic.target\nWants=otel-tcplife-test.service\n")
    (system / "otel-tcplife-test.service").write_text(
        "[Unit]\nAfter=basic.target\n[Service]\nType=oneshot\nExecStart=/bin/sh /results/check.sh\n")


def test_systemd_starts_the_unit_as_written_and_its_sessions_reach_the_journal(opt, tmp_path):
    if shutil.which("systemd-nspawn") is None:
        pytest.skip("systemd-nspawn is not installed (Debian: systemd-container)")
    root, results = tmp_path / "root", tmp_path / "results"
    results.mkdir()
    container_root(root)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (results / "port").write_text(str(port))
    (results / "check.sh").write_text(CHECK)
    # An endpoint where nothing listens: the sessions go to the spool in the state directory.
    (root / "etc/default").mkdir(exist_ok=True)
    (root / "etc/default/otel-tcplife").write_text(
        f"OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:9\n"
        f"OTEL_TCPLIFE_ARGS=-L {port} --spool-dir /var/lib/otel-tcplife/spool\n")
    capabilities = ",".join(CAPABILITIES)
    boot = subprocess.run(
        ["systemd-nspawn", "--quiet", "--directory", str(root), "--bind-ro=/usr", "--register=no", "--keep-unit",
         "--private-network", f"--capability={capabilities}", "--system-call-filter=bpf perf_event_open",
         f"--bind={results}:/results", f"--bind-ro={opt / 'otel-tcplife'}:{PREFIX}",
         "--boot", "--", "systemd.unit=otel-tcplife-test.target", "systemd.show_status=0",
         "systemd.firstboot=off"],
        capture_output=True, text=True, timeout=240)
    log = (results / "boot.log").read_text() if (results / "boot.log").exists() else boot.stdout[-5000:]
    assert (results / "journal.json").exists(), log
    entries = [json.loads(line) for line in (results / "journal.json").read_text().splitlines()]
    messages = [e["MESSAGE"] for e in entries if isinstance(e.get("MESSAGE"), str)]
    assert any("tracing via" in m for m in messages), log
    # No /sys/fs/bpf in the container: the unit starts all the same, and the agent says it cannot pin.
    assert any("running without pins" in m for m in messages), log
    # Sessions as the unit's --format journald sends them: native entries with typed fields.
    sessions = [e for e in entries if e.get("OTEL_EVENT_NAME") == "tcplife.session"]
    (row,) = [e for e in sessions if e["NETWORK_LOCAL_PORT"] == str(port)]
    assert (row["THREAD_NAME"], row["TCPLIFE_BYTES_RECEIVED"], row["_TRANSPORT"]) == ("tl-server", "1000", "journal")
    assert {e["SYSLOG_IDENTIFIER"] for e in entries if e.get("_TRANSPORT") == "stdout"} == {"otel-tcplife"}
    # The unit's sandbox as systemd set it up: a dynamic user, exactly the capabilities, seccomp.
    status = parse_status((results / "status").read_text())
    assert int(status["Uid"].split()[0]) in DYNAMIC_USERS
    assert {key: int(status[key], 16) for key in ("CapEff", "CapPrm", "CapBnd", "CapAmb")} == dict.fromkeys(
        ("CapEff", "CapPrm", "CapBnd", "CapAmb"), CAPABILITY_MASK)
    assert (status["NoNewPrivs"], status["Seccomp"]) == ("1", "2")
    # Stopped with SIGTERM: a flush, the stats line (the session spooled), exit 0.
    stats = json.loads([m for m in messages if m.startswith('{"sessions_observed"')][-1])
    assert stats["logs"]["spooled"] >= 1 and (results / "result").read_text().strip() == "success"
    # ProtectProc=invisible hides other users' processes, but not from CAP_SYS_PTRACE.
    procview = (results / "procview").read_text()
    assert re.fullmatch(r"/\S+/systemd\n", procview), procview

