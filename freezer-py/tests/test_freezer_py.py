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


def test_errors_are_in_one_hierarchy(tmp_path):
    with pytest.raises(freezer_py.NotFoundError) as e:
        freezer_py.run_action({"action": "restore", "backup_name": "x", "container": str(tmp_path / "none"),
                               "restore_abs_path": str(tmp_path / "out")})
    assert isinstance(e.value, FileNotFoundError)
    assert isinstance(e.value, freezer_py.FreezerError)
    assert "freezer init" in str(e.value)
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


def test_version():
    assert freezer_py.version()
