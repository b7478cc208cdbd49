"""The deployment examples are valid as written, least-privilege, and agree with the code.

The capabilities granted in the systemd unit, the DaemonSet and the Containerfile are checked
against otel_tcplife.probe.preflight.CAPABILITIES, the one list in the code; the install path
against the Makefile's; the manifests against the Kubernetes schemas.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from otel_tcplife import __version__
from otel_tcplife.probe.preflight import CAPABILITIES

from ..support import ROOT

DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "otel-tcplife.service"
CONTAINERFILE = DEPLOY / "Containerfile"
KUBERNETES = DEPLOY / "kubernetes" / "otel-tcplife.yaml"
COLLECTOR = DEPLOY / "collector" / "otel-collector.yaml"
FLUENT_BIT = DEPLOY / "fluent-bit"
AGENT = "/opt/otel-tcplife/bin/otel-tcplife"  # make install's default PREFIX, and what deploy/ runs
# systemd-analyze security's bands (src/analyze/analyze-security.c): below 5.0 is OK or better.
OK_BANDS = ("PERFECT", "SAFE", "OK")


def unit_settings(path: Path = UNIT) -> dict[str, dict[str, list[str]]]:
    """A systemd unit file as {section: {key: [value of each assignment, in order]}}."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    logical = ""
    for line in path.read_text().splitlines():
        if not logical and line.lstrip().startswith(("#", ";")):
            continue
        logical += line
        if logical.endswith("\\"):  # a continuation line
            logical = logical[:-1] + " "
            continue
        text, logical = logical.strip(), ""
        if not text:
            continue
        if text.startswith("[") and text.endswith("]"):
            current = sections.setdefault(text[1:-1], {})
            continue
        key, _, value = text.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def unit_list(key: str) -> list[str]:
    """A list setting as systemd reads it: assignments add up; an empty one resets."""
    items: list[str] = []
    for value in unit_settings()["Service"].get(key, []):
        items = items + value.split() if value else []
    return items


def unit_comments() -> str:
    return "\n".join(line for line in UNIT.read_text().splitlines() if line.lstrip().startswith("#"))


def exec_start() -> list[str]:
    (command,) = unit_settings()["Service"]["ExecStart"]
    return command.split()


def manifests() -> list[dict]:
    yaml = pytest.importorskip("yaml")
    return [doc for doc in yaml.safe_load_all(KUBERNETES.read_text()) if doc]


def daemonset() -> dict:
    (ds,) = [doc for doc in manifests() if doc["kind"] == "DaemonSet"]
    return ds


def agent_container() -> dict:
    (container,) = daemonset()["spec"]["template"]["spec"]["containers"]
    return container


def makefile_variable(name: str) -> str:
    match = re.search(rf"^{name} \??:?= *(.*)$", (ROOT / "Makefile").read_text(), re.M)
    assert match, name
    return match.group(1).strip()


# systemd


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    # Point ExecStart at this checkout's agent (verify checks that it exists), and MANPATH at
    # the man page otel_tcplife.manpage writes (verify checks Documentation=man:otel-tcplife(8)).
    unit = tmp_path / "otel-tcplife.service"
    unit.write_text(UNIT.read_text().replace(AGENT, str(ROOT / ".venv" / "bin" / "otel-tcplife")))
    (tmp_path / "man8").mkdir()
    (tmp_path / "man8" / "otel-tcplife.8").write_text(subprocess.run(
        [sys.executable, "-m", "otel_tcplife.manpage"], capture_output=True, text=True, check=True, cwd=ROOT).stdout)
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "MANPATH": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "otel-tcplife.service" not in result.stderr, result.stderr  # no warnings about our unit


def test_systemd_unit_runs_the_documented_flags():
    args = [a for a in exec_start()[1:] if a != "$OTEL_TCPLIFE_ARGS"]
    documented = ["--spool-dir", "/var/lib/otel-tcplife/spool"]  # OTEL_TCPLIFE_ARGS in the header
    from otel_tcplife.cli import build_parser
    parsed = build_parser().parse_args(args + documented)
    assert (parsed.format, parsed.stats_interval, parsed.spool_dir) == ("journald", 60, documented[1])
    # The spool is in the state directory, the only place the unit's user may write.
    service = unit_settings()["Service"]
    assert service["StateDirectory"] == ["otel-tcplife"] and documented[1].startswith("/var/lib/otel-tcplife/")


def test_systemd_unit_runs_as_a_dynamic_user_with_exactly_the_preflight_capabilities():
    service = unit_settings()["Service"]
    assert service["DynamicUser"] == ["yes"] and "User" not in service
    assert unit_list("CapabilityBoundingSet") == unit_list("AmbientCapabilities") == list(CAPABILITIES)
    assert service["NoNewPrivileges"] == ["yes"]
    for capability in CAPABILITIES:  # each one explained
        assert re.search(rf"^#\s+{capability}\s+\S", unit_comments(), re.M), capability


def test_systemd_unit_logs_every_session():
    service = unit_settings()["Service"]
    assert service["LogRateLimitIntervalSec"] == ["0"]
    assert service["SyslogIdentifier"] == ["otel-tcplife"]  # what the Fluent Bit configuration matches
    assert service["RestartPreventExitStatus"] == ["2"]  # a bad flag is not retried forever


def test_systemd_analyze_security_rates_the_unit_ok_and_every_exposure_is_explained():
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT)],
                            capture_output=True, text=True, timeout=60, env={**os.environ, "LC_ALL": "C.UTF-8"})
    assert result.returncode == 0, result.stderr
    match = re.search(r"Overall exposure level for otel-tcplife\.service: (\d+\.\d) (\w+)", result.stdout)
    assert match, result.stdout
    score, band = float(match.group(1)), match.group(2)
    assert band in OK_BANDS and score < 5.0, result.stdout
    exposed = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("✗")]
    unexplained = [name for name in exposed if name not in unit_comments()]
    assert unexplained == [], f"exposures the unit's comments do not name: {unexplained}"


# One install path, one capability list


def test_the_unit_and_the_containerfile_run_what_make_install_installs():
    assert makefile_variable("PREFIX") + "/bin/otel-tcplife" == AGENT
    assert exec_start()[0] == AGENT
    text = CONTAINERFILE.read_text()
    assert re.search(r"^RUN make install PREFIX=/opt/otel-tcplife\b", text, re.M)
    assert re.search(rf'^ENTRYPOINT \["{re.escape(AGENT)}"\]', text, re.M)
    assert re.search(r"^COPY --from=build /opt/otel-tcplife /opt/otel-tcplife$", text, re.M)


def test_the_containerfile_build_stage_has_every_package_make_install_wants():
    # Else `make install` would run apt-get inside the build.
    stages = CONTAINERFILE.read_text().split("\nFROM ")
    build = stages[0] if "AS build" in stages[0] else next(s for s in stages if "AS build" in s)
    installed = set(re.search(r"apt-get install[^\n]*\\\n(.*?)\\\n", build, re.S).group(1).split())
    assert set(makefile_variable("BASE_PACKAGES").split()) <= installed
    runtime = stages[-1]
    assert {"python3", "libbpf1", "ca-certificates"} <= set(
        re.search(r"apt-get install[^\n]*\\\n(.*?)\\\n", runtime, re.S).group(1).split())
    assert "clang" not in runtime


def test_capabilities_in_unit_daemonset_and_containerfile_are_preflight_capabilities():
    assert unit_list("AmbientCapabilities") == list(CAPABILITIES)
    capabilities = agent_container()["securityContext"]["capabilities"]
    assert capabilities["drop"] == ["ALL"]
    assert ["CAP_" + name for name in capabilities["add"]] == list(CAPABILITIES)
    label = re.search(r'^LABEL io\.github\.otel-tcplife\.capabilities="([^"]*)"$', CONTAINERFILE.read_text(), re.M)
    assert label and label.group(1).split(",") == list(CAPABILITIES)


# Kubernetes


@pytest.mark.parametrize("version", ["1.28.0", "latest"])
def test_kubernetes_manifests_pass_the_kubernetes_schemas(version):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    version = kubernetes_validate.latest_version() if version == "latest" else version
    documents = manifests()
    assert {doc["kind"] for doc in documents} == {"Namespace", "ServiceAccount", "DaemonSet"}  # no RBAC at all
    for doc in documents:
        kubernetes_validate.validate(doc, version, strict=True)  # raises on any unknown or wrong field


def test_the_daemonset_is_unprivileged_but_for_the_capabilities_and_says_why_hostpid():
    ds = daemonset()
    pod = ds["spec"]["template"]["spec"]
    context = agent_container()["securityContext"]
    assert context["privileged"] is False and context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["hostPID"] is True and "hostNetwork" not in pod and "hostIPC" not in pod
    assert re.search(r"# hostPID: .*host pid", KUBERNETES.read_text())
    (account,) = [doc for doc in manifests() if doc["kind"] == "ServiceAccount"]
    assert account["automountServiceAccountToken"] is False and pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    # Only the kernel's BTF, tracefs and the cgroup hierarchy from the host, read-only; and bpffs,
    # where the agent pins the probe.
    mounts = {m["name"]: m for m in agent_container()["volumeMounts"]}
    host_paths = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    assert host_paths == {"btf": "/sys/kernel/btf", "tracefs": "/sys/kernel/tracing", "cgroup": "/sys/fs/cgroup",
                          "bpffs": "/sys/fs/bpf"}
    assert all(mounts[name]["mountPath"] == path for name, path in host_paths.items())
    assert all(mounts[name]["readOnly"] is True for name in host_paths if name != "bpffs")
    assert "readOnly" not in mounts["bpffs"] and "--no-pin" not in agent_container()["args"]


def test_the_daemonset_names_its_node_and_runs_the_image_of_this_version():
    container = agent_container()
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert "k8s.node.name=$(NODE_NAME)" in env["OTEL_RESOURCE_ATTRIBUTES"]["value"].split(",")
    from otel_tcplife.resource import resource_env
    expanded = env["OTEL_RESOURCE_ATTRIBUTES"]["value"].replace("$(NODE_NAME)", "node-1")
    assert resource_env({"OTEL_RESOURCE_ATTRIBUTES": expanded})["k8s.node.name"] == "node-1"
    # Header values (secrets) come from a Secret, and the pod starts without one.
    headers = env["OTEL_EXPORTER_OTLP_HEADERS"]
    assert "value" not in headers and headers["valueFrom"]["secretKeyRef"]["optional"] is True
    assert container["image"].endswith(f":{__version__}")
    from otel_tcplife.cli import parse_config
    config = parse_config(container["args"] + ["--otlp-endpoint", env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"]])
    assert config.format == "none" and set(config.otlp) == {"logs", "traces"}
    resources = container["resources"]
    assert set(resources) == {"requests", "limits"} and all(set(r) == {"cpu", "memory"} for r in resources.values())


# Pipelines


def test_the_collector_configuration_receives_otlp_adds_pod_metadata_batches_and_exports():
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load(COLLECTOR.read_text())
    grpc = config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    daemonset_endpoint = {e["name"]: e.get("value") for e in agent_container()["env"]}["OTEL_EXPORTER_OTLP_ENDPOINT"]
    assert grpc.rsplit(":", 1)[1] == daemonset_endpoint.rsplit(":", 1)[1]
    association = config["processors"]["k8sattributes"]["pod_association"]
    assert [[(s["from"], s["name"]) for s in rule["sources"]] for rule in association] == [
        [("resource_attribute", "k8s.pod.uid")], [("resource_attribute", "container.id")]]
    assert "batch" in config["processors"] and "otlp" in config["exporters"]
    for signal in ("logs", "traces"):
        pipeline = config["service"]["pipelines"][signal]
        assert pipeline == {"receivers": ["otlp"], "processors": ["k8sattributes", "batch"], "exporters": ["otlp"]}


def fluent_bit_sections(path: Path) -> list[tuple[str, dict[str, list[str]]]]:
    """Fluent Bit's classic format: [SECTION] headers, then `Key value` lines; one line each."""
    sections: list[tuple[str, dict[str, list[str]]]] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if re.fullmatch(r"\[[A-Z]+\]", text):
            sections.append((text[1:-1], {}))
            continue
        match = re.fullmatch(r"(\S+)\s+(\S.*)", text)
        assert match and sections and line.startswith("    "), f"{path.name}:{number}: {line!r}"
        sections[-1][1].setdefault(match.group(1).lower(), []).append(match.group(2))
    return sections


def test_fluent_bit_reads_the_agents_journal_entries_and_forwards_them_over_otlp():
    sections = fluent_bit_sections(FLUENT_BIT / "journald.conf")
    (source,) = [s for name, s in sections if name == "INPUT"]
    assert source["name"] == ["systemd"]
    assert "SYSLOG_IDENTIFIER=" + unit_settings()["Service"]["SyslogIdentifier"][0] in source["systemd_filter"]
    assert source["systemd_filter_type"] == ["And"]
    (output,) = [s for name, s in sections if name == "OUTPUT"]
    assert output["name"] == ["opentelemetry"] and output["match"] == source["tag"]


def test_fluent_bit_reads_ndjson_with_its_parser_and_forwards_it_over_otlp():
    sections = fluent_bit_sections(FLUENT_BIT / "ndjson.conf")
    (service,) = [s for name, s in sections if name == "SERVICE"]
    (source,) = [s for name, s in sections if name == "INPUT"]
    (output,) = [s for name, s in sections if name == "OUTPUT"]
    parsers = fluent_bit_sections(FLUENT_BIT / service["parsers_file"][0])
    assert [p["name"][0] for name, p in parsers if name == "PARSER"] == source["parser"]
    (parser,) = [p for name, p in parsers if name == "PARSER"]
    assert parser["format"] == ["json"] and parser["time_key"] == ["time"]
    assert output["name"] == ["opentelemetry"] and output["match"] == source["tag"]
    assert output["logs_trace_id_message_key"] == ["trace_id"] and output["logs_span_id_message_key"] == ["span_id"]
