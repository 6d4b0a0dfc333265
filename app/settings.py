"""Where the workbench keeps its data, read from the environment (one place for every setting)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    home: Path
    db_url: str
    lease_seconds: int = 600
    # A running job whose worker has not heartbeaten for this long is taken to be dead and is claimed again
    # (WORKBENCH_STALE_SECONDS; workers heartbeat every min(2 s, a quarter of it)).
    stale_seconds: float = 30.0
    # Web UI access (app.ui.require_access): WORKBENCH_TOKEN opens Label and Dashboard (and everything when no admin
    # token is set); WORKBENCH_ADMIN_TOKEN opens everything. Unset or empty: no sign-in, as before.
    access_token: str | None = field(default=None, repr=False)
    admin_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls) -> Settings:
        home = Path(os.environ.get("WORKBENCH_HOME", REPO_ROOT / "workbench_home")).expanduser().resolve()
        home.mkdir(parents=True, exist_ok=True)
        db_url = os.environ.get("WORKBENCH_DB_URL") or f"sqlite:///{home / 'workbench.sqlite'}"
        lease = int(os.environ.get("WORKBENCH_LEASE_SECONDS", "600"))
        stale = float(os.environ.get("WORKBENCH_STALE_SECONDS", "30"))
        if stale <= 0:
            raise ValueError(f"WORKBENCH_STALE_SECONDS must be > 0, got {stale}")
        return cls(home=home, db_url=db_url, lease_seconds=lease, stale_seconds=stale,
                   access_token=_token("WORKBENCH_TOKEN"), admin_token=_token("WORKBENCH_ADMIN_TOKEN"))


def _token(variable: str) -> str | None:
    """A token from the environment; unset, empty or blank means none."""
    return (os.environ.get(variable) or "").strip() or None
