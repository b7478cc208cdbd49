"""Spool: order, crash recovery (the Collector's reopen-without-close technique), damage, full policies,
write errors through the fault-injection seam, fsync policies, and the directory checks."""

from __future__ import annotations

import errno
import os
import stat
import threading

import pytest

from otel_tcplife.delivery import spool as spool_module
from otel_tcplife.delivery.spool import HEADER_BYTES, Spool, SpoolDirectoryError, check_directory

from ..tinyfs import fill_up, tiny_tmpfs


class Clock:
    def __init__(self, now: float = 1_700_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def open_spool(directory, logs=None, **options) -> Spool:
    options.setdefault("max_bytes", 1 << 20)
    options.setdefault("fsync", "never")
    return Spool(str(directory), log=(logs.append if logs is not None else lambda line: None), **options)


def payload(n: int, size: int = 20) -> bytes:
    return f"entry-{n}:".encode().ljust(size, b".")


def fill(spool: Spool, count: int, start: int = 0, size: int = 20) -> None:
    for n in range(start, start + count):
        assert spool.append(payload(n, size), n + 1) == 0


def take_all(spool: Spool, prefer: str = "oldest") -> list:
    return list(iter(lambda: spool.take(prefer), None))


def segments(directory) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name.endswith(".seg"))


def entries_in(path) -> list:
    """The valid entries of a segment file, as the spool's scanner sees them."""
    data = path.read_bytes()
    return spool_module._scan(data, int(os.path.basename(path)[:-4]), 2**64)[0]


def test_entries_come_out_in_order_with_their_contents(tmp_path):
    clock = Clock()
    spool = open_spool(tmp_path, clock=clock)
    fill(spool, 3)
    clock.now += 2.5
    first = spool.take()
    assert (first.id, first.payload, first.count, first.replayed) == (0, payload(0), 1, False)
    assert first.created_ns == 1_700_000_000 * 10**9
    assert spool.take("newest").payload == payload(2)
    assert spool.take().payload == payload(1)
    assert spool.take() is None
    s = spool.stats()
    assert (s["records"], s["bytes"], s["oldest_age_s"]) == (6, 3 * (HEADER_BYTES + 20), 2.5)
    spool.close()


def test_ack_release_and_take_after_close(tmp_path):
    spool = open_spool(tmp_path)
    fill(spool, 3)
    a, b = spool.take(), spool.take()
    spool.release(b.id)
    spool.release(b.id)  # not dispatched any more: ignored
    spool.release(12345)
    spool.ack(a.id)
    spool.ack(a.id)  # already done: ignored
    assert [e.id for e in take_all(spool)] == [1, 2]  # the released entry comes back, in order
    assert spool.stats()["records"] == 2 + 3
    spool.close()
    assert spool.take() is None
    spool.ack(1)  # ignored after close
    with pytest.raises(ValueError):
        spool.append(b"late", 1)
    assert spool.stats()["records"] == 5  # still readable after close


def test_crash_replays_what_was_not_acked_and_counts_possible_duplicates(tmp_path):
    """The Collector's technique: a second spool over the same directory, the first never closed."""
    first = open_spool(tmp_path, segment_bytes=3 * (HEADER_BYTES + 20))  # 3 entries a segment
    fill(first, 10)
    taken = [first.take() for _ in range(5)]  # ids 0..4
    first.ack(taken[0].id)
    first.ack(taken[2].id)
    first.release(taken[3].id)  # given back: not a duplicate
    # 1 and 4 are dispatched, never acked: they may have been delivered before the "kill -9".

    second = open_spool(tmp_path, segment_bytes=3 * (HEADER_BYTES + 20))
    replayed = take_all(second)
    assert [e.id for e in replayed] == [1, 3, 4, 5, 6, 7, 8, 9]
    assert all(e.payload == payload(e.id) and e.count == e.id + 1 and e.replayed for e in replayed)
    s = second.stats()
    assert s["replayed"] == sum(e.count for e in replayed)
    assert s["duplicated"] == 2 + 5  # the counts of ids 1 and 4
    assert s["corrupted_entries"] == 0
    # New entries continue after the old ids, in a new segment.
    assert second.append(b"new", 1) == 0
    assert second.take().id == 10
    first._abandon()
    second.close()


def test_acked_entries_stay_done_across_crashes(tmp_path):
    first = open_spool(tmp_path)
    fill(first, 4)
    for entry in take_all(first)[:2]:
        first.ack(entry.id)
    second = open_spool(tmp_path)  # crash
    for entry in take_all(second):
        second.ack(entry.id)
    third = open_spool(tmp_path)  # crash again
    assert third.take() is None
    assert third.stats()["replayed"] == 0
    for spool in (first, second):
        spool._abandon()
    third.close()


def test_segments_rotate_and_are_deleted_once_all_their_entries_are_acked(tmp_path):
    spool = open_spool(tmp_path, segment_bytes=2 * (HEADER_BYTES + 20))
    fill(spool, 5)
    assert segments(tmp_path) == [f"{i:020d}.seg" for i in (0, 2, 4)]
    assert [e.id for e in entries_in(tmp_path / segments(tmp_path)[1])] == [2, 3]
    entries = take_all(spool)
    spool.ack(entries[1].id)
    spool.ack(entries[0].id)
    assert segments(tmp_path) == [f"{i:020d}.seg" for i in (2, 4)]
    assert "00000000000000000000.state" not in os.listdir(tmp_path)
    spool.ack(entries[4].id)  # the segment being written goes too: its space is free at once
    assert segments(tmp_path) == [f"{i:020d}.seg" for i in (2,)]
    assert spool.append(payload(5), 1) == 0  # in a new segment
    assert segments(tmp_path) == [f"{i:020d}.seg" for i in (2, 5)]
    spool.ack(entries[2].id)
    spool.ack(entries[3].id)
    spool.ack(spool.take().id)
    assert os.listdir(tmp_path) == []
    spool.close()


def flip(path, offset: int, bits: int = 0xFF) -> None:
    """Damage one byte of a file on disk."""
    data = bytearray(path.read_bytes())
    data[offset] ^= bits
    path.write_bytes(bytes(data))


def test_a_flipped_byte_loses_that_entry_only_and_is_counted_once(tmp_path):
    logs: list[str] = []
    spool = open_spool(tmp_path)
    fill(spool, 5)
    spool.close()
    path = tmp_path / segments(tmp_path)[0]
    victim = entries_in(path)[2]
    flip(path, victim.offset + HEADER_BYTES + 3, 0x01)

    reopened = open_spool(tmp_path, logs)
    assert [e.id for e in take_all(reopened)] == [0, 1, 3, 4]
    assert (reopened.stats()["corrupted_entries"], reopened.stats()["corrupted_records"]) == (1, 3)
    assert logs == [f"found 1 damaged entries in {tmp_path}: their records are lost (3 known from their headers)"]
    reopened._abandon()
    again = open_spool(tmp_path)  # the damage was marked done: not counted twice
    assert (again.stats()["corrupted_entries"], again.stats()["corrupted_records"], len(take_all(again))) == (0, 0, 4)
    again.close()


def test_damage_to_an_acked_entry_loses_nothing(tmp_path):
    spool = open_spool(tmp_path)
    fill(spool, 3)
    spool.ack(spool.take().id)
    spool._abandon()
    path = tmp_path / segments(tmp_path)[0]
    flip(path, 10)  # the crc of entry 0
    reopened = open_spool(tmp_path)
    assert reopened.stats()["corrupted_entries"] == 0
    assert [e.id for e in take_all(reopened)] == [1, 2]
    reopened.close()


# The records of the damaged entry (count 2) are known when its header still says so with sense:
# not after damage to its magic or id, nor to its count (flipped to more than its payload's bytes).
@pytest.mark.parametrize("field_offset, records", [(0, 0), (4, 2), (8, 2), (12, 0), (20, 0)])  # magic, length,
def test_damage_to_any_header_field_is_found_and_resynced(tmp_path, field_offset, records):  # crc, id, count
    spool = open_spool(tmp_path)
    fill(spool, 4)
    spool.close()
    path = tmp_path / segments(tmp_path)[0]
    flip(path, entries_in(path)[1].offset + field_offset + 3)  # the length becomes huge, the id wrong...
    reopened = open_spool(tmp_path)
    assert [e.id for e in take_all(reopened)] == [0, 2, 3]
    assert (reopened.stats()["corrupted_entries"], reopened.stats()["corrupted_records"]) == (1, records)
    reopened.close()


def test_a_torn_last_entry_is_cut_off_and_counted(tmp_path):
    spool = open_spool(tmp_path)
    fill(spool, 3)
    spool._abandon()
    path = tmp_path / segments(tmp_path)[0]
    size = path.stat().st_size
    os.truncate(path, size - 7)  # a crash in the middle of writing entry 2
    reopened = open_spool(tmp_path)
    assert reopened.stats()["corrupted_entries"] == 1
    assert reopened.stats()["corrupted_records"] == 3  # its header is whole: count 3
    assert path.stat().st_size == 2 * (HEADER_BYTES + 20)
    assert reopened.append(b"after", 1) == 0
    assert [e.payload for e in take_all(reopened)] == [payload(0), payload(1), b"after"]
    reopened._abandon()
    again = open_spool(tmp_path)
    assert (again.stats()["corrupted_entries"], again.stats()["replayed"]) == (0, 1 + 2 + 1)
    again.close()


def test_garbage_files_and_state_logs_are_tolerated(tmp_path):
    spool = open_spool(tmp_path)
    fill(spool, 3)
    spool.ack(spool.take().id)
    spool.close()
    state = tmp_path / "00000000000000000000.state"
    state.write_bytes(b"\x00junk" + state.read_bytes() + b"A\x01\x02")  # garbage around, a torn mark
    (tmp_path / "00000000000000000099.seg").write_bytes(os.urandom(300))  # a segment of garbage
    (tmp_path / "00000000000000000042.state").write_bytes(b"orphan")  # its segment was deleted
    (tmp_path / "notes.txt").write_bytes(b"not ours")
    reopened = open_spool(tmp_path)
    assert [e.id for e in take_all(reopened)] == [1, 2]
    assert reopened.stats()["corrupted_entries"] == 1  # the garbage segment: one damaged end
    assert not (tmp_path / "00000000000000000042.state").exists()
    assert not (tmp_path / "00000000000000000099.seg").exists()  # nothing live in it
    assert (tmp_path / "notes.txt").exists()
    assert reopened.append(b"new", 1) == 0
    assert reopened.take().id == 100  # past every id seen, even in garbage-named files
    reopened.close()


def test_an_entry_damaged_after_open_is_counted_when_read_back(tmp_path):
    spool = open_spool(tmp_path)
    fill(spool, 3)
    path = tmp_path / segments(tmp_path)[0]
    with open(path, "r+b") as f:
        f.seek(HEADER_BYTES + 5)
        f.write(b"X")
    assert [e.id for e in take_all(spool)] == [1, 2]
    s = spool.stats()
    assert (s["corrupted_entries"], s["corrupted_records"], s["dropped_io_error"], s["records"]) == (1, 1, 1, 2 + 3)
    spool.close()


def test_an_emptied_segment_counts_the_entries_its_state_log_and_its_name_know(tmp_path):
    logs: list[str] = []
    spool = open_spool(tmp_path, segment_bytes=5 * (HEADER_BYTES + 20))
    fill(spool, 8)  # ids 0..4 in the first segment, 5..7 in the second
    taken = [spool.take() for _ in range(3)]  # 0, 1, 2
    spool.ack(taken[0].id)
    spool.release(taken[1].id)  # 2 stays dispatched
    spool.close()
    os.truncate(tmp_path / segments(tmp_path)[0], 0)  # the first segment loses all its bytes
    reopened = open_spool(tmp_path, logs)
    s = reopened.stats()
    # 1 and 2 are named by the state log; 0 (the first, named by the file) was done; 3 and 4 were
    # never taken and are not known (the count is a lower bound).
    assert (s["corrupted_entries"], s["corrupted_records"]) == (2, 0)
    assert logs == [f"found 2 damaged entries in {tmp_path}: their records are lost (0 known from their headers)"]
    assert s["replayed"] == 6 + 7 + 8 and [e.id for e in take_all(reopened)] == [5, 6, 7]
    assert segments(tmp_path) == [f"{5:020d}.seg"]  # the empty one is gone
    reopened._abandon()
    assert open_spool(tmp_path).stats()["corrupted_entries"] == 0  # counted once


def test_an_emptied_segment_never_taken_from_counts_its_first_entry(tmp_path):
    spool = open_spool(tmp_path)
    fill(spool, 3)
    spool.close()
    os.truncate(tmp_path / segments(tmp_path)[0], 0)
    reopened = open_spool(tmp_path)
    assert (reopened.stats()["corrupted_entries"], reopened.stats()["replayed"]) == (1, 0)
    assert reopened.append(b"new", 1) == 0
    assert reopened.take().id == 1  # past the id the name gave
    reopened.close()


def test_entries_cut_off_whole_are_counted_when_the_state_log_names_them(tmp_path):
    spool = open_spool(tmp_path)
    fill(spool, 4)
    spool.take(), spool.take("newest")  # 0 and 3 are dispatched
    spool._abandon()
    path = tmp_path / segments(tmp_path)[0]
    os.truncate(path, 2 * (HEADER_BYTES + 20))  # between entries: 2 and 3 vanish whole
    reopened = open_spool(tmp_path)
    assert reopened.stats()["corrupted_entries"] == 1  # 3 is named by its D mark; 2 was never taken
    assert [e.id for e in take_all(reopened)] == [0, 1]
    reopened.close()


def test_drop_oldest_evicts_whole_segments_not_in_flight(tmp_path):
    entry = HEADER_BYTES + 20
    spool = open_spool(tmp_path, max_bytes=8 * entry, segment_bytes=2 * entry)
    fill(spool, 8)
    in_flight = spool.take()  # pins the first segment
    assert spool.append(payload(8), 9) == 3 + 4  # the second segment (ids 2, 3) made room
    assert spool.append(payload(9), 10) == 0
    assert spool.append(payload(10), 11) == 5 + 6
    s = spool.stats()
    assert s["dropped_full"] == 3 + 4 + 5 + 6 and s["bytes"] <= 8 * entry
    assert [e.id for e in take_all(spool)] == [1, 6, 7, 8, 9, 10]
    spool.ack(in_flight.id)
    spool.close()


def test_drop_oldest_drops_the_new_entry_when_everything_is_in_flight(tmp_path):
    entry = HEADER_BYTES + 20
    spool = open_spool(tmp_path, max_bytes=4 * entry, segment_bytes=entry)
    fill(spool, 4)
    take_all(spool)
    assert spool.append(payload(4), 5) == 5
    assert spool.stats()["dropped_full"] == 5
    spool.close()


def test_drop_newest_keeps_the_backlog(tmp_path):
    logs: list[str] = []
    entry = HEADER_BYTES + 20
    spool = open_spool(tmp_path, logs, max_bytes=4 * entry, segment_bytes=entry, full_policy="drop_newest")
    fill(spool, 4)
    assert spool.append(payload(4), 5) == 5
    assert spool.append(payload(5), 6) == 6
    assert [e.id for e in take_all(spool)] == [0, 1, 2, 3]
    assert spool.stats()["dropped_full"] == 11
    assert logs == [f"spool full ({4 * entry} bytes): dropped 5 new records"]  # rate-limited
    spool.close()
    assert logs[-1] == f"spool full ({4 * entry} bytes): dropped 6 new records"  # what was held back


def test_an_entry_larger_than_a_segment_is_dropped(tmp_path):
    logs: list[str] = []
    spool = open_spool(tmp_path, logs, max_bytes=1000)
    assert (spool.segment_bytes, spool.max_payload) == (250, 250 - HEADER_BYTES)  # a quarter of max_bytes
    assert spool.append(b"x" * 1000, 7) == 7
    assert spool.append(b"x" * (spool.max_payload + 1), 1) == 1
    assert spool.stats()["dropped_full"] == 8 and spool.take() is None
    assert logs == ["dropped 7 records: an entry larger than a spool segment (250 bytes)"]
    for n in range(4):  # entries of max_payload fill the spool: four segments of one entry
        assert spool.append(b"x" * spool.max_payload, 1) == 0
    assert spool.stats()["bytes"] == 1000 and len(segments(tmp_path)) == 4
    spool.close()


def test_a_spool_that_filled_its_disk_works_again_once_its_entries_are_done(tmp_path):
    """ENOSPC from the spool's own backlog, on a real file system: once the server has taken the
    backlog, the space is free again and appends work, without a restart."""
    with tiny_tmpfs(tmp_path / "fs", "64k") as fs:
        logs: list[str] = []
        spool = open_spool(os.path.join(fs, "spool"), logs, max_bytes=1 << 30)  # far more than the disk
        appended = 0
        while spool.append(payload(appended, 1000), 1) == 0:
            appended += 1
        assert spool.append(payload(appended, 1000), 1) == 1  # still full
        s = spool.stats()
        assert 30 < appended < 64 and (s["dropped_io_error"], s["records"]) == (2, appended)
        assert s["write_errors"] >= 2 and "No space left on device" in logs[0]
        for entry in take_all(spool):  # the collector is back and takes everything
            spool.ack(entry.id)
        assert os.listdir(os.path.join(fs, "spool")) == []  # every file gone, the active segment too
        for n in range(100):  # more than the disk holds at once: each acked in turn
            assert spool.append(payload(n, 1000), 1) == 0
            spool.ack(spool.take().id)
        assert spool.stats()["dropped_io_error"] == 2
        spool.close()


def test_space_freed_by_others_is_used_again(tmp_path):
    with tiny_tmpfs(tmp_path / "fs", "64k") as fs:
        spool = open_spool(os.path.join(fs, "spool"))
        page = 4096 - HEADER_BYTES  # an entry of a page: the next needs a page more
        fill(spool, 2, size=page)
        ballast = fill_up(fs)  # someone else fills the disk
        assert spool.append(payload(2, page), 3) == 3
        os.unlink(ballast)
        assert spool.append(payload(3, page), 4) == 0
        assert [e.count for e in take_all(spool)] == [1, 2, 4]
        spool.close()
        assert len(segments(os.path.join(fs, "spool"))) == 2  # the one written before, and a new one


def test_acked_space_is_reused_under_drop_newest(tmp_path):
    entry = HEADER_BYTES + 20
    spool = open_spool(tmp_path, max_bytes=4 * entry, segment_bytes=4 * entry, full_policy="drop_newest")
    for n in range(20):  # one segment (max_bytes // 4 caps segment_bytes at one entry), always acked
        assert spool.append(payload(n), 1) == 0
        spool.ack(spool.take().id)
    assert spool.stats()["dropped_full"] == 0
    spool.close()


def failing_write(error_number: int, after_bytes: int = 0):
    def write_all(fd, data):
        if after_bytes:
            os.write(fd, data[:after_bytes])  # a partial write, then the disk is full
        raise OSError(error_number, os.strerror(error_number))

    return write_all


@pytest.mark.parametrize("error_number, after_bytes", [(errno.ENOSPC, 0), (errno.ENOSPC, 10), (errno.EROFS, 0),
                                                       (errno.EIO, 40)])
def test_write_errors_drop_the_entry_and_are_counted_not_raised(tmp_path, monkeypatch, error_number, after_bytes):
    logs: list[str] = []
    spool = open_spool(tmp_path, logs)
    fill(spool, 2)
    monkeypatch.setattr(spool_module, "_write_all", failing_write(error_number, after_bytes))
    assert spool.append(payload(2), 3) == 3
    assert spool.append(payload(3), 4) == 4
    monkeypatch.undo()
    s = spool.stats()
    assert (s["write_errors"], s["dropped_io_error"], s["records"]) == (2, 7, 1 + 2)
    assert logs == [f"write error: dropped 3 records: {tmp_path / segments(tmp_path)[0]}: "
                    f"{os.strerror(error_number)}"]
    assert spool.append(payload(4), 5) == 0  # the disk has room again
    spool._abandon()
    reopened = open_spool(tmp_path)
    assert [e.payload for e in take_all(reopened)] == [payload(0), payload(1), payload(4)]
    assert reopened.stats()["corrupted_entries"] == 0  # the partial entries were cut off
    reopened.close()


def test_a_read_only_directory_drops_new_segments(tmp_path, monkeypatch):
    def read_only(path, flags):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    spool = open_spool(tmp_path)
    monkeypatch.setattr(spool_module, "_open", read_only)
    assert spool.append(b"x", 2) == 2
    fill_failed = spool.stats()
    assert (fill_failed["write_errors"], fill_failed["dropped_io_error"]) == (1, 2)
    spool.close()


def test_a_failed_state_mark_is_counted_and_the_entry_still_handed_out(tmp_path, monkeypatch):
    spool = open_spool(tmp_path)
    fill(spool, 1)
    monkeypatch.setattr(spool_module, "_write_all", failing_write(errno.ENOSPC))
    entry = spool.take()
    assert entry.id == 0 and spool.stats()["write_errors"] == 1
    spool.close()


def test_fsync_always_syncs_every_append_and_mark(tmp_path, monkeypatch):
    synced: list[int] = []
    monkeypatch.setattr(spool_module, "_fsync", synced.append)
    spool = open_spool(tmp_path, fsync="always")
    for n in range(3):
        before = len(synced)
        spool.append(payload(n), 1)
        assert len(synced) > before  # the segment (and the directory, for a new segment)
    before = len(synced)
    spool.ack(spool.take().id)
    assert len(synced) >= before + 2  # the D and A marks
    spool.close()


@pytest.mark.parametrize("policy, interval, synced_before_close, synced_at_close", [
    ("never", 0.0, False, False),
    ("interval", 3600.0, False, True),  # nothing due before close(): it syncs what was written
    ("interval", 0.0, True, False),  # due at every write: nothing left for close()
])
def test_fsync_interval_and_never(tmp_path, monkeypatch, policy, interval, synced_before_close, synced_at_close):
    synced: list[int] = []
    monkeypatch.setattr(spool_module, "_fsync", synced.append)
    spool = open_spool(tmp_path, fsync=policy, fsync_interval=interval)
    fill(spool, 3)
    spool.take()
    assert bool(synced) == synced_before_close
    before = len(synced)
    spool.close()
    assert (len(synced) > before) == synced_at_close


def test_concurrent_appends_and_takes_hand_out_each_entry_once(tmp_path):
    spool = open_spool(tmp_path, segment_bytes=4096)
    taken: list[int] = []
    lock = threading.Lock()

    def produce(start):
        for n in range(start, start + 200):
            spool.append(payload(n), 1)

    def consume():
        for _ in range(300):
            entry = spool.take(prefer="newest" if len(taken) % 2 else "oldest")
            if entry is not None:
                with lock:
                    taken.append(entry.id)
                spool.ack(entry.id)

    threads = [threading.Thread(target=produce, args=(i * 200,)) for i in range(3)]
    threads += [threading.Thread(target=consume) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    taken += [entry.id for entry in take_all(spool)]
    assert sorted(taken) == list(range(600))
    spool.close()


def test_check_directory_creates_it_private(tmp_path):
    path = tmp_path / "new" / "spool"
    check_directory(str(path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o700


def test_check_directory_refuses_a_world_writable_directory(tmp_path):
    path = tmp_path / "open"
    path.mkdir()
    path.chmod(0o777)
    with pytest.raises(SpoolDirectoryError, match=r"writable by group or others \(mode 0777\)"):
        check_directory(str(path))
    with pytest.raises(SpoolDirectoryError):  # Spool() refuses it too
        Spool(str(path), max_bytes=1000)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_check_directory_refuses_a_directory_of_another_user(tmp_path):
    path = tmp_path / "theirs"
    path.mkdir(mode=0o700)
    os.chown(path, 65534, 65534)
    with pytest.raises(SpoolDirectoryError, match="owned by uid 65534") as raised:
        check_directory(str(path))
    assert "\n" not in str(raised.value)


def test_check_directory_refuses_a_file(tmp_path):
    path = tmp_path / "file"
    path.write_text("")
    with pytest.raises(SpoolDirectoryError, match="is not a directory"):
        check_directory(str(path))
    with pytest.raises(SpoolDirectoryError, match="cannot create it"):
        check_directory(str(path / "below"))


def test_check_directory_refuses_a_directory_it_cannot_write(tmp_path, monkeypatch):
    # chmod 0500 would not stop root: pretend instead, as on a read-only file system (access() says EROFS)
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(SpoolDirectoryError, match="is not readable and writable"):
        check_directory(str(tmp_path))


def test_bad_options_are_refused(tmp_path):
    for options in (dict(max_bytes=0), dict(max_bytes=100, fsync="sometimes"),
                    dict(max_bytes=100, full_policy="drop_random")):
        with pytest.raises(ValueError):
            Spool(str(tmp_path), **options)
    spool = open_spool(tmp_path)
    with pytest.raises(TypeError):
        spool.append("text", 1)
    with pytest.raises(ValueError):
        spool.take(prefer="random")
    spool.close()


def open_in_time(directory, seconds: float = 5.0, **options) -> Spool:
    """Opens a spool on a thread, failing the test (not hanging it) if that takes too long."""
    opened: list = []
    thread = threading.Thread(target=lambda: opened.append(open_spool(directory, **options)), daemon=True)
    thread.start()
    thread.join(seconds)
    assert opened, "opening the spool hung"
    return opened[0]


@pytest.mark.parametrize("make, reason", [
    (lambda path: os.symlink("/dev/zero", path), "a symbolic link"),
    (lambda path: os.mkfifo(path), "not a regular file"),
    (lambda path: os.mkdir(path), "not a regular file"),
    (lambda path: os.truncate(os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)) or path, (4 << 20) + 1),
     f"larger than {4 << 20} bytes"),  # sparse
])
def test_a_segment_that_is_not_a_regular_file_of_sense_is_refused_and_left_alone(tmp_path, make, reason):
    name = tmp_path / "00000000000000000007.seg"
    make(str(name))
    logs: list[str] = []
    spool = open_in_time(tmp_path, logs=logs)
    assert logs == [f"refused {name}: {reason}: left as it is"]
    s = spool.stats()
    assert (s["refused_files"], s["records"], s["corrupted_entries"]) == (1, 0, 0)
    assert spool.append(b"new", 1) == 0
    assert spool.take().id == 8  # past the refused segment's name
    spool.close()
    assert os.path.lexists(name)


def test_a_state_log_that_is_a_symlink_is_refused_and_never_written_through(tmp_path):
    spool = open_spool(tmp_path)
    fill(spool, 3)
    spool.ack(spool.take().id)
    spool.close()
    victim = tmp_path.parent / f"{tmp_path.name}-victim"
    victim.write_bytes(b"precious")
    state = tmp_path / "00000000000000000000.state"
    state.unlink()
    state.symlink_to(victim)
    logs: list[str] = []
    reopened = open_in_time(tmp_path, logs=logs)
    assert logs == [f"refused {state}: a symbolic link: left as it is"]
    assert reopened.stats()["refused_files"] == 1
    assert [e.id for e in take_all(reopened)] == [0, 1, 2]  # no marks: replayed rather than lost
    assert reopened.stats()["write_errors"] >= 1  # the D marks could not be written through it
    reopened.close()
    assert victim.read_bytes() == b"precious"


def test_a_segment_swapped_for_a_symlink_after_open_is_refused_when_read_back(tmp_path):
    logs: list[str] = []
    spool = open_spool(tmp_path, logs)
    fill(spool, 2)
    path = tmp_path / segments(tmp_path)[0]
    path.unlink()
    path.symlink_to("/dev/zero")
    assert spool.take() is None  # both entries unreadable: counted, not handed out
    s = spool.stats()
    assert (s["refused_files"], s["dropped_io_error"], s["records"]) == (2, 1 + 2, 0)
    assert logs == [f"read error: dropped 1 records: {path}: a symbolic link"]
    spool.close()
