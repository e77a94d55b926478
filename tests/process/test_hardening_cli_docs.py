"""Issue 12 item 13: what a newcomer tripped on in the docs and the CLI. ``check`` takes
``--config`` as ``run`` does and shows each route's cache step; unknown keys get a "did
you mean"; YAML syntax errors give ``file:line:column``; the README names only keys the
schema has, every ``X-Failover-Source`` value, and no file the repository lacks."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import REPO
from tests.helpers.docs import BUNDLED


def test_the_cli_entry_point_takes_config_too():
    done = subprocess.run(
        [sys.executable, "-m", "proxy", "check", "--config", str(BUNDLED)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "cache (stale for" in done.stdout


def test_no_file_mentions_a_design_document_the_repository_lacks():
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.splitlines()
    mention = re.compile(r"DESIG[N]\.md")  # spelled so that this file does not match itself
    found = [
        name
        for name in files
        if (REPO / name).is_file() and mention.search((REPO / name).read_text(errors="replace"))
    ]
    assert found == []
