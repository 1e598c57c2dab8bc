"""Port of freezer-tempest-plugin's agent/test_metadata_checksum.py (gate):
`--consistency-check` puts `consistency_checksum` in the metadata; a restore with that
checksum succeeds; with 64 zeros it exits 1 with nothing on stdout and a message on stderr."""

import subprocess

import pytest

from agent_base import AgentTest, TempTree, load_metadata


class TestFreezerMetadataChecksum(AgentTest):
    backup_name = "backup_checksum_test"

    @pytest.fixture(autouse=True)
    def _dest(self, _agent_setup):
        self.dest_tree = TempTree()
        yield
        self.dest_tree.cleanup()

    def _restore_args(self, metadata, checksum):
        return ["freezer-agent", "--action", "restore", "--restore-abs-path", self.dest_tree.path,
                "--container", metadata["container"], "--backup-name", self.backup_name,
                "--storage", "local", "--consistency-checksum", checksum]

    def test_freezer_fs_backup_valid_checksum(self):
        metadata = load_metadata(self.create_local_backup(consistency_check=True))
        assert "consistency_checksum" in metadata, "Checksum must exist in stored metadata."
        self.run_subprocess(self._restore_args(metadata, metadata["consistency_checksum"]),
                            "Test restore from local storage with computed checksum.")

    def test_freezer_fs_backup_bad_checksum(self):
        metadata = load_metadata(self.create_local_backup(consistency_check=True))
        proc = subprocess.run(self._restore_args(metadata, "0" * 64), capture_output=True,
                              env=self.environ, text=True)
        message = f"Restore process should fail with checksum error. Output: {proc.stdout} Error: {proc.stderr}"
        assert proc.returncode == 1, message
        assert proc.stdout == "", message
        assert proc.stderr != "", message
