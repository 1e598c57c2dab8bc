"""Port of freezer-tempest-plugin's agent/test_backup_compress.py (gate): gzip, bzip2 and xz
backups with `--compress X` (argparse's prefix of --compression) and `--metadata-out`, the
metadata's `compression`, the MIME type of the stored
`data/tar/<hostname>_<backup_name>/<time_stamp>/<curr_backup_level>_<time_stamp>/data`
as `file` sees it, and the restored tree."""

import os
import subprocess

import pytest

from agent_base import AgentTest, TempTree, load_metadata, require


class TestFreezerCompress(AgentTest):
    @pytest.fixture(autouse=True)
    def _trees(self, _agent_setup):
        require("file")
        require("diff")
        # Empty files, as upstream's test makes them.
        self.source_tree = TempTree()
        self.source_tree.add_random_data(size=0)
        self.storage_tree = TempTree()
        self.dest_tree = TempTree()
        yield
        for t in (self.source_tree, self.storage_tree, self.dest_tree):
            t.cleanup()

    def _backup(self, name, method):
        self.run_subprocess(
            ["freezer-agent", "--path-to-backup", self.source_tree.path,
             "--container", self.storage_tree.path, "--backup-name", name,
             "--storage", "local", "--compress", method,
             "--metadata-out", os.path.join(self.storage_tree.path, "metadata.json")],
            f"Test {method} backup to local storage.")

    def _restore(self, name, method):
        self.run_subprocess(
            ["freezer-agent", "--action", "restore", "--restore-abs-path", self.dest_tree.path,
             "--container", self.storage_tree.path, "--backup-name", name,
             "--storage", "local", "--compress", method],
            "Test restore from local storage.")

    def _metadata(self):
        return load_metadata(os.path.join(self.storage_tree.path, "metadata.json"))

    def _mimetype(self, metadata):
        data = os.path.join(
            self.storage_tree.path, "data", "tar",
            "{}_{}".format(metadata["hostname"], metadata["backup_name"]),
            str(metadata["time_stamp"]),
            "{}_{}".format(metadata["curr_backup_level"], metadata["time_stamp"]),
            "data")
        assert os.path.exists(data), data
        proc = subprocess.run(["file", "-b", "--mime-type", data], capture_output=True, text=True)
        assert proc.returncode == 0
        return proc.stdout.strip()

    def _check(self, name, method, mimetypes):
        self._backup(name, method)
        self._restore(name, method)
        metadata = self._metadata()
        assert "compression" in metadata
        assert metadata["compression"] == method
        assert self._mimetype(metadata) in mimetypes
        self.run_subprocess(["diff", "-r", "-q", self.source_tree.path, self.dest_tree.path],
                            "Verify restored copy is identical to original.")

    def test_freezer_backup_compress_gzip(self):
        self._check("freezer-test-backup-gzip-0", "gzip", ["application/gzip", "application/x-gzip"])

    def test_freezer_backup_compress_bzip2(self):
        self._check("freezer-test-backup-bzip2-0", "bzip2", ["application/x-bzip2"])

    def test_freezer_backup_compress_xz(self):
        self._check("freezer-test-backup-xz-0", "xz", ["application/x-xz"])
