"""The dataset layout kennel reads: ``ROOT/{train,valid,test}/CLASS/*.jpg``, as in dogImages."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from kennel.errors import KennelError

SPLITS = ("train", "valid", "test")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"})
_NUMBERED = re.compile(r"^\d+\.(.+)$")


class LayoutError(KennelError, ValueError):
    """The folder does not have the layout kennel expects."""


def is_numbered(folder: str) -> bool:
    """Whether ``folder`` is named as a dataset's class folders are (``001.Affenpinscher``)."""
    return _NUMBERED.match(folder) is not None


def readable_name(folder: str) -> str:
    """``001.Affenpinscher`` -> ``Affenpinscher``; ``042.Cavalier_king_charles_spaniel`` -> spaces."""
    match = _NUMBERED.match(folder)
    name = match.group(1) if match else folder
    return name.replace("_", " ")


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


@dataclass(frozen=True)
class Split:
    name: str
    root: Path
    classes: tuple[str, ...]
    files: tuple[tuple[Path, int], ...] = field(repr=False)

    def __len__(self) -> int:
        return len(self.files)


@dataclass(frozen=True)
class DatasetLayout:
    """The splits of a dataset, with one class list (folder names, sorted) shared by every split."""

    root: Path
    classes: tuple[str, ...]
    splits: dict[str, Split]

    @property
    def class_names(self) -> list[str]:
        return [readable_name(c) for c in self.classes]

    def __getitem__(self, split: str) -> Split:
        return self.splits[split]


def class_folders(split_dir: Path) -> list[str]:
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan_split(name: str, split_dir: Path, classes: tuple[str, ...]) -> Split:
    index = {c: i for i, c in enumerate(classes)}
    files = []
    for folder in classes:
        class_dir = split_dir / folder
        if not class_dir.is_dir():
            continue
        files.extend((p, index[folder]) for p in sorted(class_dir.iterdir()) if is_image_file(p))
    return Split(name, split_dir, classes, tuple(files))


def load_layout(
    root: Path | str | None,
    splits: tuple[str, ...] = SPLITS,
    strict: bool = True,
    dirs: dict[str, Path] | None = None,
) -> DatasetLayout:
    """Read the layout of ``root`` (or of split folders given one by one in ``dirs``, as SageMaker's channels
    give them); raise :class:`LayoutError` naming what is missing or inconsistent."""
    if dirs is None:
        if root is None:
            raise LayoutError("no dataset folder given")
        root = Path(root).expanduser()
        if not root.is_dir():
            raise LayoutError(f"dataset folder {root} does not exist")
        dirs = {s: root / s for s in splits}
    missing = [s for s in splits if not Path(dirs[s]).is_dir()]
    if missing:
        where = root if root is not None else ", ".join(str(dirs[s]) for s in missing)
        found = sorted(p.name for p in Path(root).iterdir() if p.is_dir()) if root is not None else []
        shown = ", ".join(found[:8]) + (f" and {len(found) - 8} more" if len(found) > 8 else "")
        raise LayoutError(
            f"dataset folder {where} has no {', '.join(missing)} split folder(s); expected "
            f"{'/ '.join(splits)}/ each holding one folder per class (found: {shown or 'nothing'})"
        )
    dirs = {s: Path(dirs[s]) for s in splits}
    root = Path(root) if root is not None else dirs[splits[0]].parent
    per_split = {s: class_folders(dirs[s]) for s in splits}
    classes = tuple(per_split[splits[0]])
    if not classes:
        raise LayoutError(f"{dirs[splits[0]]} has no class folders; expected one folder per class")
    if strict:
        for s in splits[1:]:
            if tuple(per_split[s]) != classes:
                only_first = sorted(set(classes) - set(per_split[s]))
                only_here = sorted(set(per_split[s]) - set(classes))
                raise LayoutError(
                    f"split {s!r} ({dirs[s]}) has other classes than {splits[0]!r}: "
                    f"missing {only_first[:5] or 'none'}, extra {only_here[:5] or 'none'}"
                )
    layout = DatasetLayout(root, classes, {s: scan_split(s, dirs[s], classes) for s in splits})
    empty = [s for s in splits if len(layout.splits[s]) == 0]
    if empty:
        raise LayoutError(f"split(s) {', '.join(empty)} of {root} hold no image files")
    return layout
