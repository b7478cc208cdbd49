"""ThreadedWriter: stdout written by a thread of its own, in order, bounded, errors raised to the caller."""

from __future__ import annotations

import io
import os
import threading

import pytest

from otel_tcplife.output.writer import ThreadedWriter


def test_chunks_arrive_in_order_and_close_writes_everything():
    read_fd, write_fd = os.pipe()
    received = bytearray()

    def read_all() -> None:
        while data := os.read(read_fd, 65536):
            received.extend(data)
        os.close(read_fd)

    reader = threading.Thread(target=read_all)
    reader.start()
    with open(write_fd, "wb") as stream:
        writer = ThreadedWriter(stream, max_chunks=2)  # a pipe of 64 KiB and 2 chunks: writelines waits
        chunks = [f"{i:06d}\n".encode() * 1000 for i in range(200)]
        for i in range(0, 200, 10):
            writer.writelines(chunks[i:i + 10])
        writer.close()
    reader.join()
    assert bytes(received) == b"".join(chunks)


class Failing(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        raise BrokenPipeError("reader gone")


def test_a_write_error_is_raised_in_the_callers_thread_once():
    writer = ThreadedWriter(Failing())
    writer.writelines([b"x\n"])
    with pytest.raises(BrokenPipeError):
        writer.close()
    writer.close()  # raised once: a second close is quiet


def test_the_next_writelines_raises_a_write_error():
    writer = ThreadedWriter(Failing())
    writer.writelines([b"x\n"])
    for _ in range(500):  # until the thread has failed the write (it keeps running)
        if writer._error is not None:
            break
        threading.Event().wait(0.01)
    with pytest.raises(BrokenPipeError):
        writer.writelines([b"y\n"])
    writer.close()
