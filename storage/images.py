"""Whether an item's file may be read now: the one check of the Label page (app.ui.image_problem), the zip export
and the worker (app.jobs.features) before any of them opens a file that was checked at import but may have
changed since. Reading the pixels themselves is `learners.images.read_image` (PIL and numpy only; learners may not
import storage, so the reader lives there and storage imports it)."""
from __future__ import annotations

import stat
from pathlib import Path


def file_problem(path: str | Path, data_root: str | Path) -> str | None:
    """What makes the file at `path` unfit to read now, else None: it is gone, unreadable, no longer a regular file,
    or it resolves (a symlink put in its place) outside `data_root`."""
    try:
        real = Path(path).resolve()
        if not real.is_relative_to(Path(data_root).resolve()):
            return f"now resolves to {real}, outside the data root"
        mode = real.stat().st_mode
    except FileNotFoundError:
        return "the file is gone (deleted or moved since the import)"
    except (OSError, ValueError) as error:
        return f"cannot be read ({getattr(error, 'strerror', None) or error})"
    if not stat.S_ISREG(mode):
        return "is no longer a regular file"
    return None
