"""Extra fuzz groups for bench/bench_fuzz.py: one module per area, each defining

    GROUP = "name"
    def cases(tmp: Path, env: dict[str, Path]) -> list[tuple[str, list[str]]]: ...

Each case is (name, argv for `saferlhf.cli.main`); the input is wrong, so the only good outcome is a clear
one-line error (non-zero exit, no traceback). `env` is bench_fuzz.build_env's dictionary (a tiny model
"base", score models "rm"/"cm", data files, finished runs); `tmp` is a scratch folder for new files.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path


def extra_groups() -> dict[str, object]:
    """GROUP -> cases function of every module in this package."""
    out = {}
    for info in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda i: i.name):
        mod = importlib.import_module(f"fuzz_groups.{info.name}")
        out[mod.GROUP] = mod.cases
    return out
