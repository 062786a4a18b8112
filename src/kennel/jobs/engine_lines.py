"""What ran a job's frozen forward passes, as the lines the jobs console and profile.html print."""

from __future__ import annotations

from typing import Any


def _engine_label(entry: dict[str, Any]) -> str:
    """``onnxruntime int8``, as :attr:`kennel.inference.Backend.label` names it (read here without torch)."""
    if entry.get("label"):  # where the record names it
        return entry["label"]
    runtime, precision = entry.get("runtime"), entry.get("precision")
    return f"{entry.get('backend')} {precision}" if runtime in ("torch", None) else f"{runtime} {precision}"


def _percent(value: Any) -> str:
    return f"{100 * value:.1f}%" if isinstance(value, (int, float)) else "-"


def _int8_check(check: dict[str, Any], used: bool) -> str:
    reference = check.get("reference", "fp32")  # what int8 was compared with: fp32, or the fallback's precision
    base, int8, loss = check.get(f"valid_top1_{reference}"), check.get("valid_top1_int8"), check.get("loss_points")
    change = f" ({-loss:+.2f} points)" if isinstance(loss, (int, float)) else ""
    verdict = "used" if used else "not used"
    return f"valid top-1 of a probe head, {reference} {_percent(base)}, int8 {_percent(int8)}{change}: {verdict}"


def engine_lines(engine: dict[str, Any]) -> list[tuple[str, str]]:
    """``("extraction", "onnxruntime fp32, 184 photos/s (fastest measured here ...)")`` for each forward pass a
    job ran on the inference engine (``record.engine``), then its int8 check where it had one. Plain text: the
    jobs console and profile.html print the same lines."""
    lines = []
    for use, entry in engine.items():
        if not isinstance(entry, dict):
            continue
        label, why = _engine_label(entry), f" ({entry['reason']})" if entry.get("reason") else ""
        if entry.get("cached"):  # nothing ran: every split's features came from the cache
            what = "stage inputs" if entry.get("frozen_stages") else "features"
            line = f"cached {entry.get('precision')} {what}, none computed; engine {label}{why}"
        else:
            rate = entry.get("photos_per_s") or entry.get("forward_photos_per_s")
            line = label + (f", {rate:.0f} photos/s" if rate else "") + why
        lines.append((use, line))
        if isinstance(entry.get("int8_check"), dict):
            lines.append(("int8 check", _int8_check(entry["int8_check"], used=entry.get("precision") == "int8")))
    return lines
