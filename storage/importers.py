"""Import a pool of images: an image folder (flat or one sub-folder per class) or a CSV/JSONL manifest.

Reading a source (`scan_folder`, `read_manifest`) checks every file and stores nothing; `store_import` then adds
the items inside the caller's write transaction, so an import is all or nothing:

    result = read_manifest(Path("pool/manifest.csv"))
    with db.write() as session:
        store_import(session, project_id, result, eval_size=100, seed=0)

Every problem found (unreadable, corrupt or truncated image, decompression bomb, unknown label, duplicate path,
path outside the data root, missing file, empty source) is collected; one `ImportProblem` then lists the first
`MAX_REPORTED_PROBLEMS` of them, each naming the file (and the manifest row), so a manifest can be fixed in one go.

Large imports: up to FULL_CHECK_LIMIT files every file is decoded in full (`check_image`). Above it, decoding each
of a million files would take minutes, so every file gets the checks that need no decoding (path rules, a regular
file inside the data root, PIL identifies it as an image from its header, its declared size is under the
decompression-bomb limit, it is hashed: `check_image_header`), and FULL_CHECK_SAMPLE files spread evenly over the
import are decoded in full. A file damaged past its header then gets in; the worker's embedding leaves it out of
selection and training and names it, and the Label page decodes each file (`check_image`) before it shows it. The
import says so in a warning.

Class names are Unicode NFC: 'é' typed as one code point and as 'e' + a combining accent (macOS writes folder names
the second way) is one class, whichever way a folder, a manifest or the given classes spell it.
"""
from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import logging
import os
import stat
import unicodedata
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable

import numpy as np
from PIL import Image, UnidentifiedImageError
from sqlalchemy import JSON, bindparam, insert, select
from sqlalchemy.orm import Session

from learners.images import ImageConversionError, read_image
from storage.errors import StorageError
from storage.image_headers import declared_size
from storage.models import Item, Project

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
MANIFEST_EXTENSIONS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
SPLITS = ("pool", "eval")
MAX_REPORTED_PROBLEMS = 20
MULTI_LABEL_SEPARATOR = ";"  # between the tags of a multi-label CSV cell, on import and export
# Column separators a CSV manifest may use, tried in this order: a spreadsheet in a locale with a decimal comma
# saves "CSV" with ';', and tab-separated files are common too.
CSV_DELIMITERS = (",", ";", "\t", "|")
NAME_MAX_BYTES = 255  # one folder or file name (ext4, APFS: UTF-8 bytes; NTFS: 255 UTF-16 units, never more)

# Characters that make a spreadsheet read a cell as a formula; exports prefix such cells with an apostrophe.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

# Large imports (module doc): up to this many files every file is decoded in full; above it every file's header
# is checked and hashed, and FULL_CHECK_SAMPLE of them, spread evenly over the import, are decoded in full.
FULL_CHECK_LIMIT = 20_000
FULL_CHECK_SAMPLE = 2_000  # files decoded in full in a large import, spread evenly over it
HEADER_READ_BYTES = 1 << 20  # a file up to this size is read once, for the hash and the header check both
PATHS_SHARE = 0.2  # of the reading's progress: names, labels and paths; the rest is the files' contents
STORE_BATCH = 50_000  # rows per INSERT batch of store_import (its progress is reported between them)

Progress = Callable[[float, str], None]
log = logging.getLogger(__name__)


class ImportProblem(StorageError, ValueError):
    """Bad import input. The message names each file (and manifest row) and what is wrong with it."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems: list[str] = problems if problems is not None else [message]


@dataclass
class ImportedItem:
    key: str  # path relative to the data root, forward slashes
    content_hash: str  # sha256 hex of the file bytes
    gold: list[int] | None  # sorted class indices into ImportResult.classes, None when unlabeled
    split: str | None  # 'pool' / 'eval' when the source says so, else None (store_import decides)


@dataclass
class ImportResult:
    data_root: Path
    classes: list[str]
    items: list[ImportedItem]
    skipped: list[str] = field(default_factory=list)  # non-image files a folder scan ignored (hidden ones not listed)
    # Said to the user but not refused: e.g. the same image content in the eval set and the pool (store_import).
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Entry:
    """One file to import, before validation."""

    where: str  # how messages name it: "cats/x.png" or "manifest.csv row 3 ('cats/x.png')"
    path: Path | str  # data root / key, symlinks not resolved
    key: str
    labels: list[str] | None  # None: unlabeled; [] is a multi-label answer ("none of these")
    split: str | None


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, what: str) -> None:
        self.items.append(f"{where}: {what}")

    def raise_if_any(self, source: str) -> None:
        if not self.items:
            return
        count = len(self.items)
        shown = self.items[:MAX_REPORTED_PROBLEMS]
        lines = [f"{count} problem{'s' if count != 1 else ''} in {source}:"] + [f"  - {p}" for p in shown]
        if count > len(shown):
            lines.append(f"  ... and {count - len(shown)} more (fix these and import again to see them)")
        raise ImportProblem("\n".join(lines), list(self.items))


# ---------------------------------------------------------------------------------------------------------------
# Folders


def scan_folder(root: Path, classes: list[str] | None = None, progress: Progress | None = None,
                full_check_limit: int = FULL_CHECK_LIMIT, full_check_sample: int = FULL_CHECK_SAMPLE) -> ImportResult:
    """Read a folder of images.

    Layouts: a flat folder of images (no gold labels), or one sub-folder per class (the sub-folder name is the
    class, images anywhere below it get that gold label). Class order is the sorted sub-folder names unless
    `classes` is given; then a class sub-folder not in `classes` is an error. Files with an image extension
    (IMAGE_EXTENSIONS, any case) are imported; other files are ignored and listed in `skipped`; hidden files
    and folders (name starting with '.') are ignored silently. Items come in sorted key order. Over
    `full_check_limit` files only `full_check_sample` of them are decoded in full (module doc: large imports).
    """
    root = Path(root)
    if not root.is_dir():
        raise ImportProblem(f"{root}: not a folder (or it does not exist)")
    if classes is not None:
        classes = _check_classes(classes)
    root = root.resolve()
    problems = _Problems()
    skipped: list[str] = []

    top_images: list[Path] = []
    class_dirs: dict[str, list[Path]] = {}  # class name (NFC) -> its images, from every folder spelling it
    spellings: dict[str, list[str]] = {}
    for child in sorted(root.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_dir():
            images = _images_below(child, root, problems, skipped)
            if images:
                name = class_name(child.name)
                class_dirs.setdefault(name, []).extend(images)
                spellings.setdefault(name, []).append(child.name)
        elif _is_image_name(child):
            top_images.append(child)
        else:
            skipped.append(_key(child, root))
    merged = [name for name, folders in spellings.items() if len(folders) > 1]

    if top_images and class_dirs:
        raise ImportProblem(
            f"{root}: has both images at the top level ({_key(top_images[0], root)}, ...) and class sub-folders "
            f"({', '.join(sorted(class_dirs)[:5])}); use either a flat folder or one sub-folder per class"
        )

    entries: list[_Entry] = []
    if class_dirs:
        if classes is None:
            classes = sorted(class_dirs)
        for name, paths in class_dirs.items():
            if (bad := _name_problem(name)) is not None:
                problems.add(f"{shown_name(name)}/", f"sub-folder: {bad}")
                continue
            if name not in classes:
                problems.add(f"{name}/", f"sub-folder {name!r} is not one of the project's classes {classes}")
                continue
            entries += [_Entry(shown_name(_key(p, root)), p, _key(p, root), [name], None) for p in paths]
    else:
        entries = [_Entry(shown_name(_key(p, root)), p, _key(p, root), None, None) for p in top_images]
        classes = list(classes) if classes is not None else []
    entries.sort(key=lambda e: e.key)

    if not entries and not problems.items:
        hint = f" ({len(skipped)} other file(s) ignored, e.g. {shown_name(skipped[0])})" if skipped else ""
        raise ImportProblem(
            f"{root}: no images found{hint}; image extensions are {', '.join(sorted(IMAGE_EXTENSIONS))}"
        )
    items, checked = _validate(entries, root, classes, problems, progress, full_check_limit, full_check_sample)
    problems.raise_if_any(str(root))
    notes = [f"the sub-folders {', '.join(repr(shown_name(f)) for f in spellings[name])} spell one name with "
             f"different Unicode code points (an accent as its own character or not): they are one class {name!r}"
             for name in merged] + ([checked] if checked else [])
    return ImportResult(data_root=root, classes=list(classes), items=items,
                        skipped=sorted(shown_name(k) for k in skipped), warnings=notes)


def _images_below(folder: Path, root: Path, problems: _Problems, skipped: list[str]) -> list[Path]:
    """Image files anywhere below `folder`, following symlinked folders that stay inside `root`."""
    found: list[Path] = []
    seen: set[Path] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        here = Path(dirpath)
        real = here.resolve()
        if not real.is_relative_to(root):
            problems.add(_key(here, root) + "/", f"folder is a link to {real}, outside the data root {root}")
            dirnames.clear()
            continue
        if real in seen:  # a link back to a folder already walked
            dirnames.clear()
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = here / name
            if _is_image_name(path):
                found.append(path)
            else:
                skipped.append(_key(path, root))
    return found


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _key(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def shown_name(name: str) -> str:
    """A file name as messages can show it: bytes that are not UTF-8 (a Latin-1 name read through os.fsdecode's
    surrogateescape) become \\xNN escapes instead of raising UnicodeEncodeError when printed or stored."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        pass
    try:
        return os.fsencode(name).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that no file name decodes to (a JSON manifest's "\\ud800")
        return name.encode("utf-8", "backslashreplace").decode("utf-8")


def class_name(name: str) -> str:
    """A class name as the project stores it: Unicode NFC (see the module doc)."""
    return unicodedata.normalize("NFC", name)


def _name_problem(name: str) -> str | None:
    """Why a file or folder name cannot be stored (keys and class names are UTF-8 text), else None."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return (f"the name {shown_name(name)!r} is not valid UTF-8 (e.g. a Latin-1 name); "
                "rename it (e.g. convmv -f latin1 -t utf8) and import again")
    return None


# ---------------------------------------------------------------------------------------------------------------
# Manifests


def read_manifest(
    path: Path,
    data_root: Path | None = None,
    classes: list[str] | None = None,
    progress: Progress | None = None,
    multi_label: bool = False,
    full_check_limit: int = FULL_CHECK_LIMIT,
    full_check_sample: int = FULL_CHECK_SAMPLE,
) -> ImportResult:
    """Read a CSV (.csv) or JSON-lines (.jsonl / .ndjson) manifest.

    With `multi_label` a label is a set of tags: ';'-separated names in a CSV cell, a JSON list in JSONL, where
    [] means "none of these" (labeled, no tag) and null or a missing label means unlabeled. A CSV cannot say
    "none of these" (an empty cell is unlabeled): use JSONL for that.

    CSV: a header row with `path` and optionally `label` and `split` (other columns are ignored); a label is one
    class name. Columns are separated by ',' or, when the header has a `path` column only that way, by ';', a
    tab or '|' (CSV_DELIMITERS). JSONL: one object per line with `path`, optional `label` (a class name, a list
    of names for multi-label, or null) and optional `split`. Paths are relative to `data_root` (default: the
    manifest's folder) or absolute inside it; backslashes are read as folder separators; a folder or file name
    over NAME_MAX_BYTES bytes is refused. An empty label means unlabeled; spaces around a label are dropped
    unless the label with them is one of the given `classes`. `split` is empty, 'pool' or 'eval'. Classes are the sorted distinct labels unless `classes` is given, in which case any
    other label is an error. CSV cells written by our exporters with a formula-guard apostrophe are read back
    without it (see `unguard_cell`). CSV row numbers count the header as row 1, as spreadsheets do. Over
    `full_check_limit` files only `full_check_sample` of them are decoded in full (module doc: large imports).
    """
    path = Path(path)
    kind = MANIFEST_EXTENSIONS.get(path.suffix.lower())
    if kind is None:
        raise ImportProblem(f"{path}: unknown manifest type {path.suffix!r}; use .csv, .jsonl or .ndjson")
    if not path.is_file():
        raise ImportProblem(f"{path}: manifest file not found")
    root_given = Path(data_root) if data_root is not None else path.parent
    if not root_given.is_dir():
        raise ImportProblem(f"{root_given}: data root is not a folder (or it does not exist)")
    if classes is not None:
        classes = _check_classes(classes)
    try:
        # Bytes decoded as they are: read_text's newline translation would turn a CR LF inside a quoted CSV
        # cell (a class name with a line break) into LF, and the name would not round-trip.
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ImportProblem(f"{path}: not UTF-8 text ({e})") from e
    except OSError as e:
        raise ImportProblem(f"{path}: cannot read the manifest ({e.strerror or e})") from e

    root = root_given.resolve()
    problems = _Problems()
    rows = _csv_rows(path, text, multi_label) if kind == "csv" else _jsonl_rows(path, text, problems, multi_label)
    if not rows and not problems.items:
        raise ImportProblem(f"{path}: the manifest has no rows")

    entries: list[_Entry] = []
    root_abs, root_text = Path(os.path.abspath(root_given)), os.fspath(root).rstrip("/")
    for where, raw_path, labels, raw_split in rows:
        split = (raw_split or "").strip().lower() or None
        if split is not None and split not in SPLITS:
            problems.add(where, f"split {raw_split!r} must be empty, 'pool' or 'eval'")
            continue
        located = _locate(raw_path, root, root_abs, root_text)
        if isinstance(located, str):
            problems.add(where, located)
            continue
        file_path, key = located
        entries.append(_Entry(f"{where} ({_shorten(key)!r})", file_path, key, labels, split))

    if classes is None:
        classes = sorted({class_name(label).strip() for e in entries for label in e.labels or []})
    items, checked = _validate(entries, root, classes, problems, progress, full_check_limit, full_check_sample)
    problems.raise_if_any(str(path))
    return ImportResult(data_root=root, classes=list(classes), items=items, warnings=[checked] if checked else [])


_Row = tuple[str, str, list[str] | None, str | None]  # where, path, labels (None: unlabeled), split


def _csv_header(path: Path, text: str) -> tuple[str, list[str], list[str]]:
    """(delimiter, header cells, their column names) of the first of CSV_DELIMITERS whose header row has a `path`
    column; a worded ImportProblem when none has, saying which separator the header looks like it uses."""
    headers: dict[str, list[str]] = {}
    for delimiter in CSV_DELIMITERS:
        try:
            header = next(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
        except StopIteration:
            raise ImportProblem(f"{path}: the manifest is empty (expected a header row with a 'path' column)") from None
        except csv.Error as e:
            if delimiter == ",":
                raise ImportProblem(f"{path}: row 1: not valid CSV ({e})") from e
            continue
        columns = [unguard_cell(h).strip().lower() for h in header]
        if "path" in columns:
            return delimiter, header, columns
        headers[delimiter] = header
    names = {",": "','", ";": "';'", "\t": "a tab", "|": "'|'"}
    looks = max(headers, key=lambda d: len(headers[d]))  # the separator that splits the header into most columns
    how = f"; it looks {names[looks]}-separated, with the columns {headers[looks]}" if looks != "," else ""
    raise ImportProblem(f"{path}: row 1: the header {headers[',']} has no 'path' column{how} (a manifest needs a "
                        f"'path' column; columns may be separated by {', '.join(names.values())})")


def _csv_rows(path: Path, text: str, multi_label: bool = False) -> list[_Row]:
    delimiter, header, columns = _csv_header(path, text)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    next(reader)
    at = {name: columns.index(name) for name in ("path", "label", "split") if name in columns}

    def cell(values: list[str], name: str) -> str:
        i = at.get(name)
        return unguard_cell(values[i]) if i is not None and i < len(values) else ""

    rows: list[_Row] = []
    number = 1
    try:
        for values in reader:
            number += 1
            if not any(v.strip() for v in values):
                continue  # blank line
            label = cell(values, "label")
            if not label.strip():
                labels = None
            elif multi_label:
                labels = [tag for tag in label.split(MULTI_LABEL_SEPARATOR) if tag.strip()]
            else:
                labels = [label]
            rows.append((f"{path.name} row {number}", cell(values, "path"), labels, cell(values, "split")))
    except csv.Error as e:
        raise ImportProblem(f"{path}: row {number + 1}: not valid CSV ({e})") from e
    return rows


def _jsonl_rows(path: Path, text: str, problems: _Problems, multi_label: bool = False) -> list[_Row]:
    rows: list[_Row] = []
    # Lines end at LF only (a CR before it is JSON whitespace): str.splitlines would also split at U+2028, U+2029,
    # U+0085 and other separators that json.dumps(ensure_ascii=False) leaves unescaped inside strings.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path.name} line {number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            problems.add(where, f"not valid JSON ({e.msg} at column {e.colno})")
            continue
        if not isinstance(obj, dict):
            problems.add(where, f"expected a JSON object, got {type(obj).__name__}")
            continue
        raw_path = obj.get("path")
        if not isinstance(raw_path, str):
            problems.add(where, "'path' is missing or not a string")
            continue
        valid, labels = _json_labels(obj.get("label"))
        if not valid:
            problems.add(where, f"'label' must be a class name, a list of class names or null, got {obj.get('label')!r}")
            continue
        if labels == [] and not multi_label:
            labels = None
        split = obj.get("split")
        if split is not None and not isinstance(split, str):
            problems.add(where, f"'split' must be a string, got {split!r}")
            continue
        rows.append((where, raw_path, labels, split))
    return rows


def _json_labels(value: object) -> tuple[bool, list[str] | None]:
    """(valid, label names) of a JSON label: null or "" is unlabeled (None), a list gives its names ([] for an
    empty list). Integers read as their text; any other type is not valid."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return True, None
    values = value if isinstance(value, list) else [value]
    labels: list[str] = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (str, int, type(None))):
            return False, None
        if v is not None and str(v).strip():
            labels.append(str(v))
    return True, labels


def _locate(raw: str, root: Path, root_abs: Path, root_text: str) -> tuple[Path | str, str] | str:
    """(path under the data root, key) for a manifest path, or what is wrong with it."""
    text = raw.strip().replace("\\", "/")
    parts = text.split("/")
    if text and "\x00" not in text and "" not in parts and "." not in parts and ".." not in parts and all(
            len(part) * 4 <= NAME_MAX_BYTES for part in parts):
        return f"{root_text}/{text}", text  # the common case, without building paths (a manifest has 1M rows)
    if not text:
        return "empty path"
    if "\x00" in text:
        return "path contains a NUL character"
    posix = PurePosixPath(text)
    if ".." in posix.parts:
        return "path contains '..'; paths must stay inside the data root"
    if posix.is_absolute():
        for base in (root_abs, root):
            if Path(text).is_relative_to(base):
                relative = PurePosixPath(Path(text).relative_to(base).as_posix())
                break
        else:
            return f"absolute path is outside the data root {root}"
    else:
        relative = posix
    if not relative.parts:
        return "path names the data root itself, not a file"
    too_long = [part for part in relative.parts if _bytes(part) > NAME_MAX_BYTES]
    if too_long:
        return (f"the name {_shorten(too_long[0])!r} in this path is {_bytes(too_long[0])} bytes long; "
                f"file systems allow {NAME_MAX_BYTES} bytes per folder or file name")
    return root.joinpath(*relative.parts), relative.as_posix()


def _bytes(name: str) -> int:
    """The length of `name` in a file system's UTF-8 bytes."""
    return len(name.encode("utf-8", "surrogatepass"))


def _shorten(text: str) -> str:
    """`text` as a message shows it: a hostile name can be kilobytes long."""
    text = shown_name(text)
    return text if len(text) <= 120 else text[:100] + "..." + text[-17:]


# ---------------------------------------------------------------------------------------------------------------
# Validation shared by folders and manifests


def _validate(
    entries: list[_Entry], root: Path, classes: list[str], problems: _Problems, progress: Progress | None,
    full_check_limit: int = FULL_CHECK_LIMIT, full_check_sample: int = FULL_CHECK_SAMPLE,
) -> tuple[list[ImportedItem], str | None]:
    """The items of the entries that pass every check, and a note of how they were checked when the import was
    too large to decode every file (module doc: large imports). Problems are added in the entries' order."""
    index = {name: i for i, name in enumerate(classes)}
    first_seen: dict[str, str] = {}
    folders: dict[str, str | None] = {}  # folder as given -> resolved (None: it cannot be resolved)
    root_text = os.fspath(root)
    inside = root_text if root_text.endswith(os.sep) else root_text + os.sep
    large = len(entries) > full_check_limit
    every = max(1, len(entries) // max(1, full_check_sample)) if large else 1
    step = max(1, len(entries) // 200)
    found: list[tuple[_Entry, list[int] | None, str] | str] = []  # per entry: (entry, gold, file) or a problem
    for n, entry in enumerate(entries):
        if progress is not None and n % step == 0:
            progress(PATHS_SHARE * n / len(entries), f"checking the path of {entry.key}")
        found.append(_check_entry(entry, index, classes, folders, first_seen, root_text, inside))
    files = [(checked[2], n % every == 0) for n, checked in enumerate(found) if not isinstance(checked, str)]
    verdicts = iter(_check_files(files, progress))
    items: list[ImportedItem] = []
    for entry, checked in zip(entries, found):
        if isinstance(checked, str):
            problems.add(entry.where, checked)
            continue
        content_hash, problem = next(verdicts)
        if problem is not None:
            problems.add(entry.where, problem)
            continue
        items.append(ImportedItem(key=entry.key, content_hash=content_hash, gold=checked[1], split=entry.split))
    if progress is not None:
        progress(1.0, f"checked {len(entries)} files")
    note = None
    if large:
        note = (f"{len(entries)} files are more than {full_check_limit}: each was checked to be a regular file "
                f"with an image header (format, size, the decompression-bomb limit) and hashed, and one in "
                f"{every} was decoded in full; a file damaged past its header is found when the worker embeds "
                "it (it is left out of selection and training, and named) or when the Label page would show it")
    return items, note


def _check_entry(entry: _Entry, index: dict[str, int], classes: list[str], folders: dict[str, str | None],
                 first_seen: dict[str, str], root_text: str, inside: str) -> tuple[_Entry, list[int] | None, str] | str:
    """(entry, its gold class indices, the file resolved) when its name, labels and path are good, else what is
    wrong; what the file holds is checked after (`_check_files`)."""
    if (bad := _name_problem(entry.key)) is not None:
        return bad
    labels = [_class_of(label, index) for label in entry.labels or []]
    unknown = [label for label in labels if label not in index]
    if unknown:
        return f"unknown label {unknown[0]!r}; classes are {classes}"
    found = _real_path(os.fspath(entry.path), folders)
    if isinstance(found, str):
        return found
    real, mode = found
    if real != root_text and not real.startswith(inside):
        return f"resolves to {real}, outside the data root {root_text} (a symlink?)"
    if real in first_seen:
        return f"duplicate: the same file as {first_seen[real]}"
    first_seen[real] = entry.where
    if mode is None or not stat.S_ISREG(mode):
        if mode is None:
            what = "broken symlink" if os.path.islink(entry.path) else "file not found"
        elif stat.S_ISDIR(mode):
            what = "a folder, not a file"
        else:  # never opened: reading a pipe or a device could block or never end
            what = "not a regular file (a pipe, socket or device)"
        return f"{what} ({entry.path})"
    gold = None if entry.labels is None else sorted({index[label] for label in labels})
    return entry, gold, real


def _check_files(files: list[tuple[str, bool]], progress: Progress | None) -> list[tuple[str, None] | tuple[None, str]]:
    """`check_image` (full: True) or `check_image_header` of each (path, full), in order. (In this process: worker
    processes would have to be spawned, which re-runs a caller's unguarded script, or forked from a threaded web
    server, which is unsafe.)"""
    verdicts: list = []
    step = max(1, len(files) // 200)
    for n, (path, full) in enumerate(files):
        if progress is not None and n % step == 0:
            progress(PATHS_SHARE + (1 - PATHS_SHARE) * n / len(files), f"checked {n} of {len(files)} images")
        verdicts.append(check_image(path) if full else check_image_header(path))
    return verdicts


def _real_path(path: str, folders: dict[str, str | None]) -> tuple[str, int | None] | str:
    """(the path with every link resolved, its st_mode or None when nothing is there) or what makes it unusable:
    what `Path.resolve()` then `stat()` give, with each folder resolved once (`folders` caches them) and one lstat
    per file; a file that is itself a symlink is resolved in full."""
    folder, name = os.path.split(path)
    if folder not in folders:
        try:
            folders[folder] = os.path.realpath(folder)
        except (OSError, ValueError):  # a name too long for the file system, a symlink loop, ...
            folders[folder] = None
    real = path
    try:
        if folders[folder] is not None:
            real = os.path.join(folders[folder], name)
            mode = os.lstat(real).st_mode
            if not stat.S_ISLNK(mode):
                return real, mode
        real = os.path.realpath(path)
        return real, os.stat(real).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return real, None
    except (OSError, ValueError) as e:
        return f"unusable path ({getattr(e, 'strerror', None) or e})"


def _class_of(label: str, index: dict[str, int]) -> str:
    """The class a source's label names: NFC, and without the spaces around it unless a class has them."""
    label = class_name(label)
    return label if label in index else label.strip()


def check_image(path: str | Path) -> tuple[str, None] | tuple[None, str]:
    """(sha256 hex of the bytes, None) for a good image, else (None, what is wrong).

    Opens with PIL and `verify()`s, then reads it as display and model will (`learners.images.read_image`: loads
    to catch truncation, applies EXIF orientation, converts the mode to 8-bit, refused if it cannot). Images over
    `Image.MAX_IMAGE_PIXELS` are refused (PIL's decompression-bomb warning is turned into an error here only):
    PIL reads the declared size from the header, so a bomb is refused before any pixel is decoded. The file is
    read from disk in chunks (a huge non-image is refused by its header and never held in memory), and hashed
    only once it is known to be an image.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.verify()
            read_image(path)  # the one reading path of display and model: EXIF orientation, 8-bit conversion
    except Exception as e:  # noqa: BLE001 - worded by _image_problem
        return None, _image_problem(e)
    try:
        with open(path, "rb") as f:
            digest = hashlib.file_digest(f, "sha256")
    except OSError as e:
        return None, f"cannot read the file ({e.strerror or e})"
    return digest.hexdigest(), None


def check_image_header(path: str | Path) -> tuple[str, None] | tuple[None, str]:
    """What `check_image` says of a file from its header alone (large imports: module doc): the declared size
    is read (a decompression bomb is refused), no pixel is decoded. A plain PNG or JPEG header is read here
    (storage.image_headers); any other file, and any header that gives no size there, is identified by PIL,
    which words what is wrong. A small file is read once, for the hash and the header both."""
    try:
        with open(path, "rb") as f:
            data = f.read(HEADER_READ_BYTES + 1)
            if len(data) <= HEADER_READ_BYTES:
                digest = hashlib.sha256(data)
                source = io.BytesIO(data)
            else:
                f.seek(0)
                digest = hashlib.file_digest(f, "sha256")
                source = path
    except OSError as e:
        return None, f"cannot read the file ({e.strerror or e})"
    size = declared_size(data)
    if size is not None and size[0] >= 1 and size[1] >= 1 and (
            Image.MAX_IMAGE_PIXELS is None or size[0] * size[1] <= Image.MAX_IMAGE_PIXELS):
        return digest.hexdigest(), None  # what PIL would say of this header (storage.image_headers), quicker
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as im:
                if im.width < 1 or im.height < 1:
                    return None, f"image has no pixels ({im.width}x{im.height})"
    except Exception as e:  # noqa: BLE001 - worded by _image_problem
        return None, _image_problem(e)
    return digest.hexdigest(), None


def _image_problem(e: Exception) -> str:
    """What an exception raised while opening or decoding an image says about the file, in words."""
    if isinstance(e, ImageConversionError):
        return f"image cannot be shown or embedded: {e}"
    if isinstance(e, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return f"image too large, refused as a possible decompression bomb ({e})"
    if isinstance(e, UnidentifiedImageError):
        return "not an image (or an image format PIL cannot read)"
    if isinstance(e, OSError) and e.errno is not None:  # the file system, not the image data
        return f"cannot read the file ({e.strerror or e})"
    # PIL raises many exception types for damaged data
    return f"corrupt or truncated image ({type(e).__name__}: {e})"


def _check_classes(classes: Iterable[str]) -> list[str]:
    """The given class names in NFC, or a worded ImportProblem (an empty name, one given twice)."""
    given = list(classes)
    bad = [c for c in given if not isinstance(c, str) or not c.strip()]
    if bad:
        raise ImportProblem(f"class names must be non-empty strings, got {bad[0]!r}")
    names = [class_name(c) for c in given]
    duplicates = sorted({c for c in names if names.count(c) > 1})
    if duplicates:
        raise ImportProblem(f"class names must be unique (two Unicode spellings of one name are one name); "
                            f"repeated: {duplicates}")
    return names


def unguard_cell(value: str) -> str:
    """Undo the exporters' spreadsheet formula guard: a leading apostrophe before = + - @ tab CR or ' is dropped."""
    if len(value) >= 2 and value[0] == "'" and (value[1] in FORMULA_PREFIXES or value[1] == "'"):
        return value[1:]
    return value


# ---------------------------------------------------------------------------------------------------------------
# Storing


def store_import(session: Session, project_id: int, result: ImportResult, eval_size: int, seed: int,
                 progress: Progress | None = None) -> int:
    """Add one Item per imported file inside the caller's transaction; return how many were added.

    Keys are the relative posix paths. A split given by the source is kept; among the items without one,
    `eval_size` random items (numpy `default_rng(seed)`) become 'eval' and the rest 'pool'. Gold labels are mapped
    from `result.classes` to the project's classes by name. A key the project already has, or a gold class the
    project lacks, raises ImportProblem before anything is added. Inserts in batches of STORE_BATCH rows (one
    executemany each), calling `progress(fraction, message)` after each.
    """
    if eval_size < 0:
        raise ValueError(f"eval_size must be >= 0, got {eval_size}")
    project = session.get(Project, project_id)
    if project is None:
        raise ImportProblem(f"project {project_id} does not exist")

    to_project = _class_map(result.classes, list(project.classes))
    existing = set(session.scalars(select(Item.key).where(Item.project_id == project_id)))
    problems = _Problems()
    keys: set[str] = set()
    for item in result.items:
        if item.key in existing:
            problems.add(item.key, f"project {project.name!r} already has an item with this path")
        elif item.key in keys:
            problems.add(item.key, "listed twice in this import")
        keys.add(item.key)
        if item.split is not None and item.split not in SPLITS:
            problems.add(item.key, f"split {item.split!r} must be 'pool' or 'eval'")
        if item.gold and (missing := [result.classes[i] for i in item.gold if to_project.get(i) is None]):
            problems.add(item.key, f"class {missing[0]!r} is not one of the project's classes {project.classes}")
    problems.raise_if_any(f"the import into project {project.name!r}")

    undecided = [i for i, item in enumerate(result.items) if item.split is None]
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(undecided), size=min(eval_size, len(undecided)), replace=False)
    eval_positions = {undecided[int(p)] for p in picked}

    rows: list[dict] = []
    for i, item in enumerate(result.items):
        split = item.split or ("eval" if i in eval_positions else "pool")
        gold = sorted(to_project[g] for g in item.gold) if item.gold is not None else None
        rows.append({"project_id": project_id, "key": item.key, "content_hash": item.content_hash,
                     "split": split, "gold": gold})
    leaks = _leak_warnings(session, project_id, rows)  # before the insert: the project's earlier items only
    for start in range(0, len(rows), STORE_BATCH):
        session.execute(_INSERT_ITEMS, rows[start:start + STORE_BATCH])
        if progress is not None:
            done = min(start + STORE_BATCH, len(rows))
            progress(done / len(rows), f"stored {done} of {len(rows)} items")
    result.warnings += leaks
    for warning in result.warnings:
        log.warning("import into project %r: %s", project.name, warning)
    return len(rows)


def _leak_warnings(session: Session, project_id: int, rows: list[dict]) -> list[str]:
    """One warning when the same image content (the import's sha256) is both in the eval set and in the pool
    (of this import or of the project's items before it): the head would train on evaluation images."""
    first_key: dict[str, dict[str, str]] = {}  # content hash -> split -> the first key with it
    earlier = session.execute(select(Item.content_hash, Item.key, Item.split).where(Item.project_id == project_id))
    for content_hash, key, split in itertools.chain(
            earlier, ((r["content_hash"], r["key"], r["split"]) for r in rows)):
        first_key.setdefault(content_hash, {}).setdefault(split, key)
    leaks = [(by_split["eval"], by_split["pool"]) for by_split in first_key.values()
             if "eval" in by_split and "pool" in by_split]
    if not leaks:
        return []
    shown = "; ".join(f"{e!r} (eval) = {p!r} (pool)" for e, p in leaks[:5])
    more = f" and {len(leaks) - 5} more" if len(leaks) > 5 else ""
    return [f"{len(leaks)} image{'s are' if len(leaks) != 1 else ' is'} both in the evaluation set and in the pool "
            f"under another name (same content): {shown}{more}; the head trains on evaluation images, so the "
            "evaluation overstates it: remove the copies or give them one split"]


# One executemany for all rows. An unlabeled item's gold is stored as SQL NULL (plain JSON would store JSON
# 'null', and `Item.gold.is_(None)` would miss it); the ORM's insert(Item) would do the same only by splitting
# the rows into one batch per run of rows with the same keys, which is slow for mixed labeled/unlabeled pools.
_INSERT_ITEMS = insert(Item.__table__).values(gold=bindparam("gold", type_=JSON(none_as_null=True)))


def _class_map(source: list[str], target: list[str]) -> dict[int, int | None]:
    """source class index -> target class index (None where the target lacks the name)."""
    where = {name: i for i, name in enumerate(target)}
    return {i: where.get(name) for i, name in enumerate(source)}
