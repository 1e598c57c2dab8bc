"""freezer_py from Python: a backup and a restore with upstream's option names, and errors."""
import os

import pytest

import freezer_py


def test_round_trip(tmp_path):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "sub" / "hello.txt").write_text("hello from python\n")
    os.chmod(data / "sub" / "hello.txt", 0o640)
    pass_file = tmp_path / "pass"
    pass_file.write_text("secret\n")
    repo = str(tmp_path / "repo")
    created = freezer_py.init(repo, encrypt_pass_file=str(pass_file))
    assert created["created"] and created["id"]
    backup = freezer_py.run_action({
        "action": "backup", "mode": "fs", "path_to_backup": str(data), "backup_name": "py",
        "container": repo, "storage": "local", "encrypt_pass_file": str(pass_file),
    })
    assert backup["action"] == "backup"
    assert backup["snapshot"]["stats"]["files"] == 1
    restored = freezer_py.run_action({
        "action": "restore", "backup_name": "py", "container": repo,
        "encrypt_pass_file": str(pass_file), "restore_abs_path": str(tmp_path / "out"),
    })
    assert restored["files"] == 1
    out = tmp_path / "out" / "sub" / "hello.txt"
    assert out.read_text() == "hello from python\n"
    assert os.stat(out).st_mode & 0o777 == 0o640


def test_a_jobs_first_backup_creates_its_repository(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "f.txt").write_text("first\n")
    repo = str(tmp_path / "new" / "repo")
    action = {"action": "backup", "path_to_backup": str(data), "backup_name": "py", "container": repo}
    first = freezer_py.run_action(action)
    assert first["created_repository"] == ["local:" + repo]
    second = freezer_py.run_action(action)
    assert "created_repository" not in second
    assert second["snapshot"]["level"] == 1
    # A folder holding other files is never taken over.
    with pytest.raises(freezer_py.BadInputError) as e:
        freezer_py.run_action({**action, "container": str(data)})
    assert "f.txt" in str(e.value) and "as init does" in str(e.value)
    assert "freezer init" not in str(e.value)
    assert sorted(os.listdir(data)) == ["f.txt"]


def test_info_and_admin_actions(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    repo = str(tmp_path / "repo")
    freezer_py.init(repo)
    base = {"path_to_backup": str(data), "backup_name": "py", "hostname": "node1",
            "container": repo, "storage": "local"}
    for i in range(3):
        (data / "f").write_text(f"version {i}\n")
        freezer_py.run_action({**base, "action": "backup", "max_level": "2"})
    info = freezer_py.run_action({**base, "action": "info"})
    assert info["action"] == "info"
    levels = sorted(s["level"] for s in info["snapshots"])
    assert levels == [0, 1, 2]
    dry = freezer_py.run_action({**base, "action": "admin", "keep_last": 1, "dry_run": True})
    assert len(dry["forget"]["forgotten"]) == 2
    done = freezer_py.run_action({**base, "action": "admin", "keep_last": "1"})
    assert done["prune"]["total"]["packs_deleted"] > 0
    assert len(freezer_py.run_action({**base, "action": "info"})["snapshots"]) == 1
    with pytest.raises(freezer_py.BadInputError) as e:
        freezer_py.run_action({**base, "action": "admin"})
    assert "retention rule" in str(e.value)
    storage = {"container": repo, "storage": "local"}
    report = freezer_py.check(storage, read_data="all")
    assert report["damaged"] == [] and report["packs_read"] > 0
    assert freezer_py.prune(storage, dry_run=True)["dry_run"] is True
    packs = [p for p in (tmp_path / "repo" / "data").rglob("*") if p.is_file()]
    biggest = max(packs, key=lambda p: p.stat().st_size)
    raw = bytearray(biggest.read_bytes())
    raw[len(raw) // 2] ^= 1
    biggest.write_bytes(bytes(raw))
    with pytest.raises(freezer_py.IncompleteError) as e:
        freezer_py.check(storage, read_data="1/1")
    assert e.value.args[1]["damaged"][0]["object"].startswith("pack ")
    # The same through an action (an extension), as a job document would run it.
    with pytest.raises(freezer_py.IncompleteError) as e:
        freezer_py.run_action({**storage, "action": "check", "read_data": "all"})
    assert e.value.args[1]["action"] == "check"
    assert e.value.args[1]["damaged"]
    with pytest.raises(freezer_py.BadInputError):
        freezer_py.check(storage, read_data="0/3")
    import shutil
    shutil.rmtree(tmp_path / "repo" / "index")
    repaired = freezer_py.repair_index(storage)
    assert repaired["storages"][0]["index_files_written"] >= 1


def test_a_lost_config_is_repaired_and_init_never_writes_over_it(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "f.txt").write_text("kept\n")
    pass_file = tmp_path / "pass"
    pass_file.write_text("secret\n")
    repo = tmp_path / "repo"
    storage = {"container": str(repo), "encrypt_pass_file": str(pass_file)}
    freezer_py.init(str(repo), encrypt_pass_file=str(pass_file))
    freezer_py.run_action({**storage, "action": "backup", "path_to_backup": str(data),
                           "backup_name": "py"})
    config = (repo / "config").read_bytes()
    (repo / "config").unlink()
    with pytest.raises(freezer_py.BadInputError) as e:
        freezer_py.init(str(repo), encrypt_pass_file=str(pass_file))
    assert "freezer repair config" in str(e.value)
    assert not (repo / "config").exists()
    (tmp_path / "wrong").write_text("wrong\n")
    with pytest.raises(freezer_py.WrongKeyError):
        freezer_py.repair_config({**storage, "encrypt_pass_file": str(tmp_path / "wrong")})
    assert not (repo / "config").exists()
    report = freezer_py.repair_config(storage)
    assert report["storages"][0]["config_was"] == "missing"
    assert report["storages"][0]["config_written"] is True
    assert (repo / "config").read_bytes() == config
    restored = freezer_py.run_action({**storage, "action": "restore", "backup_name": "py",
                                      "restore_abs_path": str(tmp_path / "out")})
    assert restored["files"] == 1


def test_errors_are_in_one_hierarchy(tmp_path):
    with pytest.raises(freezer_py.NotFoundError) as e:
        freezer_py.run_action({"action": "restore", "backup_name": "x", "container": str(tmp_path / "none"),
                               "restore_abs_path": str(tmp_path / "out")})
    assert isinstance(e.value, FileNotFoundError)
    assert isinstance(e.value, freezer_py.FreezerError)
    assert "first with init" in str(e.value)
    with pytest.raises(freezer_py.BadInputError) as e:
        freezer_py.run_action('{"action": "backup", "overwrite": "perhaps"}')
    assert "freezer_action.overwrite" in str(e.value)
    assert isinstance(e.value, ValueError)
    with pytest.raises(freezer_py.BadInputError):
        freezer_py.run_action("{not json")
    pass_file = tmp_path / "pass"
    pass_file.write_text("right\n")
    repo = str(tmp_path / "repo")
    freezer_py.init(repo, encrypt_pass_file=str(pass_file))
    (tmp_path / "wrong").write_text("wrong\n")
    with pytest.raises(freezer_py.WrongKeyError) as e:
        freezer_py.run_action({"action": "backup", "path_to_backup": str(tmp_path), "backup_name": "b",
                               "container": repo, "encrypt_pass_file": str(tmp_path / "wrong")})
    assert isinstance(e.value, PermissionError)


def test_a_misspelt_option_is_refused_and_creates_nothing(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "f.txt").write_text("plain\n")
    pass_file = tmp_path / "pass"
    pass_file.write_text("secret\n")
    repo = tmp_path / "repo"
    action = {"action": "backup", "path_to_backup": str(data), "backup_name": "py",
              "container": str(repo), "encrypt_pas_file": str(pass_file)}
    with pytest.raises(freezer_py.BadInputError) as e:
        freezer_py.run_action(action)
    assert "encrypt_pas_file" in str(e.value)
    assert "did you mean encrypt_pass_file?" in str(e.value)
    assert not repo.exists()
    with pytest.raises(freezer_py.BadInputError) as e:
        freezer_py.check({"container": str(repo), "encrypt_pas_file": str(pass_file)})
    assert "did you mean encrypt_pass_file?" in str(e.value)
    # Allowed: it runs, and the result names what was ignored.
    done = freezer_py.run_action({**action, "exlcude": "*.txt"}, allow_unknown_options=True)
    warnings = done["warnings"]
    assert any(w.startswith("encrypt_pas_file: unknown option, ignored") for w in warnings)
    assert any("did you mean exclude?" in w for w in warnings)
    assert done["snapshot"]["stats"]["files"] == 1
    # Upstream options that do not apply are accepted without a warning.
    again = freezer_py.run_action({**action, "encrypt_pas_file": None, "lvm_srcvol": "/dev/vg/lv",
                                   "mysql_conf": "/etc/my.ini", "proxy": "http://p:3128",
                                   "os_auth_url": "http://keystone:5000/v3"})
    assert not any("unknown" in w for w in again.get("warnings", []))


def test_a_passphrase_of_spaces_makes_no_repository(tmp_path):
    blank = tmp_path / "blank"
    blank.write_text("   \n")
    with pytest.raises(freezer_py.BadInputError) as e:
        freezer_py.init(str(tmp_path / "repo"), encrypt_pass_file=str(blank))
    assert str(blank) in str(e.value)
    assert not (tmp_path / "repo").exists()


def test_version():
    assert freezer_py.version()


def test_a_container_that_is_a_storage_url_is_never_a_local_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    (data / "f.txt").write_text("url\n")
    # file:// is the local storage: the repository is made where the URL says.
    repo = tmp_path / "by-url"
    freezer_py.init(f"file://{repo}")
    assert (repo / "config").exists()
    backup = freezer_py.run_action({"action": "backup", "path_to_backup": str(data),
                                    "backup_name": "py", "container": f"file://{repo}"})
    assert backup["snapshot"]["stats"]["files"] == 1
    # A URL that names another storage than `storage` says is refused, naming both.
    with pytest.raises(freezer_py.BadInputError) as e:
        freezer_py.run_action({"action": "backup", "path_to_backup": str(data),
                               "backup_name": "py", "storage": "local",
                               "container": "s3://bucket/node1"})
    assert "s3 storage URL" in str(e.value) and '"local"' in str(e.value)
    # A bad URL is an error naming it.
    with pytest.raises(freezer_py.FreezerError) as e:
        freezer_py.init("gopher://host/x")
    assert "gopher" in str(e.value)
    # Nothing was made in the working folder under the URL's name.
    assert sorted(os.listdir(tmp_path)) == ["by-url", "data"]
