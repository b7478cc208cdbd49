"""The kernel probe: loads bpf/tcplife.bpf.c and reads its closed-session events."""

from .core import ATTACH_MODES, CoreProbe, ProbeSettings

__all__ = ["ATTACH_MODES", "CoreProbe", "ProbeSettings"]
