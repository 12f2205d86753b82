"""Capture docs/mlflow-runs.png: the runs table of `mlflow ui` with the val_miou column.

Not part of the pipeline (Playwright is not in requirements.txt). With `mlflow ui
--backend-store-uri sqlite:///mlflow.db --port 5055` running:

    python -m venv /tmp/pw && /tmp/pw/bin/pip install playwright
    /tmp/pw/bin/python docs/mlflow_screenshot.py http://localhost:5055/#/experiments/1/runs docs/mlflow-runs.png

Playwright drives the system's Chromium (Debian package `chromium`); it downloads no browser.
"""

import sys

from playwright.sync_api import sync_playwright


def main(url: str, out: str) -> None:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1800, "height": 1000})
        page.goto(url)
        page.wait_for_timeout(5000)
        page.get_by_role("button", name="Columns").click()
        page.wait_for_timeout(800)
        search = page.get_by_placeholder("Search columns")
        for name in ("val_miou", "best_strategy_miou", "Source"):  # Source: hidden, for room
            search.fill(name)
            page.wait_for_timeout(800)
            label = next(s for s in page.locator("strong", has_text=name).all() if s.inner_text() == name)
            box = label.bounding_box()
            page.mouse.click(box["x"] - 26, box["y"] + box["height"] / 2)  # its checkbox
            page.wait_for_timeout(500)
        page.get_by_text("Training runs", exact=True).first.click()  # closes the menu
        page.wait_for_timeout(1500)
        page.mouse.click(1765, 36)  # closes the assistant side panel (its X, top right)
        page.wait_for_timeout(1500)
        page.screenshot(path=out)
        browser.close()


if __name__ == "__main__":
    main(*sys.argv[1:3])
