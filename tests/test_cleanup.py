"""A test session leaves nothing big in the temporary folder: its own model cache and its tmp_path folders
go when it ends (issue 21: a run used to leave about 1.6 GB under /tmp)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_a_session_removes_its_cache_and_tmp_path_folders(tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "HEADLINE_CLUSTER_CACHE"}
    env.update(TMPDIR=str(temp), PYTHONPATH=str(REPO))
    # One quick test that writes into tmp_path, in a session of its own with its own temporary folder.
    test = "tests/test_records.py::test_txt_one_headline_per_line_blank_lines_skipped"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    left = [p for p in temp.rglob("*") if p.is_file()]
    assert not list(temp.glob("headline-cluster-tests-*"))
    assert left == [], left
