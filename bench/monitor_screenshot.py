"""The screenshot of ``monitor.html`` in docs/img/monitor.png, taken in headless Chromium.

    .venv/bin/python bench/monitor_screenshot.py [--out docs/img/monitor.png]

Builds the quickstart's sample project (1,200 tickets), logs a day of sample tickets like the
training data and then a day in which half the tickets ask about the Aurora X2 headset in a new way
(bench/monitor_drift.py's traffic, through the server's own log writer), runs ``taskfit monitor`` on
it (exit 6: the drift alert) and has Chromium render the report offline and save a PNG.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from monitor_drift import drifted, log_rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("docs/img/monitor.png"))
    args = ap.parse_args()
    from typer.testing import CliRunner

    from taskfit.cli.main import app
    from taskfit.data.sample import generate_tickets
    from taskfit.quickstart import make_quickstart_project
    from taskfit.serve.log import RequestLog

    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        raise SystemExit("needs a Chromium (Debian: apt-get install chromium)")
    root = Path(tempfile.mkdtemp())
    project = make_quickstart_project(root / "quickstart", n_tickets=1200).parent
    log, now = RequestLog(root / "requests.sqlite"), time.time()
    log_rows(log, "ticket-triage", generate_tickets(150, seed=7), now=now - 86400, seed=0)
    log_rows(log, "ticket-triage", drifted(generate_tickets(150, seed=9), 0.5, seed=1), now=now, seed=1)
    log.close()
    result = CliRunner().invoke(app, ["monitor", str(project), "--log", str(root / "requests.sqlite"),
                                      "--out", str(root / "monitor")])
    print(result.output)
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    f"--user-data-dir={root / 'profile'}", "--host-resolver-rules=MAP * ~NOTFOUND",
                    "--proxy-server=127.0.0.1:9", "--hide-scrollbars", "--virtual-time-budget=5000",
                    "--window-size=1280,2200", f"--screenshot={args.out.resolve()}",
                    (root / "monitor" / "monitor.html").as_uri()], check=True, capture_output=True)
    print(f"screenshot: {args.out}")


if __name__ == "__main__":
    main()
