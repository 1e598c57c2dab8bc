"""The classes (Repository, Storage, Snapshot, Job, CancelToken), progress, cancellation,
Ctrl-C, the GIL and asyncio."""
import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import freezer_py


def tree(root, files=3, size=4096):
    root.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        (root / f"f{i}.bin").write_bytes(os.urandom(size))
    (root / "sub").mkdir(exist_ok=True)
    (root / "sub" / "note.txt").write_text("hello\n")
    return root


def same_tree(a, b):
    def listing(root):
        return sorted((str(p.relative_to(root)), p.read_bytes() if p.is_file() else None)
                      for p in root.rglob("*"))
    return listing(a) == listing(b)


def test_a_repository_round_trip_with_a_passphrase(tmp_path):
    data = tree(tmp_path / "data")
    repo = freezer_py.Repository.init(tmp_path / "repo", passphrase="correct horse")
    assert len(repo.id) == 64
    assert freezer_py.Repository.open(tmp_path / "repo", passphrase="correct horse").id == repo.id
    first = repo.backup(data, backup_name="docs", hostname="node1")
    # Upstream's metadata keys, as its agent writes them with --metadata-out.
    for key in ("curr_backup_level", "fs_real_path", "client_os", "time_stamp", "backup_name",
                "hostname", "container", "storage", "engine_name", "total_fs_files"):
        assert key in first, key
    assert first["curr_backup_level"] == 0
    assert first["encrypted"] is True
    assert first["backup_metadata"]["fs_real_path"] == str(data)
    (data / "f0.bin").write_bytes(b"changed")
    second = repo.backup(data, backup_name="docs", hostname="node1")
    assert second["curr_backup_level"] == 1
    snaps = repo.snapshots()
    assert [s.level for s in snaps] == [0, 1]
    assert snaps[1].parent == snaps[0].id
    s = snaps[1]
    assert (s.backup_name, s.hostname, s.path_to_backup, s.mode) == ("docs", "node1", str(data), "fs")
    assert s.files == 4 and s.size > 0 and s.time and s.time_stamp > 0
    assert s.metadata["stats"]["files"] == 4
    assert repo.snapshots(backup_name="other") == []
    with pytest.raises(AttributeError):
        s.level = 3  # read-only
    out = tmp_path / "out"
    restored = repo.restore(out, backup_name="docs", hostname="node1")
    assert restored["files"] == 4
    assert same_tree(data, out)
    assert repo.check(read_data="all")["damaged"] == []


def test_wrong_key_missing_repository_and_bad_options(tmp_path):
    freezer_py.Repository.init(tmp_path / "repo", passphrase="right")
    with pytest.raises(freezer_py.WrongKeyError) as e:
        freezer_py.Repository.open(tmp_path / "repo", passphrase="wrong")
    assert isinstance(e.value, PermissionError)
    with pytest.raises(freezer_py.NotFoundError) as e:
        freezer_py.Repository.open(tmp_path / "nowhere")
    assert isinstance(e.value, FileNotFoundError)
    assert "freezer init" not in str(e.value) and "with init" in str(e.value)
    with pytest.raises(freezer_py.AlreadyExistsError):
        freezer_py.Repository.init(tmp_path / "repo", passphrase="right")
    repo = freezer_py.Repository.open(tmp_path / "repo", passphrase="right")
    with pytest.raises(freezer_py.BadInputError) as e:
        repo.backup(tmp_path, backup_name="b", exlcude="*.tmp")
    assert "did you mean exclude?" in str(e.value)
    with pytest.raises(freezer_py.BadInputError) as e:
        freezer_py.Storage("s3://bucket/x", endpiont="http://127.0.0.1:1")
    assert "did you mean endpoint?" in str(e.value)
    with pytest.raises(freezer_py.BadInputError):
        freezer_py.Repository.open(tmp_path / "repo", passphrase="x",
                                   encrypt_pass_file=str(tmp_path / "p"))
    with pytest.raises(freezer_py.BadInputError):
        freezer_py.Repository.open(tmp_path / "repo", container=str(tmp_path / "other"))
    with pytest.raises(freezer_py.BadInputError):
        repo.backup(tmp_path, backup_name="b", progress=42)
    with pytest.raises(freezer_py.BadInputError) as e:
        repo.backup(tmp_path)
    assert "backup_name" in str(e.value)


def test_init_sets_the_pack_size_and_the_key_costs(tmp_path):
    repo = freezer_py.Repository.init(tmp_path / "repo", passphrase="pw", pack_size=1,
                                      kdf_memory=4, kdf_iterations=2, kdf_parallelism=1)
    [key] = repo.keys()
    assert key["kdf"] == {"algorithm": "argon2id", "memory_kib": 4096, "iterations": 2,
                          "parallelism": 1}
    data = tmp_path / "data"
    data.mkdir()
    # 6 MiB in chunks of 0.5 to 8 MiB: with 1 MiB packs, a pack per chunk or so, and one of
    # trees.
    (data / "big.bin").write_bytes(os.urandom(6 << 20))
    repo.backup(data, backup_name="b")
    packs = [p for p in (tmp_path / "repo" / "data").rglob("*") if p.is_file()]
    assert len(packs) >= 4, packs
    # Defaults where nothing (or None) is given: 8 MiB packs, 32 MiB Argon2id.
    other = freezer_py.Repository.init(tmp_path / "other", passphrase="pw", pack_size=None)
    assert other.keys()[0]["kdf"]["memory_kib"] == 32 * 1024
    other.backup(data, backup_name="b")
    assert len([p for p in (tmp_path / "other" / "data").rglob("*") if p.is_file()]) == 2
    # Out of range, of the wrong type, or given to anything but init.
    for bad in ({"pack_size": 0}, {"pack_size": 1024}, {"pack_size": "8"},
                {"kdf_memory": 4096}, {"kdf_iterations": 0}):
        with pytest.raises(freezer_py.BadInputError) as e:
            freezer_py.Repository.init(tmp_path / "bad", **bad)
        assert next(iter(bad)) in str(e.value)
    assert not (tmp_path / "bad").exists()
    with pytest.raises(freezer_py.BadInputError) as e:
        freezer_py.Repository.open(tmp_path / "repo", passphrase="pw", pack_size=2)
    assert "only init takes it" in str(e.value)
    assert freezer_py.init(tmp_path / "fn", pack_size=2)["id"]


def test_threads_and_a_memory_budget_by_option(tmp_path):
    data = tree(tmp_path / "data", files=4, size=1 << 20)
    repo = freezer_py.Repository.init(tmp_path / "repo")
    r = repo.backup(data, backup_name="b", threads=3, max_memory="16M")
    assert r["memory"]["budget"] == 16 << 20 and r["memory"]["peak_leased"] > 0
    assert r["memory"]["peak_rss"] > 0
    out = tmp_path / "out"
    r = repo.restore(out, backup_name="b", threads=1, max_memory="8M")
    assert r["memory"]["budget"] == 8 << 20
    assert same_tree(data, out)
    for bad, says in (({"max_memory": "1M"}, "smallest budget"),
                      ({"max_memory": "lots"}, "is not a size"),
                      ({"threads": "many"}, "threads")):
        with pytest.raises(freezer_py.BadInputError) as e:
            repo.backup(data, backup_name="b", **bad)
        assert says in str(e.value), e.value


def test_storage_reads_urls_and_upstream_options(tmp_path):
    s = freezer_py.Storage(f"file://{tmp_path}/r")
    assert s.kind == "local"
    s3 = freezer_py.Storage(storage="s3", container="bucket/node1", endpoint="http://127.0.0.1:9")
    assert s3.kind == "s3" and s3.options["container"] == "bucket/node1"
    assert "secret" not in repr(freezer_py.Storage("s3://b/p", secret_key="hunter2"))
    with pytest.raises(freezer_py.BadInputError):
        freezer_py.Storage()
    with pytest.raises(freezer_py.BadInputError):
        freezer_py.Storage("gopher://x/y")
    repo = freezer_py.Repository.init(freezer_py.Storage(tmp_path / "r2"))
    assert repo.options["container"] == str(tmp_path / "r2")


def test_keys_forget_prune_repair_and_copy(tmp_path):
    data = tree(tmp_path / "data")
    repo = freezer_py.Repository.init(tmp_path / "repo", passphrase="one")
    for i in range(3):
        (data / "f0.bin").write_bytes(os.urandom(1000))
        repo.backup(data, backup_name="b", max_level=3)
    keys = repo.keys()
    assert len(keys) == 1 and keys[0]["current"] is True
    added = repo.add_key("two")
    assert freezer_py.Repository.open(tmp_path / "repo", passphrase="two").id == repo.id
    with pytest.raises(freezer_py.FreezerError):
        repo.remove_key(keys[0]["id"])  # the key in use
    repo.remove_key(added)
    with pytest.raises(freezer_py.WrongKeyError):
        freezer_py.Repository.open(tmp_path / "repo", passphrase="two")
    target = freezer_py.Repository.init(tmp_path / "copy", passphrase="other")
    copied = repo.copy_to(target)
    assert len(copied["copied"]) == 3
    assert [s.level for s in target.snapshots()] == [0, 1, 2]
    dry = repo.forget(keep_last=1, backup_name="b", dry_run=True)
    assert len(dry["forget"]["forgotten"]) == 2 and len(repo.snapshots()) == 3
    repo.forget(keep_last=1, backup_name="b")
    assert len(repo.snapshots()) == 1
    assert repo.prune(max_unused="100%")["dry_run"] is False
    assert repo.repair_index()["storages"][0]["index_files_written"] >= 1
    new_id = repo.change_passphrase("three")
    reopened = freezer_py.Repository.open(tmp_path / "repo", passphrase="three")
    assert any(k["id"] == new_id and k["current"] for k in reopened.keys())


def test_a_restore_that_leaves_damaged_files_raises_unless_partial_is_accepted(tmp_path):
    data = tree(tmp_path / "data", files=2, size=200_000)
    repo = freezer_py.Repository.init(tmp_path / "repo")
    repo.backup(data, backup_name="b", compression="none")
    for pack in (tmp_path / "repo" / "data").rglob("*"):
        if pack.is_file() and pack.stat().st_size > 100_000:
            raw = bytearray(pack.read_bytes())
            raw[len(raw) // 2] ^= 1
            pack.write_bytes(bytes(raw))
    with pytest.raises(freezer_py.IncompleteError) as e:
        repo.restore(tmp_path / "out", backup_name="b")
    assert "accept_partial" in str(e.value)
    result = e.value.args[1]
    assert result["damaged"]
    partial = repo.restore(tmp_path / "out2", backup_name="b", accept_partial=True)
    assert partial["damaged"] and partial["complete"] is False


def test_a_job_object_checks_its_document_and_runs(tmp_path):
    data = tree(tmp_path / "data")
    doc = {"job_id": "j1", "description": "nightly", "job_actions": [
        {"freezer_action": {"action": "backup", "path_to_backup": str(data), "backup_name": "j",
                            "container": str(tmp_path / "repo")}}]}
    job = freezer_py.Job(doc)
    assert (job.job_id, job.description, len(job)) == ("j1", "nightly", 1)
    assert job.document == doc
    reports = job.run()
    assert reports[0]["complete"] is True
    assert reports[0]["backup_metadata"]["job_id"] == "j1"
    with pytest.raises(freezer_py.BadInputError) as e:
        freezer_py.Job({"job_actions": [{"freezer_action": {"action": "backup", "max_level": "x"}}]})
    assert "max_level" in str(e.value)
    with pytest.raises(freezer_py.BadInputError):
        freezer_py.Job("{broken")


def test_run_action_takes_the_dict_upstreams_scheduler_writes(tmp_path):
    data = tree(tmp_path / "data")
    meta = tmp_path / "meta.json"
    # As freezer-scheduler passes a job's freezer_action (strings where upstream has them).
    action = {"action": "backup", "mode": "fs", "backup_name": "sched", "container": str(tmp_path / "repo"),
              "storage": "local", "path_to_backup": str(data), "max_level": "3",
              "remove_older_than": None, "log_file": None, "no_incremental": False,
              "hostname": "compute-1", "metadata_out": str(meta)}
    done = freezer_py.run_action(action)
    for key in ("curr_backup_level", "fs_real_path", "client_os", "client_version", "time_stamp",
                "backup_name", "hostname", "container", "storage", "mode", "level", "max_level",
                "always_level", "engine_name", "compression", "encrypted", "total_fs_files",
                "total_directories", "backup_size_uncompressed", "backup_size_compressed"):
        assert key in done, key
    assert done["hostname"] == "compute-1" and done["fs_real_path"] == str(data)
    import json
    written = json.loads(meta.read_text())
    assert written == done["backup_metadata"]


def test_progress_is_reported_and_a_raising_callback_stops_the_backup(tmp_path):
    data = tree(tmp_path / "data", files=2)
    repo = freezer_py.Repository.init(tmp_path / "repo")
    repo.backup(data, backup_name="p", progress=lambda report: None)

    class Stop(Exception):
        pass
    seen = []

    def watch(report):
        seen.append(report)
        if len(seen) == 3:
            raise Stop("enough")
    with pytest.raises(Stop):
        freezer_py.run_action({"action": "backup", "mode": "stdin", "backup_name": "z",
                               "container": str(tmp_path / "repo")},
                              stdin=open("/dev/zero", "rb"), progress=watch)
    assert len(seen) == 3, "called again after it raised"
    assert all(set(r) == {"bytes", "total_bytes", "entries"} for r in seen)
    assert seen[0]["bytes"] <= seen[1]["bytes"] <= seen[2]["bytes"] and seen[2]["bytes"] > 0
    # The backup it stopped recorded nothing; the repository is valid.
    assert [s.backup_name for s in repo.snapshots()] == ["p"]
    assert repo.check()["damaged"] == []


def test_a_cancel_token_stops_an_endless_backup(tmp_path):
    repo = freezer_py.Repository.init(tmp_path / "repo")
    token = freezer_py.CancelToken()
    assert not token.cancelled
    threading.Timer(0.5, token.cancel).start()
    counted = [0]
    running = [True]

    def count():
        while running[0]:
            counted[0] += 1
    counter = threading.Thread(target=count)
    counter.start()
    try:
        with pytest.raises(freezer_py.CancelledError):
            freezer_py.run_action({"action": "backup", "mode": "stdin", "backup_name": "z",
                                   "container": str(tmp_path / "repo")},
                                  stdin=open("/dev/zero", "rb"), cancel=token)
    finally:
        running[0] = False
        counter.join()
    assert token.cancelled and "True" in repr(token)
    # The GIL was released: the counting thread ran all along (a held GIL stops it at zero).
    assert counted[0] > 100_000, counted[0]
    assert repo.snapshots() == []
    assert repo.check()["damaged"] == []
    # A token cancelled before the call stops it at once.
    with pytest.raises(freezer_py.CancelledError):
        repo.backup(tree(tmp_path / "d"), backup_name="x", cancel=token)


def test_asyncio_twins_run_together_and_leave_the_loop_free(tmp_path):
    a = tree(tmp_path / "a", files=4, size=2_000_000)
    b = tree(tmp_path / "b", files=4, size=2_000_000)

    async def main():
        r1 = await freezer_py.Repository.init_async(tmp_path / "r1")
        r2 = await freezer_py.Repository.init_async(tmp_path / "r2", passphrase="p")
        ticks = 0
        done = False

        async def ticker():
            nonlocal ticks
            while not done:
                ticks += 1
                await asyncio.sleep(0.001)
        t = asyncio.ensure_future(ticker())
        results = await asyncio.gather(r1.backup_async(a, backup_name="a"),
                                       r2.backup_async(b, backup_name="b"))
        done = True
        await t
        snaps = await r2.snapshots_async()
        restored = await r1.restore_async(tmp_path / "out", backup_name="a")
        return results, ticks, snaps, restored

    (res_a, res_b), ticks, snaps, restored = asyncio.run(main())
    assert res_a["backup_name"] == "a" and res_b["backup_name"] == "b"
    assert ticks >= 2, ticks
    assert [s.backup_name for s in snaps] == ["b"]
    assert restored["files"] == 5 and same_tree(a, tmp_path / "out")


def test_an_asyncio_cancel_cancels_the_work(tmp_path):
    repo = freezer_py.Repository.init(tmp_path / "repo")

    async def main():
        task = asyncio.ensure_future(freezer_py.run_action_async(
            {"action": "check", "container": str(tmp_path / "repo"), "read_data": "all"}))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # An error comes back as the awaited call's exception.
        with pytest.raises(freezer_py.NotFoundError):
            await freezer_py.Repository.open_async(tmp_path / "nowhere")
    asyncio.run(main())
    assert repo.check()["damaged"] == []
    # Without a running loop, an _async call says so.
    with pytest.raises(RuntimeError):
        repo.backup_async(tmp_path, backup_name="x")


CTRL_C = textwrap.dedent("""
    import sys, freezer_py
    def progress(report):
        if report["bytes"] > 0:
            print("running", flush=True)
    try:
        freezer_py.run_action({"action": "backup", "mode": "stdin", "backup_name": "z",
                               "container": sys.argv[1]},
                              stdin=open("/dev/zero", "rb"), progress=progress)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(3)
""")


def test_ctrl_c_stops_a_running_backup_and_leaves_the_repository_valid(tmp_path):
    repo = freezer_py.Repository.init(tmp_path / "repo")
    child = subprocess.Popen([sys.executable, "-c", CTRL_C, str(tmp_path / "repo")],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "running"
    sent = time.monotonic()
    child.send_signal(signal.SIGINT)
    rest = child.stdout.read()
    code = child.wait(timeout=60)
    stopped_after = time.monotonic() - sent
    assert code == 3 and "interrupted" in rest, (code, rest)
    # The issue's bound is a second; a loose one here (the machine may be busy), and the
    # figure is printed for the record.
    print(f"Ctrl-C to exit: {stopped_after:.2f} s")
    assert stopped_after < 10
    assert repo.snapshots() == []
    assert repo.check()["damaged"] == []


def test_one_runtime_serves_every_call_and_a_forked_child(tmp_path):
    repo = freezer_py.Repository.init(tmp_path / "repo")
    before = {t.name for t in threading.enumerate()}
    for _ in range(5):
        repo.snapshots()
    threads = len(os.listdir("/proc/self/task"))
    for _ in range(20):
        repo.snapshots()
    assert len(os.listdir("/proc/self/task")) == threads, "calls must not add threads"
    assert {t.name for t in threading.enumerate()} == before
    pid = os.fork()
    if pid == 0:
        try:
            ok = freezer_py.Repository.open(tmp_path / "repo").snapshots() == []
            os._exit(0 if ok else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_the_module_is_typed_and_versioned():
    assert freezer_py.__version__ == freezer_py.version()
    assert issubclass(freezer_py.TransientError, ConnectionError)
    assert issubclass(freezer_py.CancelledError, freezer_py.FreezerError)
    assert freezer_py.Repository.backup.__doc__


def test_every_async_twin_gives_what_its_blocking_call_gives(tmp_path):
    data = tree(tmp_path / "data")

    async def main():
        repo = await freezer_py.Repository.init_async(tmp_path / "repo", passphrase="p")
        other = await freezer_py.Repository.init_async(tmp_path / "other")
        for _ in range(2):
            await repo.backup_async(data, backup_name="b", hostname="h")
        copied = await repo.copy_to_async(other)
        checked = await repo.check_async(read_data="all")
        forgot = await repo.forget_async(keep_last=1, backup_name="b", hostname="h")
        pruned = await repo.prune_async(max_unused="100%")
        repaired = await repo.repair_index_async()
        job = {"job_actions": [{"freezer_action": {
            "action": "backup", "path_to_backup": str(data), "backup_name": "j",
            "container": str(tmp_path / "jobs")}}]}
        by_function = await freezer_py.run_job_async(job)
        by_object = await freezer_py.Job(job).run_async()
        info = await freezer_py.run_action_async({"action": "info", "container": str(tmp_path / "jobs")})
        return copied, checked, forgot, pruned, repaired, by_function, by_object, info
    copied, checked, forgot, pruned, repaired, by_function, by_object, info = asyncio.run(main())
    assert len(copied["copied"]) == 2
    assert checked["damaged"] == []
    assert len(forgot["forget"]["forgotten"]) == 1
    assert pruned["dry_run"] is False
    assert repaired["storages"][0]["index_files_written"] >= 1
    assert by_function[0]["complete"] and by_object[0]["complete"]
    assert [s["level"] for s in info["snapshots"]] == [0, 1]
