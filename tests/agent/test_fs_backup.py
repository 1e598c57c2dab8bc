"""Port of freezer-tempest-plugin's agent/test_fs_backup.py (gate): back up a small tree to
local storage with the default engine, restore it, and compare with `diff -r -q`."""

import os
import shutil
import uuid

from agent_base import AgentTest, require


class TestFreezerFSBackup(AgentTest):
    def test_freezer_fs_backup(self):
        require("diff")
        test_id = uuid.uuid4().hex
        source = "/tmp/freezer-test-backup-source/" + test_id
        restore = "/tmp/freezer-test-backup-restore/" + test_id
        storage = "/tmp/freezer-test-backup-local-storage/" + test_id
        try:
            os.makedirs(source)
            for name in "abc":
                open(os.path.join(source, name), "w").close()
            os.makedirs(source + "/subdir")
            for name in "xyz":
                open(os.path.join(source, "subdir", name), "w").close()
            os.makedirs(restore)
            os.makedirs(storage)
            name = "freezer-test-backup-fs-0"

            self.run_subprocess(
                ["freezer-agent", "--path-to-backup", source, "--container", storage,
                 "--backup-name", name, "--storage", "local"],
                "Test backup to local storage.")
            self.run_subprocess(
                ["freezer-agent", "--action", "restore", "--restore-abs-path", restore,
                 "--container", storage, "--backup-name", name, "--storage", "local"],
                "Test restore from local storage.")
            self.run_subprocess(["diff", "-r", "-q", source, restore],
                                "Test backup restore from local storage diff.")
        finally:
            for d in (source, restore, storage):
                shutil.rmtree(d, ignore_errors=True)
