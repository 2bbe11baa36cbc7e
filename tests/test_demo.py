"""The demo (`scripts/demo ROOT --once`): the samples delivered on a new root and an old one."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "scripts/demo"
SAMPLES = REPO / "config/samples"


def test_the_demo_delivers_the_samples_on_a_new_root_and_again_on_the_same_root(
        tmp_path: Path) -> None:
    root = tmp_path / "demo"
    env = {**os.environ, "HOTFOLDER_WEB__LISTEN": "off", "HOTFOLDER_METRICS__LISTEN": "off"}
    samples = sorted(p.name for p in SAMPLES.iterdir())
    results = sorted(name for p in SAMPLES.iterdir() for name in (f"{p.stem}.png",
                                                                  f"{p.stem}.png.json"))
    for run in ("new root", "root used before"):
        demo = subprocess.run([str(DEMO), str(root), "--once"], capture_output=True, text=True,
                              env=env, timeout=300, check=False)
        assert demo.returncode == 0, f"{run}:\n{demo.stdout}{demo.stderr}"
        assert f"results in {root}/outbox/engrave-wood/:" in demo.stdout, run
        assert list((root / "inbox/engrave-wood").iterdir()) == [], run
        assert sorted(p.name for p in (root / "archive/engrave-wood").iterdir()) == samples, run
        assert sorted(p.name for p in (root / "outbox/engrave-wood").iterdir()) == results, run
        assert list((root / "failed").iterdir()) == [], run
