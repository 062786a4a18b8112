"""JSON lines that a running job appends to and anyone may read at any time.

A writer opens, appends whole lines and flushes; a reader skips a last line cut short by a kill, so the records of
a killed job stay readable.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def append_jsonl(path: Path | str, records: Iterable[dict[str, Any]]) -> None:
    """Append ``records`` to ``path``, one JSON object per line, in one write."""
    text = "".join(json.dumps(record, default=str) + "\n" for record in records)
    if text:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as handle:
            handle.write(text)


def read_jsonl(path: Path | str, complete_only: bool = False) -> tuple[list[dict[str, Any]], int]:
    """The records of ``path`` and how many lines could not be read (e.g. one cut short by a kill). With
    ``complete_only``, what follows the last newline is a line still being written: left out, and not counted."""
    path = Path(path)
    if not path.is_file():
        return [], 0
    text = path.read_text(encoding="utf-8", errors="replace")
    # Split at newlines only: a line written with ensure_ascii=False may hold U+2028 and the like, which
    # str.splitlines would also break at.
    lines = text.split("\n")
    if complete_only:
        lines.pop()
    records, skipped = [], 0
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            skipped += 1
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            skipped += 1
    return records, skipped
