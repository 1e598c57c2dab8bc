"""freezer_py's stdin= and stdout=: a backup in mode stdin and a restore to "-" from Python,
through file objects and file descriptors, and what happens when the stream fails."""
import hashlib
import io
import os
import random
import threading

import pytest

import freezer_py


def actions(tmp_path):
    base = {"container": str(tmp_path / "repo"), "backup_name": "py-stream",
            "hostname": "node1"}
    backup = {**base, "action": "backup", "mode": "stdin"}
    restore = {**base, "action": "restore", "restore_abs_path": "-"}
    info = {**base, "action": "info"}
    return backup, restore, info


def test_a_stream_round_trips_through_bytes_io(tmp_path):
    backup, restore, info = actions(tmp_path)
    data = random.Random(1).randbytes(3 << 20)
    b = freezer_py.run_action(backup, stdin=io.BytesIO(data))
    assert b["snapshot"]["mode"] == "stdin"
    assert b["snapshot"]["stats"]["bytes"] == len(data)
    out = io.BytesIO()
    r = freezer_py.run_action(restore, stdout=out)
    assert r["bytes"] == len(data)
    assert out.getvalue() == data
    # Without the streams, both fail saying what is missing, and nothing is recorded.
    with pytest.raises(freezer_py.BadInputError, match="no standard input"):
        freezer_py.run_action(backup)
    with pytest.raises(freezer_py.BadInputError, match="no standard output"):
        freezer_py.run_action(restore)
    assert len(freezer_py.run_action(info)["snapshots"]) == 1


def test_a_stream_round_trips_through_pipes(tmp_path):
    backup, restore, _ = actions(tmp_path)
    data = random.Random(2).randbytes(5 << 20)
    r, w = os.pipe()

    def feed():
        with os.fdopen(w, "wb") as f:
            for i in range(0, len(data), 100_000):
                f.write(data[i:i + 100_000])

    t = threading.Thread(target=feed)
    t.start()
    b = freezer_py.run_action(backup, stdin=r)
    t.join()
    assert b["snapshot"]["stats"]["bytes"] == len(data)
    # The caller's descriptor is still open and still the caller's.
    os.fstat(r)
    os.close(r)

    r2, w2 = os.pipe()
    got = []
    t = threading.Thread(target=lambda: got.append(os.fdopen(r2, "rb").read()))
    t.start()
    freezer_py.run_action(restore, stdout=w2)
    os.close(w2)  # the library closed only its duplicate: the reader sees the end now
    t.join()
    assert got[0] == data


class Generated:
    """A reader of `size` pseudo-random bytes made as they are read, hashed as it goes."""

    def __init__(self, size):
        self.left, self.rng, self.sha, self.reads = size, random.Random(3), hashlib.sha256(), 0

    def read(self, n):
        n = min(n, self.left)
        self.left -= n
        self.reads += 1
        b = self.rng.randbytes(n)
        self.sha.update(b)
        return b


class Hashing:
    """A writer that keeps only a hash and the largest write."""

    def __init__(self):
        self.sha, self.size, self.largest, self.flushed = hashlib.sha256(), 0, 0, False

    def write(self, b):
        self.sha.update(b)
        self.size += len(b)
        self.largest = max(self.largest, len(b))
        return len(b)

    def flush(self):
        self.flushed = True


def test_a_large_stream_is_read_and_written_in_pieces(tmp_path):
    backup, restore, _ = actions(tmp_path)
    size = 50 << 20
    src = Generated(size)
    b = freezer_py.run_action(backup, stdin=src)
    assert b["snapshot"]["stats"]["bytes"] == size
    assert src.left == 0 and src.reads > 10, "read in pieces, to its end"
    sink = Hashing()
    freezer_py.run_action(restore, stdout=sink)
    assert sink.size == size and sink.sha.digest() == src.sha.digest()
    assert sink.largest <= 8 << 20, "written a chunk at a time (8 MiB at most), not whole"
    assert sink.flushed


class Failing:
    def __init__(self, after):
        self.after = after

    def read(self, n):
        if self.after <= 0:
            raise OSError("the sensor went away")
        self.after -= 1
        return random.randbytes(min(n, 1 << 20))


def test_a_read_that_raises_fails_the_backup_and_records_nothing(tmp_path):
    backup, restore, info = actions(tmp_path)
    with pytest.raises(freezer_py.FreezerError) as e:
        freezer_py.run_action(backup, stdin=Failing(after=5))
    msg = str(e.value)
    assert msg.startswith("stdin: reading the standard input: the object's read() raised "
                          "OSError: the sensor went away"), msg
    # The first backup created the repository before it read: it stays, with no snapshot.
    assert (tmp_path / "repo").is_dir()
    assert freezer_py.run_action(info)["snapshots"] == []
    # A text stream is refused on its first read, naming the mistake.
    with pytest.raises(freezer_py.FreezerError, match="str, not bytes"):
        freezer_py.run_action(backup, stdin=io.StringIO("text"))
    assert freezer_py.run_action(info)["snapshots"] == []
    # The repository is sound: a good stream backs up after the failures.
    freezer_py.run_action(backup, stdin=io.BytesIO(b"after the failures"))
    assert len(freezer_py.run_action(info)["snapshots"]) == 1
    assert freezer_py.check({"container": backup["container"]}, read_data="all")["damaged"] == []


def test_a_write_that_raises_fails_the_restore(tmp_path):
    backup, restore, _ = actions(tmp_path)
    freezer_py.run_action(backup, stdin=io.BytesIO(random.randbytes(2 << 20)))

    class Full:
        def write(self, b):
            raise OSError("disk full")

    with pytest.raises(freezer_py.FreezerError) as e:
        freezer_py.run_action(restore, stdout=Full())
    assert "stdout" in str(e.value) and "disk full" in str(e.value), str(e.value)


def test_bad_streams_are_refused_before_anything_runs(tmp_path):
    backup, restore, info = actions(tmp_path)
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    for bad, needle in [(-2, "not a file descriptor"), (r, "cannot be used"),
                        (object(), r"read\(n\)")]:
        with pytest.raises(ValueError, match=needle):
            freezer_py.run_action(backup, stdin=bad)
    with pytest.raises(ValueError, match=r"write\(b\)"):
        freezer_py.run_action(restore, stdout=object())
    assert not (tmp_path / "repo").exists()


def test_a_stream_no_action_uses_is_refused(tmp_path):
    backup, restore, info = actions(tmp_path)
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"a file")
    fs_backup = {**backup, "mode": "fs", "path_to_backup": str(src)}
    # Given to an action that would never read or write it: refused before it runs, so a
    # stream meant for a backup is not silently left unread.
    with pytest.raises(freezer_py.BadInputError, match="stdin: .*no action here reads"):
        freezer_py.run_action(fs_backup, stdin=io.BytesIO(b"unread"))
    assert not (tmp_path / "repo").exists(), "refused before the backup ran"
    with pytest.raises(freezer_py.BadInputError, match="stdout: .*no action here writes"):
        freezer_py.run_action(backup, stdin=io.BytesIO(b"x"), stdout=io.BytesIO())
    assert not (tmp_path / "repo").exists()
    freezer_py.run_action(backup, stdin=io.BytesIO(b"x"))
    with pytest.raises(freezer_py.BadInputError, match="stdin: "):
        freezer_py.run_action(info, stdin=io.BytesIO(b"x"))
    with pytest.raises(freezer_py.BadInputError, match="stdout: "):
        freezer_py.run_action({**restore, "restore_abs_path": None, "restore_command": "cat"},
                              stdout=io.BytesIO())
    # A job is checked as a whole: one action that reads is enough; none is refused.
    with pytest.raises(freezer_py.BadInputError, match="stdin: "):
        freezer_py.run_job({"job_actions": [{"freezer_action": fs_backup},
                                            {"freezer_action": info}]},
                           stdin=io.BytesIO(b"unread"))
    reports = freezer_py.run_job({"job_actions": [{"freezer_action": fs_backup},
                                                  {"freezer_action": backup}]},
                                 stdin=io.BytesIO(b"read"))
    assert [r["complete"] for r in reports] == [True, True], reports


def test_a_job_reads_stdin_and_restores_to_stdout(tmp_path):
    backup, restore, _ = actions(tmp_path)
    data = random.Random(4).randbytes(1 << 20)
    out = io.BytesIO()
    reports = freezer_py.run_job(
        {"job_actions": [{"freezer_action": backup}, {"freezer_action": restore}]},
        stdin=io.BytesIO(data), stdout=out)
    assert [r["complete"] for r in reports] == [True, True], reports
    assert out.getvalue() == data
    # A read that raises fails the action, and its report names the cause.
    reports = freezer_py.run_job({"job_actions": [{"freezer_action": backup}]},
                                 stdin=Failing(after=1))
    assert not reports[0]["complete"], reports
    assert "the sensor went away" in reports[0]["error"], reports
    # Without them, the job reports the missing stream.
    reports = freezer_py.run_job({"job_actions": [{"freezer_action": backup}]})
    assert "no standard input" in reports[0]["error"]


def test_a_restore_to_a_real_file_keeps_what_was_written_before(tmp_path):
    backup, restore, _ = actions(tmp_path)
    data = random.Random(5).randbytes(1 << 20)
    path = tmp_path / "in.bin"
    path.write_bytes(data)
    # A file opened for reading goes through its descriptor.
    with open(path, "rb") as f:
        freezer_py.run_action(backup, stdin=f)
    restored = io.BytesIO()
    freezer_py.run_action(restore, stdout=restored)
    assert restored.getvalue() == data
    # A file partly read (its object buffers more than it gave) is read from where the
    # caller is, not from where its descriptor is.
    with open(path, "rb") as f:
        assert f.read(10) == data[:10]
        freezer_py.run_action(backup, stdin=f)
    restored = io.BytesIO()
    freezer_py.run_action(restore, stdout=restored)
    assert restored.getvalue() == data[10:]
    out = tmp_path / "out.bin"
    with open(out, "wb") as f:
        f.write(b"header:")  # still in the object's buffer: flushed before the restore writes
        freezer_py.run_action(restore, stdout=f)
        f.write(b":trailer")
    assert out.read_bytes() == b"header:" + data[10:] + b":trailer"
