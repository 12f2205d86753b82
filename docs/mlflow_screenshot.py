"""Take docs/mlflow-runs.png and docs/mlflow-compare.png from the repository's MLflow store
(after the default `dvc repro`), in headless Debian Chromium driven by Playwright:

    python docs/mlflow_screenshot.py [REPO [OUT]]   # starts `mlflow ui` on a free port itself

The runs page opens in the model-training view with the newest pipeline run expanded; the
compare page holds the newest finetune run and its ablation variants.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

from deeplab.tracking.ui import compare_url, experiment_url

REPO = Path(__file__).resolve().parents[1]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(repo: str = str(REPO), out: str = str(REPO / "docs"),
         experiment_name: str = "deeplabv3plus") -> None:
    from mlflow import MlflowClient

    store = f"sqlite:///{Path(repo) / 'mlflow.db'}"
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name(experiment_name).experiment_id
    parent = client.search_runs([experiment], "tags.`pipeline.parent` = 'true'",
                                order_by=["attributes.start_time DESC"], max_results=1)[0]
    children = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    compared = [r.info.run_id for r in children
                if r.data.tags["dvc.stage"] == "finetune" or r.data.tags["dvc.stage"].startswith("variant@")]
    port = _port()
    ui = subprocess.Popen([str(Path(sys.executable).with_name("mlflow")), "ui", "--backend-store-uri",
                           store, "--host", "127.0.0.1", "--port", str(port)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(360):
            try:
                urllib.request.urlopen(base + "/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1700, "height": 950})
            page.goto(experiment_url(base, experiment))
            page.get_by_text(parent.info.run_name.split(" · ")[0]).first.wait_for(timeout=60_000)
            page.get_by_role("button", name="Close").first.click(timeout=5_000) \
                if page.get_by_role("button", name="Close").count() else None
            row = page.locator("[role=row]", has_text=parent.info.run_name.split(" · ")[0]).first
            row.locator("button").first.click()  # expand the pipeline run
            page.wait_for_timeout(2000)
            page.screenshot(path=str(Path(out) / "mlflow-runs.png"))
            page.goto(compare_url(base, experiment, compared))
            page.get_by_text("ablation", exact=True).first.wait_for(timeout=60_000)
            page.wait_for_timeout(3000)
            page.screenshot(path=str(Path(out) / "mlflow-compare.png"), full_page=True)
            browser.close()
    finally:
        ui.terminate()
        ui.wait(timeout=60)


if __name__ == "__main__":
    main(*sys.argv[1:])
