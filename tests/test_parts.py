"""The composition root: the local path (SQLite queue, outbox) loads neither S3 nor Redis code.

Huey's storage module imports the `redis` package by itself whenever it is installed, so
the test looks for hotfolder's Redis journal rather than for that package.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from service_helpers import make_root

PROBE = textwrap.dedent("""
    import json, sys
    from hotfolder.config import load_config
    from hotfolder.parts import assemble
    from hotfolder.service import Service

    parts = assemble(load_config(sys.argv[1]), watching=True)
    Service(parts, notifier=object())
    print(json.dumps({"sink": type(parts.sink).__name__, "modules": sorted(sys.modules)}))
""")


def test_the_local_path_imports_neither_s3_nor_the_redis_journal(tmp_path: Path) -> None:
    config = make_root(tmp_path / "root")
    done = subprocess.run([sys.executable, "-c", PROBE, str(config)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["sink"] == "OutboxSink"
    assert not [name for name in report["modules"] if name.split(".")[0] in ("boto3", "botocore")]
    assert "hotfolder.journal.redis" not in report["modules"]
    assert "hotfolder.sinks.s3" not in report["modules"]
    assert (tmp_path / "root" / "state" / "journal.db").exists()
