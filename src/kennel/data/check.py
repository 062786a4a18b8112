"""Validate a dataset before training: layout, unreadable or odd images, duplicates and leakage, class balance.

Every problem becomes a :class:`Finding` (severity, code, files, and a message saying what to do). Errors are what
makes training wrong or impossible (a missing split, a truncated file, the same photo in train and test);
warnings are what kennel copes with but other tools or the results may not (PNG under ``.jpg``, CMYK, tiny
images, imbalance). Each file is fully decoded and hashed once, in a process pool, so that the full dogImages
(8,351 photos) checks in about a minute on two cores.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from kennel.data.inspection import FileInfo, inspect_all
from kennel.data.layout import IMAGE_SUFFIXES, SPLITS, readable_name
from kennel.data.near_duplicates import near_duplicate_clusters

SEVERITIES = ("error", "warning", "info")

# The suffixes each decoded format may carry without surprising a tool that trusts the name.
FORMAT_SUFFIXES = {
    "JPEG": {".jpg", ".jpeg"},
    "MPO": {".jpg", ".jpeg"},
    "PNG": {".png"},
    "GIF": {".gif"},
    "BMP": {".bmp"},
    "WEBP": {".webp"},
    "TIFF": {".tif", ".tiff"},
}

# Image modes other than RGB: (finding code, what a person calls it).
MODE_CODES = {
    "1": ("grayscale-image", "black-and-white"),
    "L": ("grayscale-image", "grayscale"),
    "LA": ("alpha-image", "grayscale with transparency"),
    "PA": ("alpha-image", "palette with transparency"),
    "RGBA": ("alpha-image", "RGB with transparency"),
    "RGBa": ("alpha-image", "RGB with transparency"),
    "P": ("palette-image", "palette (indexed colour)"),
    "CMYK": ("cmyk-image", "CMYK"),
    "I;16": ("high-bit-depth-image", "16-bit"),
    "I;16B": ("high-bit-depth-image", "16-bit"),
    "I;16L": ("high-bit-depth-image", "16-bit"),
    "I": ("high-bit-depth-image", "32-bit integer"),
    "F": ("high-bit-depth-image", "32-bit float"),
}


@dataclass(frozen=True)
class Finding:
    severity: str
    code: str
    message: str
    files: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"severity": self.severity, "code": self.code, "message": self.message, "files": list(self.files)}


@dataclass
class CheckReport:
    """What ``check_dataset`` found; ``counts[split][class_folder]`` is the number of images."""

    root: Path
    classes: list[str]
    counts: dict[str, dict[str, int]]
    findings: list[Finding] = field(default_factory=list)
    files_checked: int = 0
    seconds: float = 0.0

    def by_severity(self, severity: str) -> list[Finding]:
        return [f for f in self.findings if f.severity == severity]

    @property
    def errors(self) -> list[Finding]:
        return self.by_severity("error")

    @property
    def warnings(self) -> list[Finding]:
        return self.by_severity("warning")

    @property
    def ok(self) -> bool:
        return not self.errors

    def split_totals(self) -> dict[str, int]:
        return {split: sum(per_class.values()) for split, per_class in self.counts.items()}

    def to_dict(self) -> dict:
        return {
            "root": str(self.root),
            "ok": self.ok,
            "files_checked": self.files_checked,
            "seconds": round(self.seconds, 2),
            "summary": {s: len(self.by_severity(s)) for s in SEVERITIES},
            "splits": self.split_totals(),
            "classes": [
                {"folder": c, "name": readable_name(c), "counts": {s: self.counts[s].get(c, 0) for s in self.counts}}
                for c in self.classes
            ],
            "findings": [f.to_dict() for f in self.findings],
        }


@dataclass
class LayoutScan:
    """The folders as found, before any file is opened; ``images`` are paths relative to the root."""

    classes: list[str]
    counts: dict[str, dict[str, int]]
    images: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)


def _names(folders: Iterable[str], limit: int = 6) -> str:
    names = [readable_name(f) for f in folders]
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def scan_layout(root: Path) -> LayoutScan:
    """Splits, class folders and which files are images, with the layout's own findings."""
    scan = LayoutScan([], {})
    if not root.is_dir():
        scan.findings.append(Finding("error", "missing-root", f"{root} does not exist or is not a folder"))
        return scan
    per_split = {
        s: sorted(p.name for p in (root / s).iterdir() if p.is_dir() and not p.name.startswith("."))
        for s in SPLITS
        if (root / s).is_dir()
    }
    for split in SPLITS:
        if split not in per_split:
            msg = f"no {split}/ folder; kennel expects {'/ '.join(SPLITS)}/ in {root}, each with one folder per class"
            scan.findings.append(Finding("error", "missing-split", msg, (f"{split}/",)))
        elif not per_split[split]:
            msg = f"{split}/ has no class folders; put each class's images in its own folder, e.g. {split}/001.Name/"
            scan.findings.append(Finding("error", "no-classes", msg, (f"{split}/",)))
    scan.classes = sorted(set().union(*per_split.values()))
    for split, classes in per_split.items():
        lacking = [c for c in scan.classes if c not in classes]
        if classes and lacking:
            msg = (
                f"{split}/ lacks {len(lacking)} class folder(s) that other splits have: {_names(lacking)}; every "
                "split needs the same class folders or labels shift (an empty folder keeps the order)"
            )
            scan.findings.append(Finding("error", "class-mismatch", msg, tuple(f"{split}/{c}/" for c in lacking)))
    stray, hidden = [], []
    for split, classes in per_split.items():
        stray += [f"{split}/{p.name}" for p in (root / split).iterdir() if p.is_file() and not p.name.startswith(".")]
        scan.counts[split] = {}
        for folder in classes:
            count = 0
            for path in sorted((root / split / folder).iterdir()):
                rel = f"{split}/{folder}/{path.name}"
                if path.name.startswith("."):
                    hidden.append(rel)
                elif path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                    scan.images.append(rel)
                    count += 1
                else:
                    stray.append(rel + ("/" if path.is_dir() else ""))
            scan.counts[split][folder] = count
            if count == 0:
                msg = (
                    f"class {readable_name(folder)} has no images in {split}/; add some or it cannot be learned/scored"
                )
                scan.findings.append(Finding("warning", "empty-class", msg, (f"{split}/{folder}/",)))
    if stray:
        msg = (
            f"{len(stray)} file(s) or folder(s) that are not images in a class folder; kennel ignores them "
            "(move images into a class folder, delete the rest)"
        )
        scan.findings.append(Finding("warning", "stray-file", msg, tuple(stray)))
    if hidden:
        scan.findings.append(Finding("info", "hidden-file", f"{len(hidden)} hidden file(s) ignored", tuple(hidden)))
    return scan


def _truncated(error: str) -> bool:
    return "truncated" in error or "broken data stream" in error


def file_findings(infos: dict[str, FileInfo], tiny_px: int) -> list[Finding]:
    """Per-file problems: undecodable files one by one, the rest grouped by kind so a report stays short."""
    findings = []
    for rel, info in infos.items():
        if info.error is None:
            continue
        code = "truncated-image" if _truncated(info.error) else "unreadable-image"
        findings.append(Finding("error", code, f"cannot decode: {info.error}; replace or delete this file", (rel,)))
    readable = {rel: info for rel, info in infos.items() if info.error is None}
    mismatched = defaultdict(list)
    modes = defaultdict(list)
    for rel, info in readable.items():
        suffix = Path(rel).suffix.lower()
        if suffix not in FORMAT_SUFFIXES.get(info.format, set()):
            mismatched[(info.format, suffix)].append(rel)
        if info.mode in MODE_CODES:
            modes[MODE_CODES[info.mode][0]].append(rel)
    for (fmt, suffix), files in mismatched.items():
        msg = (
            f"{len(files)} file(s) named {suffix} hold {fmt} data; kennel reads them by content, "
            "other tools that trust the suffix may fail (re-save or rename them)"
        )
        findings.append(Finding("warning", "format-mismatch", msg, tuple(files)))
    for code, files in modes.items():
        kinds = sorted({MODE_CODES[readable[f].mode][1] for f in files})
        msg = f"{len(files)} {' / '.join(kinds)} image(s); kennel converts them to RGB, other tools may not"
        findings.append(Finding("warning", code, msg, tuple(files)))
    grey = [rel for rel, info in readable.items() if info.colourless]
    if grey:
        msg = f"{len(grey)} black-and-white photo(s) stored as RGB; fine to train on, but they carry no colour cue"
        findings.append(Finding("info", "grayscale-content", msg, tuple(grey)))
    tiny = sorted((min(i.size), rel) for rel, i in readable.items() if min(i.size) < tiny_px)
    if tiny:
        msg = (
            f"{len(tiny)} image(s) with a short side under {tiny_px} px (smallest {tiny[0][0]} px); they carry "
            "little detail once upscaled to the model input; consider removing them"
        )
        findings.append(Finding("warning", "tiny-image", msg, tuple(rel for _, rel in tiny)))
    if readable:
        sides = [min(i.size) for i in readable.values()]
        formats = defaultdict(int)
        for info in readable.values():
            formats[info.format] += 1
        msg = (
            f"short side: median {statistics.median(sides):.0f} px, min {min(sides)}, max {max(sides)}; formats: "
            + ", ".join(f"{k} {v}" for k, v in sorted(formats.items(), key=lambda kv: -kv[1]))
        )
        findings.append(Finding("info", "image-sizes", msg))
    return findings


def _where(rel: str) -> tuple[str, str]:
    split, folder, _ = rel.split("/", 2)
    return split, folder


# Exact duplicates: (spans splits, spans classes) -> (severity, code, what it means and what to do).
DUPLICATE_KINDS = {
    (True, True): ("error", "duplicate-across-splits", "leakage between splits, and with different labels"),
    (True, False): ("error", "duplicate-across-splits", "leakage: evaluation sees a training image; keep one copy"),
    (False, True): (
        "warning",
        "duplicate-across-classes",
        "label conflict: one photo, two classes; keep the right one",
    ),
    (False, False): ("warning", "duplicate-in-class", "the same photo twice weighs it double; keep one copy"),
}


NEAR_DUPLICATE_KINDS = {
    (True, True): ("warning", "near-duplicate-across-splits", "likely leakage and a label conflict; review them"),
    (True, False): ("warning", "near-duplicate-across-splits", "likely leakage; keep them in one split"),
    (False, True): ("warning", "near-duplicate-across-classes", "likely a label conflict; keep the right one"),
    (False, False): ("info", "near-duplicate", "weighs that photo double; harmless unless frequent"),
}


def duplicate_findings(infos: dict[str, FileInfo]) -> list[Finding]:
    """Byte-identical files (sha256), then near-duplicates (difference hash) among the distinct ones."""
    groups = defaultdict(list)
    for rel, info in infos.items():
        if info.sha256:  # empty when the file could not be read at all
            groups[info.sha256].append(rel)
    findings = []
    for files in groups.values():
        if len(files) > 1:
            splits, classes = {_where(f)[0] for f in files}, {_where(f)[1] for f in files}
            severity, code, meaning = DUPLICATE_KINDS[(len(splits) > 1, len(classes) > 1)]
            findings.append(Finding(severity, code, f"{len(files)} identical files: {meaning}", tuple(files)))
    distinct = [files[0] for files in groups.values() if infos[files[0]].dhash is not None]
    for cluster in near_duplicate_clusters([infos[f].dhash for f in distinct]):
        files = tuple(sorted(distinct[i] for i in cluster))
        kind = (len({_where(f)[0] for f in files}) > 1, len({_where(f)[1] for f in files}) > 1)
        severity, code, meaning = NEAR_DUPLICATE_KINDS[kind]
        msg = f"{len(files)} near-identical images (the same photo resized or re-encoded): {meaning}"
        findings.append(Finding(severity, code, msg, files))
    return findings


def balance_findings(counts: dict[str, dict[str, int]], imbalance: float) -> list[Finding]:
    findings = []
    for split, per_class in counts.items():
        filled = {c: n for c, n in per_class.items() if n}
        if len(filled) < 2:
            continue
        big, small = max(filled, key=filled.get), min(filled, key=filled.get)
        ratio = filled[big] / filled[small]
        if ratio > imbalance:
            msg = (
                f"{split}: {readable_name(big)} has {filled[big]} images, {readable_name(small)} only "
                f"{filled[small]} (ratio {ratio:.1f} > {imbalance:g}); collect more for small classes or use "
                "class weights / a balanced sampler"
            )
            findings.append(Finding("warning", "class-imbalance", msg, (f"{split}/{big}/", f"{split}/{small}/")))
    return findings


def check_dataset(
    root: Path | str,
    tiny_px: int = 64,
    imbalance: float = 10.0,
    workers: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> CheckReport:
    """Check the dataset at ``root`` (``train/ valid/ test/`` with one folder per class) and report findings.

    ``workers`` processes decode the files (default: one per core); ``on_progress(done, total)`` follows them.
    """
    started = time.perf_counter()
    root = Path(root).expanduser()
    scan = scan_layout(root)
    report = CheckReport(root, scan.classes, scan.counts, list(scan.findings))
    infos = inspect_all([str(root / rel) for rel in scan.images], workers, on_progress)
    by_rel = dict(zip(scan.images, infos, strict=True))
    report.findings += file_findings(by_rel, tiny_px)
    report.findings += duplicate_findings(by_rel)
    report.findings += balance_findings(scan.counts, imbalance)
    report.findings.sort(key=lambda f: SEVERITIES.index(f.severity))
    report.files_checked = len(infos)
    report.seconds = time.perf_counter() - started
    return report
