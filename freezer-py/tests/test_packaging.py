"""freezer_py as a user installs it: `pip install ./freezer-py` into a fresh virtual
environment, then a short script backs the project's corpus up to S3 (a real S3 server on
loopback, s3s-fs, which test.sh installs) and restores it; and the stubs checked by mypy."""
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def s3s_fs():
    path = os.environ.get("FREEZER_TEST_S3S_FS") or str(ROOT / "target" / "tools" / "bin" / "s3s-fs")
    if not os.access(path, os.X_OK):
        pytest.fail(f"s3s-fs not found at {path}: test.sh installs it "
                    "(cargo install s3s-fs --version 0.14.1 --features binary --locked)")
    return path


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    data = tmp_path_factory.mktemp("s3")
    port = free_port()
    creds = {"ACCESS_KEY": "freezer-py-key", "SECRET_KEY": "freezer-py-secret-do-not-log"}
    server = subprocess.Popen([s3s_fs(), "--host", "127.0.0.1", "--port", str(port),
                               "--access-key", creds["ACCESS_KEY"], "--secret-key",
                               creds["SECRET_KEY"], str(data)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail("s3s-fs did not start")
            time.sleep(0.05)
    yield {"endpoint": f"http://127.0.0.1:{port}", **creds}
    server.terminate()
    server.wait()


SCRIPT = """\
import filecmp, os, sys, freezer_py
corpus, out, endpoint = sys.argv[1:4]
storage = freezer_py.Storage("s3://pybucket/node1", endpoint=endpoint)
repo = freezer_py.Repository.init(storage, passphrase=os.environ["FREEZER_PASSPHRASE"])
backup = repo.backup(corpus, backup_name="corpus")
repo.restore(out, backup_name="corpus")
cmp = filecmp.dircmp(corpus, out)
assert not (cmp.left_only or cmp.right_only or cmp.diff_files), cmp.report()
print(backup["curr_backup_level"], backup["total_fs_files"], len(repo.snapshots()))
"""


def test_pip_install_into_a_fresh_venv_then_an_s3_round_trip(tmp_path, s3):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    # The README's command; the debug profile here so the build reuses what the test run built
    # (the README's install builds the release profile).
    env["MATURIN_PEP517_ARGS"] = "--profile dev"
    env.setdefault("CARGO_TARGET_DIR", str(ROOT / "target"))
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                    str(ROOT / "freezer-py")], check=True, env=env, cwd=tmp_path)
    corpus = tmp_path / "corpus"
    subprocess.run([sys.executable, str(ROOT / "benches" / "corpus.py"), "make", "--out",
                    str(corpus), "--size-mb", "8"], check=True, stdout=subprocess.DEVNULL)
    (tmp_path / "fresh.py").write_text(SCRIPT)
    run_env = {"PATH": env["PATH"], "ACCESS_KEY": s3["ACCESS_KEY"],
               "SECRET_KEY": s3["SECRET_KEY"], "FREEZER_PASSPHRASE": "a fresh machine"}
    done = subprocess.run([str(venv / "bin" / "python"), str(tmp_path / "fresh.py"), str(corpus),
                           str(tmp_path / "out"), s3["endpoint"]],
                          env=run_env, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    level, files, snapshots = done.stdout.split()
    assert (level, snapshots) == ("0", "1") and int(files) > 100
    # filecmp compares names and stat signatures shallowly: compare the bytes too.
    diff = subprocess.run(["diff", "-r", "--no-dereference", str(corpus), str(tmp_path / "out")],
                          capture_output=True, text=True)
    assert diff.returncode == 0, diff.stdout[:2000]
    # The wheel is typed: the stub and py.typed were installed beside the module.
    site = next((venv / "lib").glob("python3*/site-packages"))
    assert (site / "freezer_py" / "py.typed").exists() or (site / "freezer_py.pyi").exists() \
        or list(site.glob("freezer_py*/py.typed")), sorted(p.name for p in site.iterdir())


def test_no_secret_reaches_an_error_message(tmp_path, s3):
    import freezer_py
    storage = freezer_py.Storage("s3://pybucket/none", endpoint=s3["endpoint"],
                                 access_key=s3["ACCESS_KEY"], secret_key="wrong-secret-value")
    with pytest.raises(freezer_py.FreezerError) as e:
        freezer_py.Repository.init(storage)
    assert "wrong-secret-value" not in str(e.value)
    assert "wrong-secret-value" not in repr(storage)


USAGE = """\
import asyncio
import freezer_py


def report(p: freezer_py.ProgressReport) -> None:
    print(p["bytes"], p["total_bytes"])


def main(path: str) -> int:
    repo = freezer_py.Repository.init(path, passphrase="x")
    result = repo.backup("/etc", backup_name="etc", progress=report,
                         cancel=freezer_py.CancelToken())
    snaps: list[freezer_py.Snapshot] = repo.snapshots()
    level: int = snaps[0].level
    try:
        repo.restore("/tmp/out", backup_name="etc")
    except freezer_py.IncompleteError as e:
        print(e.args[1])
    job = freezer_py.Job({"job_actions": []})
    reports: list[dict[str, object]] = job.run()
    print(result["curr_backup_level"], level, reports, freezer_py.__version__)
    return len(snaps)


async def twins(repo: freezer_py.Repository) -> None:
    done = await asyncio.gather(repo.backup_async("/etc", backup_name="a"), repo.check_async())
    print(done)
"""


def test_the_stubs_type_check_with_mypy(tmp_path):
    mypy = shutil.which("mypy", path=os.path.dirname(sys.executable))
    if mypy is None:
        pytest.fail("mypy is not installed beside this python: test.sh installs it")
    (tmp_path / "usage.py").write_text(USAGE)
    stub = ROOT / "freezer-py" / "freezer_py.pyi"
    checked = subprocess.run([mypy, "--strict", "--no-incremental", str(stub)],
                             capture_output=True, text=True, cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    used = subprocess.run([mypy, "--strict", "--no-incremental", "usage.py"],
                          capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "MYPYPATH": str(stub.parent)})
    assert used.returncode == 0, used.stdout + used.stderr
    # A wrong use is caught: the stubs say something.
    (tmp_path / "wrong.py").write_text("import freezer_py\nfreezer_py.Repository.open(42)\n")
    wrong = subprocess.run([mypy, "--strict", "--no-incremental", "wrong.py"],
                           capture_output=True, text=True, cwd=tmp_path,
                           env={**os.environ, "MYPYPATH": str(stub.parent)})
    assert wrong.returncode != 0 and "Repository" in wrong.stdout, wrong.stdout
    # The stubs match the module: every public name of one is in the other.
    import freezer_py
    stubbed = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import ast
        tree = ast.parse(open({str(stub)!r}).read())
        names = {{n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}}
        print(" ".join(sorted(names)))
    """)], capture_output=True, text=True, check=True).stdout.split()
    import types
    public = {n for n in dir(freezer_py)
              if not n.startswith("_") and not isinstance(getattr(freezer_py, n), types.ModuleType)}
    helpers = {"Readable", "Writable", "ProgressReport"}
    assert set(stubbed) - helpers == public, (set(stubbed) ^ public)
