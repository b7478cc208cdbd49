"""Holds tcplife.bpf.o, compiled from bpf/ by the build (bpf/build.py)."""
