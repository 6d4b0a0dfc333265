"""Where the workbench keeps its data, read from the environment (one place for every setting)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    home: Path
    db_url: str
    lease_seconds: int = 600

    @classmethod
    def from_env(cls) -> Settings:
        home = Path(os.environ.get("WORKBENCH_HOME", REPO_ROOT / "workbench_home")).expanduser().resolve()
        home.mkdir(parents=True, exist_ok=True)
        db_url = os.environ.get("WORKBENCH_DB_URL") or f"sqlite:///{home / 'workbench.sqlite'}"
        lease = int(os.environ.get("WORKBENCH_LEASE_SECONDS", "600"))
        return cls(home=home, db_url=db_url, lease_seconds=lease)
