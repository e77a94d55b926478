"""Looking into the cache file: shared by the e2e and process parts of
test_cache_persistence.py."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def rows_on_disk(path: Path) -> int:
    if not path.exists():
        return 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute("SELECT count(*) FROM entries").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()
