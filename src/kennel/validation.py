"""One way to say what pydantic found wrong, for every typed setting kennel parses (configs, rules, spaces, the
endpoint's settings): the dotted key, the problem in plain words, the value given, and a close match for a typo."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError


def _suggestion(item: dict[str, Any]) -> str:
    """``; did you mean 'adamw'?`` for a value that is one letter off an allowed one."""
    expected = (item.get("ctx") or {}).get("expected")
    given = item.get("input")
    if item.get("type") != "literal_error" or not isinstance(expected, str) or not isinstance(given, str):
        return ""
    choices = re.findall(r"'([^']*)'", expected)
    close = difflib.get_close_matches(given, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


_BRANCH = re.compile(r"^(int|float|str|bool|literal\[.*\]|function-.*)$")  # how pydantic names a union's members
_KINDS = {
    "int_parsing": "an integer",
    "int_type": "an integer",
    "float_parsing": "a number",
    "bool_parsing": "true/false",
}


def _merge_unions(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A value that fits no member of a union (``freeze: int | "all"``) is one problem, not one per member."""
    merged: dict[tuple, dict[str, Any]] = {}
    for item in items:
        loc = tuple(item["loc"])
        if not (loc and isinstance(loc[-1], str) and _BRANCH.match(loc[-1])):
            merged[loc] = item
            continue
        entry = merged.setdefault(loc[:-1], {**item, "loc": loc[:-1], "kinds": [], "said": []})
        if item["type"] == "value_error":  # a member's own check said what is wrong: say that
            entry["said"].append(item["msg"].removeprefix("Value error, "))
            continue
        entry["kinds"].append(_KINDS.get(item["type"]) or ((item.get("ctx") or {}).get("expected") or item["msg"]))
        if item["type"] == "literal_error":
            entry["ctx"], entry["type"] = item.get("ctx"), "literal_error"
    for entry in merged.values():
        if entry.get("said"):
            entry["msg"], entry["type"] = "; ".join(entry["said"]), "value_error"
        elif entry.get("kinds"):
            entry["msg"] = "expected " + " or ".join(entry["kinds"])
    return list(merged.values())


def _tag_problem(ctx: dict[str, Any]) -> str:
    """A tagged union's tag, said as: `type` must be float, int or categorical (got 'flot'; did you mean 'float'?)."""
    tag = str(ctx.get("discriminator", "type")).strip("'")
    tags = re.findall(r"'([^']*)'", str(ctx.get("expected_tags", "")))
    allowed = f"{', '.join(tags[:-1])} or {tags[-1]}" if len(tags) > 1 else (tags[0] if tags else "a known kind")
    given = ctx.get("tag")
    if given is None:
        return f"`{tag}` is missing; it must be {allowed}"
    close = difflib.get_close_matches(str(given), tags, n=1, cutoff=0.6)
    return f"`{tag}` must be {allowed} (got {given!r}" + (f"; did you mean {close[0]!r}?)" if close else ")")


Namer = Callable[[tuple[str, ...]], str]


def dotted(loc: tuple[str, ...]) -> str:
    return ".".join(loc)


def problems(error: ValidationError, top: str = "(top level)", name: Namer = dotted) -> list[tuple[str, str]]:
    """``(where, what)`` for each problem in ``error``; ``top`` names a problem with no key, ``name`` turns the
    key's parts into what the person typed (``("max_batch_size",)`` -> ``--max-batch-size``)."""
    found = []
    for item in _merge_unions(error.errors()):
        loc = tuple(str(part) for part in item["loc"])
        where = name(loc) if loc else top
        if item["type"] == "extra_forbidden":
            what = "unknown key"
        elif item["type"] in ("union_tag_invalid", "union_tag_not_found"):
            what = _tag_problem(item.get("ctx") or {})
        else:
            what = item["msg"].removeprefix("Value error, ")
            if "input" in item and not isinstance(item["input"], dict):
                what += f" (got {item['input']!r}{_suggestion(item)})"
        found.append((where, what))
    return found


def one_line(error: ValidationError, top: str = "(top level)", name: Namer = dotted) -> str:
    """Every problem of ``error`` on one line: ``optim.name: Input should be 'adamw' or 'sgd' (got 'adam')``."""
    return "; ".join(f"{where}: {what}" for where, what in problems(error, top, name))
