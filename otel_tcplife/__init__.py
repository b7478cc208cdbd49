"""otel-tcplife: TCP session telemetry from eBPF, the classic tcplife reborn."""

__version__ = "0.1.0"
