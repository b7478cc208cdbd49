"""Spool against a plain in-memory model, under random appends, takes, acks, releases, write errors,
crashes (a new spool over the directory, the old one never closed), torn tails and flipped bytes.

What must hold, whatever the sequence:
  * take() hands out only entries appended and not acked, each intact (payload and count), oldest or
    newest first as asked, each at most once until released or until a crash;
  * a crash replays every entry not acked, except those the test destroyed; `replayed` and
    `duplicated` (dispatched, not released, before the crash) match the model exactly;
  * every destroyed entry is either counted in `corrupted_entries` (exactly as the module docstring
    says: damage, or gone from the end while the state log names it, or the first of an emptied
    segment) or was never taken and cut away whole by a truncation between entries (the loss an OS
    crash may cause);
  * `records` is the sum of the counts the model holds.
A second test fills a small spool: every record dropped to make room is counted, none in flight.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from otel_tcplife.delivery import spool as spool_module
from otel_tcplife.delivery.spool import HEADER_BYTES, Spool


def serial_of(payload: bytes) -> int:
    return int(payload.split(b":", 1)[0])


def no_space_after(written: int):
    """A _write_all that writes `written` bytes, then finds the disk full."""

    def write_all(fd, data):
        os.write(fd, data[:written])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    return write_all


class SpoolModel(RuleBasedStateMachine):
    @initialize(segment_entries=st.integers(1, 6))
    def create(self, segment_entries):
        self.directory = tempfile.mkdtemp(prefix="spool-model-")
        # An entry is at most HEADER_BYTES + 27 bytes ("39:" and 24 bytes of filler): none is too big.
        self.options = dict(max_bytes=1 << 20, segment_bytes=segment_entries * (HEADER_BYTES + 28), fsync="never",
                            log=lambda line: None)
        self.spool = Spool(self.directory, **self.options)
        self.next_serial = 0
        self.live: dict[int, tuple[bytes, int]] = {}  # serial -> (payload, count): appended, not acked
        self.taken: dict[int, int] = {}  # serial -> entry id, handed out since the last (re)open
        self.marked_dispatched: set[int] = set()  # last mark on disk is D: a duplicate if replayed
        self.ever_taken: set[int] = set()  # serials with a mark in their state log
        self.replayed: set[int] = set()  # serials written before the last (re)open

    def teardown(self):
        if hasattr(self, "spool"):
            self.spool.close()
            shutil.rmtree(self.directory)

    # Operations.

    @rule(filler=st.binary(max_size=24), count=st.integers(0, 5))
    def append(self, filler, count):
        payload = b"%d:" % self.next_serial + filler
        assert self.spool.append(payload, count) == 0
        self.live[self.next_serial] = (payload, count)
        self.next_serial += 1

    @rule(count=st.integers(1, 5), written=st.integers(0, HEADER_BYTES + 10))
    def append_on_a_full_disk(self, count, written):
        original, spool_module._write_all = spool_module._write_all, no_space_after(written)
        try:
            before = self.spool.stats()
            assert self.spool.append(b"%d:lost" % self.next_serial, count) == count
        finally:
            spool_module._write_all = original
        self.next_serial += 1
        after = self.spool.stats()
        assert after["dropped_io_error"] - before["dropped_io_error"] == count
        assert after["write_errors"] - before["write_errors"] == 1

    @rule(prefer=st.sampled_from(["oldest", "newest"]))
    def take(self, prefer):
        candidates = sorted(set(self.live) - set(self.taken))
        entry = self.spool.take(prefer)
        if not candidates:
            assert entry is None
            return
        serial = serial_of(entry.payload)
        assert serial == (candidates[0] if prefer == "oldest" else candidates[-1])
        assert (entry.payload, entry.count) == self.live[serial]
        assert entry.replayed == (serial in self.replayed)
        self.taken[serial] = entry.id
        self.marked_dispatched.add(serial)
        self.ever_taken.add(serial)

    @precondition(lambda self: self.taken)
    @rule(data=st.data())
    def ack(self, data):
        serial = data.draw(st.sampled_from(sorted(self.taken)))
        self.spool.ack(self.taken.pop(serial))
        del self.live[serial]
        self.marked_dispatched.discard(serial)

    @precondition(lambda self: self.taken)
    @rule(data=st.data())
    def release(self, data):
        serial = data.draw(st.sampled_from(sorted(self.taken)))
        self.spool.release(self.taken.pop(serial))
        self.marked_dispatched.discard(serial)

    @rule()
    def crash(self):
        self.reopen(expected_corrupted=0)

    @rule()
    def close_and_reopen(self):
        self.spool.close()
        self.reopen(expected_corrupted=0)

    @precondition(lambda self: self.segment_files())
    @rule(data=st.data())
    def flip_a_byte(self, data):
        """Bit rot in one entry, found at the next open."""
        path = data.draw(st.sampled_from(self.segment_files()))
        found = self.entries_in(path)
        if not found:
            return
        index = data.draw(st.integers(0, len(found) - 1))
        victim = found[index]
        raw = bytearray(self.read(path))
        serial = serial_of(bytes(raw[victim.offset + HEADER_BYTES:victim.end]))
        raw[data.draw(st.integers(victim.offset, victim.end - 1))] ^= 1 << data.draw(st.integers(0, 7))
        self.write(path, raw)
        at_end = index == len(found) - 1  # a damaged end counts as one entry, whatever it held
        self.destroy({serial})
        self.reopen(expected_corrupted=1 if at_end else int(serial in self.was_live))

    @precondition(lambda self: self.segment_files())
    @rule(data=st.data())
    def truncate_the_last_segment(self, data):
        """A crash mid-append (or an OS crash losing the last writes): the newest segment is cut short."""
        path = self.segment_files()[-1]
        raw = self.read(path)
        cut = data.draw(st.integers(0, max(0, len(raw) - 1)))
        found = self.entries_in(path)
        first_id = int(os.path.basename(path)[:-4])
        self.write(path, raw[:cut])
        destroyed = {serial_of(raw[e.offset + HEADER_BYTES:e.end]): e.id for e in found if e.end > cut}
        # Known lost: the live ones the state log names, and an emptied segment's first entry.
        known = {s for s, i in destroyed.items() if s in self.live and (s in self.ever_taken or
                                                                        (cut == 0 and i == first_id))}
        self.destroy(destroyed)
        whole_before_cut = max((e.end for e in found if e.end <= cut), default=0)
        torn = cut > whole_before_cut  # torn bytes left at the end: at least one entry counted
        self.reopen(expected_corrupted=max(int(torn), len(known)))

    # Checks.

    @invariant()
    def records_match(self):
        assert self.spool.stats()["records"] == sum(count for _, count in self.live.values())

    def reopen(self, expected_corrupted):
        """A new spool over the directory; the old one is abandoned (closed or not) as by kill -9."""
        new = Spool(self.directory, **self.options)
        self.spool._abandon()
        self.spool = new
        stats = new.stats()
        assert stats["corrupted_entries"] == expected_corrupted
        assert stats["replayed"] == sum(count for _, count in self.live.values())
        assert stats["duplicated"] == sum(self.live[s][1] for s in self.marked_dispatched & set(self.live))
        self.taken.clear()
        self.replayed = set(self.live)

    def destroy(self, serials):
        """The test destroyed these entries on disk: they are lost, whether counted or not."""
        self.was_live = set(self.live)
        for serial in serials:
            self.live.pop(serial, None)
            self.marked_dispatched.discard(serial)

    def segment_files(self):
        return sorted(os.path.join(self.directory, n) for n in os.listdir(self.directory) if n.endswith(".seg"))

    @classmethod
    def entries_in(cls, path):
        return spool_module._scan(cls.read(path), int(os.path.basename(path)[:-4]), 2**64)[0]

    @staticmethod
    def read(path):
        with open(path, "rb") as f:
            return f.read()

    @staticmethod
    def write(path, raw):
        with open(path, "wb") as f:
            f.write(raw)


SpoolModel.TestCase.settings = settings(max_examples=100, stateful_step_count=40, deadline=None,
                                        suppress_health_check=[HealthCheck.too_slow])
test_spool_against_model = SpoolModel.TestCase


OPERATIONS = st.lists(st.one_of(
    st.tuples(st.just("append"), st.integers(0, 60), st.integers(1, 5)),  # payload size, count
    st.tuples(st.just("take"), st.sampled_from(["oldest", "newest"])),
    st.tuples(st.just("ack"), st.integers(0, 10)),  # which of the entries in flight
    st.tuples(st.just("release"), st.integers(0, 10)),
), max_size=60)


@settings(max_examples=100, deadline=None)
@given(operations=OPERATIONS, policy=st.sampled_from(["drop_oldest", "drop_newest"]),
       max_entries=st.integers(4, 12))
def test_a_full_spool_counts_every_record_it_drops(operations, policy, max_entries):
    """Conservation under a small max_bytes: appended == acked + dropped + still in the spool; an
    entry in flight is never evicted; drop_newest never drops an entry already in the spool."""
    directory = tempfile.mkdtemp(prefix="spool-full-")
    try:
        spool = Spool(directory, max_bytes=max_entries * (HEADER_BYTES + 20), full_policy=policy, fsync="never",
                      log=lambda line: None)
        appended = acked = returned = serial = 0
        in_flight: list = []
        stored: dict[int, int] = {}  # serial -> count of the entries appended and not acked
        for op, *args in operations:
            if op == "append":
                size, count = args
                dropped = spool.append(b"%d:" % serial + b"x" * size, count)
                appended += count
                returned += dropped
                if policy == "drop_newest":
                    assert dropped in (0, count)  # only ever the new entry
                if not (policy == "drop_newest" and dropped):
                    stored[serial] = count
                serial += 1
            elif op == "take":
                entry = spool.take(args[0])
                if entry is not None:
                    in_flight.append(entry)
            elif in_flight:
                entry = in_flight.pop(args[0] % len(in_flight))
                if op == "ack":
                    spool.ack(entry.id)
                    acked += entry.count
                    del stored[serial_of(entry.payload)]
                else:
                    spool.release(entry.id)
            s = spool.stats()
            assert s["bytes"] <= spool.max_bytes
            assert s["dropped_full"] == returned
            assert appended == acked + s["dropped_full"] + s["records"]
        for entry in in_flight:  # never evicted while in flight: they can be given back
            spool.release(entry.id)
        left = {serial_of(e.payload): e.count for e in iter(spool.take, None)}
        assert sum(left.values()) == spool.stats()["records"]
        assert {serial_of(e.payload) for e in in_flight} <= set(left)
        if policy == "drop_newest":
            assert left == stored  # nothing that went in was dropped
        else:
            assert left.items() <= stored.items()
        spool.close()
    finally:
        shutil.rmtree(directory)
