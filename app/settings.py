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
    # A held item (queue entry) not renewed for this long returns to the queue (WORKBENCH_LEASE_SECONDS). The Label
    # page's surface renews what it holds with a heartbeat (every quarter of it, at most 15 s) while the tab is open,
    # so a closed tab's items come back within this time; both claim paths (the surface, Workbench.next_assignment)
    # use it.
    lease_seconds: int = 60
    # The Label page (app.labeling.SurfaceOptions): a press this soon after a new image is painted is ignored
    # (WORKBENCH_GUARD_MS), so is the same answer again this soon after the last one (WORKBENCH_REPRESS_MS: a
    # "did it register?" press would land on the next item), and this many items are held ahead for each
    # annotator (WORKBENCH_LABEL_AHEAD).
    guard_ms: int = 120
    repress_ms: int = 350
    label_ahead: int = 5
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
        lease = int(os.environ.get("WORKBENCH_LEASE_SECONDS", "60"))
        if lease < 2:
            raise ValueError(f"WORKBENCH_LEASE_SECONDS must be 2 or more, got {lease}")
        guard = int(os.environ.get("WORKBENCH_GUARD_MS", "120"))
        repress = int(os.environ.get("WORKBENCH_REPRESS_MS", "350"))
        ahead = int(os.environ.get("WORKBENCH_LABEL_AHEAD", "5"))
        if guard < 0 or repress < 0 or ahead < 1:
            raise ValueError(f"WORKBENCH_GUARD_MS and WORKBENCH_REPRESS_MS must be >= 0 and WORKBENCH_LABEL_AHEAD "
                             f">= 1, got {guard}, {repress}, {ahead}")
        stale = float(os.environ.get("WORKBENCH_STALE_SECONDS", "30"))
        if stale <= 0:
            raise ValueError(f"WORKBENCH_STALE_SECONDS must be > 0, got {stale}")
        return cls(home=home, db_url=db_url, lease_seconds=lease, stale_seconds=stale, guard_ms=guard, repress_ms=repress,
                   label_ahead=ahead,
                   access_token=_token("WORKBENCH_TOKEN"), admin_token=_token("WORKBENCH_ADMIN_TOKEN"))


def _token(variable: str) -> str | None:
    """A token from the environment; unset, empty or blank means none."""
    return (os.environ.get(variable) or "").strip() or None
