"""Refresh ``docs/console.png``: a screenshot of the MLflow UI listing the kennel jobs in ``$KENNEL_HOME``.

    python scripts/screenshot_console.py                      # start 'kennel ui', shoot the runs table, stop it
    python scripts/screenshot_console.py --experiment my-study
    python scripts/screenshot_console.py --url http://127.0.0.1:5000/#/experiments/1 --out /tmp/console.png

It drives the system's Chromium (Debian: ``apt-get install chromium``) through the ``playwright`` package
(``pip install playwright``); ``playwright install`` is never needed, nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager, suppress
from pathlib import Path

from kennel.browser import CHROMIUM_ARGS, find_chromium
from kennel.localhost import free_port

REPO = Path(__file__).resolve().parents[1]


def get_json(url: str, timeout: float = 5.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def wait_for(url: str, process: subprocess.Popen, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"kennel ui exited with status {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    sys.exit(f"kennel ui did not answer {url} within {timeout:.0f}s:\n{log.read_text()[-3000:]}")


@contextmanager
def kennel_ui(port: int, timeout: float):
    """``kennel ui`` on ``port`` for the duration of the block; its log goes to a temporary file."""
    log = Path(tempfile.mkstemp(prefix="kennel-ui-", suffix=".log")[1])
    with log.open("w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "kennel", "ui", "--port", str(port)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(f"http://127.0.0.1:{port}/health", process, timeout, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        # SIGTERM to 'kennel ui' makes it stop the server's own process group, then exit.
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.unlink(missing_ok=True)


def runs_url(base: str, experiment: str) -> tuple[str, str, list[str]]:
    """The runs table of ``experiment`` (the classic model-training view), its id, and its run names."""
    query = urllib.parse.urlencode({"experiment_name": experiment})
    try:
        found = get_json(f"{base}/api/2.0/mlflow/experiments/get-by-name?{query}")
    except urllib.error.HTTPError as error:
        sys.exit(f"no experiment {experiment!r} in the store ({error}); run a training job first")
    experiment_id = found["experiment"]["experiment_id"]
    request = urllib.request.Request(
        f"{base}/api/2.0/mlflow/runs/search",
        data=json.dumps({"experiment_ids": [experiment_id], "max_results": 50}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        runs = json.loads(response.read()).get("runs", [])
    names = [run["info"].get("run_name", "") for run in runs]
    url = f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    return url, experiment_id, [n for n in names if n]


def page_setup(experiment_id: str | None, metrics: list[str], params: list[str]) -> str:
    """JavaScript run before the UI loads: keep the assistant panel closed and, for an experiment, choose the
    runs table's columns (the UI keeps both in localStorage; a newer MLflow that ignores them still renders)."""
    script = [
        "localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');",
        "localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');",
    ]
    if experiment_id is not None:
        columns = [f"metrics.`{m}`" for m in metrics] + [f"params.`{p}`" for p in params]
        state = {"selectedColumns": columns}
        key = f'MLflowLocalStorage-1.1-ExperimentPage-["{experiment_id}"]-ReactComponentState'
        script.append(f"localStorage.setItem({json.dumps(key)}, {json.dumps(json.dumps(state))});")
    return "\n".join(script)


def shoot(url: str, out: Path, wait_text: list[str], setup: str, args: argparse.Namespace) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": args.width, "height": args.height})
            context.add_init_script(setup)
            page = context.new_page()
            page.goto(url, wait_until="domcontentloaded", timeout=60_000)
            for text in wait_text[:1]:
                try:
                    page.get_by_text(text, exact=True).first.wait_for(timeout=60_000)
                except PlaywrightTimeout:
                    print(f"warning: run {text!r} did not appear; the screenshot may show an empty page")
            with suppress(PlaywrightTimeout):
                page.wait_for_load_state("networkidle", timeout=15_000)
            time.sleep(args.settle)  # column widths and icons settle after the data arrives
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out))
        finally:
            browser.close()


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "console.png", help="PNG to write")
    parser.add_argument("--url", help="screenshot this URL instead of starting 'kennel ui'")
    parser.add_argument("--experiment", default="kennel", help="experiment (or tuning study) to show")
    parser.add_argument("--port", type=int, default=0, help="port for 'kennel ui' (default: a free one)")
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--chromium", default=str(find_chromium() or "/usr/bin/chromium"), help="Chromium executable")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the server")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds to let the page settle")
    parser.add_argument("--metrics", default="best_valid_accuracy,test_accuracy,test_top5", help="metric columns")
    parser.add_argument(
        "--params", default="model.backbone,model.freeze,optim.lr,data.batch_size,epochs", help="param columns"
    )
    args = parser.parse_args()
    if not Path(args.chromium).is_file():
        sys.exit(f"no Chromium at {args.chromium} (Debian: apt-get install -y chromium)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        sys.exit("the playwright package is missing: pip install playwright (no 'playwright install' needed)")
    out = args.out.resolve()
    if args.url:
        shoot(args.url, out, [], page_setup(None, [], []), args)
    else:
        metrics, params = _names(args.metrics), _names(args.params)
        with kennel_ui(args.port or free_port(), args.timeout) as base:
            url, experiment_id, names = runs_url(base, args.experiment)
            print(f"shooting {url} ({len(names)} runs)")
            shoot(url, out, names, page_setup(experiment_id, metrics, params), args)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
