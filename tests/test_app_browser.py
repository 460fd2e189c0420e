"""The web app in a real browser: headless Chromium (the system's, through selenium and the system chromedriver).

A person's path through the page: upload prompt images, type their scores in the table, set the range, add the
requirement, add a bundled example, upload query images, click Score, read the scores off the page. Without a
browser the test skips with one line, except under CI=true, where a missing browser is a failure (.ci/run installs
Debian's chromium and chromium-driver). The screenshot it takes is docs/app.png's source: set
PROMPTIQA_APP_SCREENSHOT=PATH to keep a copy.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from promptiqa import Predictor
from tests.test_app import AppServer, files  # noqa: F401  (the module-scoped fixture of checkpoint and images)

DECIMALS = 4     # the page shows 4 decimals (promptiqa.app.service.DISPLAY_DECIMALS)
WAIT_S = 240     # the model and gradio share 2 busy cores with other work


def _find(*names: str):
    for name in names:
        found = shutil.which(name) or (name if os.path.isabs(name) and os.access(name, os.X_OK) else None)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium driven by selenium; skipped (failed under CI=true) when any part is missing."""
    chromium = _find("chromium", "chromium-browser", "google-chrome", "/usr/bin/chromium")
    driver_path = _find("chromedriver", "/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
    try:
        import selenium  # noqa: F401
        missing = None if chromium and driver_path else "chromium and chromium-driver (apt-get install chromium " \
                                                         "chromium-driver)"
    except ImportError:
        missing = "selenium (pip install -r requirements.txt)"
    if missing:
        reason = f"the browser test needs {missing}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}: CI must run it")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    profile = tempfile.mkdtemp(prefix="promptiqa-chromium-")
    for arg in ("--headless=new", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                f"--user-data-dir={profile}", "--window-size=1280,2300"):
        options.add_argument(arg)
    if os.geteuid() == 0:   # Chromium refuses to run as root inside its sandbox
        options.add_argument("--no-sandbox")
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _wait(driver, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.25).until(condition, message=f"waiting for {what}")


def _text(driver, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id).text


def _type_into(driver, element_id: str, text: str) -> None:
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.CSS_SELECTOR, f"#{element_id} input, #{element_id} textarea")
    box.clear()
    box.send_keys(text)


def test_a_person_sets_a_requirement_and_scores_images_in_the_browser(browser, files, tmp_path):  # noqa: F811
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    server = AppServer(tmp_path / "server", "--checkpoint", str(files["ckpt"]), "--device", "cpu")
    try:
        d = browser
        d.get(server.url)
        _wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#prompt-images input[type=file]"), "the page")
        assert d.title == "PromptIQA"
        assert "micro.pth.tar" in _text(d, "model") and "Limits:" in _text(d, "limits")

        # 1. the person's own scored images: upload, type the scores in the table, the range and a name
        d.find_element(By.CSS_SELECTOR, "#prompt-images input[type=file]").send_keys(
            "\n".join(str(p) for p in files["prompt"]))
        cell = '#prompt-table [data-testid="cell-{}-{}"]'
        _wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, cell.format(len(files["prompt"]) - 1, 0)),
              "one table row per prompt image")
        for row, score in enumerate(files["stars"]):
            ActionChains(d).double_click(d.find_element(By.CSS_SELECTOR, cell.format(row, 1))).perform()
            editor = _wait(d, lambda d: d.switch_to.active_element.tag_name == "textarea"
                           and d.switch_to.active_element, "a double click to open the cell's editor")
            editor.send_keys(f"{score:g}", Keys.ENTER)
            _wait(d, lambda d: d.find_element(By.CSS_SELECTOR, cell.format(row, 1)).text.strip("⋮\n ")
                  == f"{score:g}", f"score {score:g} in row {row + 1}")
        typed = [d.find_element(By.CSS_SELECTOR, cell.format(r, 1)).text.strip("⋮\n ")
                 for r in range(len(files["stars"]))]
        assert typed == [f"{s:g}" for s in files["stars"]]
        _type_into(d, "range-low", "1")
        _type_into(d, "range-high", "5")
        _type_into(d, "range-name", "my stars")
        d.find_element(By.ID, "add-requirement").click()
        _wait(d, lambda d: _text(d, "requirement-status").startswith(("Added", "Error")), "the requirement")
        assert _text(d, "requirement-status").startswith("Added requirement my stars: 5 images")

        # a bundled example beside it
        d.find_element(By.XPATH, "//button[@role='tab'][normalize-space()='Bundled examples']").click()
        _wait(d, lambda d: d.find_element(By.ID, "add-example").is_displayed(), "the examples tab")
        d.find_element(By.ID, "add-example").click()
        _wait(d, lambda d: "Sharpness (MOS)" in _text(d, "requirement-status"), "the bundled example")

        # 2. score the query images
        d.find_element(By.CSS_SELECTOR, "#query-images input[type=file]").send_keys(
            "\n".join(str(p) for p in files["queries"]))
        _wait(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#query-images tr, #query-images .file"))
              >= len(files["queries"]) or files["queries"][-1].name in _text(d, "query-images"), "the uploads")
        d.find_element(By.ID, "score").click()
        _wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#scores-table td.score")
              or _text(d, "score-status").startswith("Error"), "the scores")
        assert _text(d, "score-status").startswith(f"Scored {len(files['queries'])} images under 2 requirements")
        shown = [c.text for c in d.find_elements(By.CSS_SELECTOR, '#scores-table td.score[data-requirement="my stars"]')]
        reference = Predictor.from_checkpoint(files["ckpt"], device="cpu")
        reference.set_prompt(files["prompt"], files["stars"], score_range=(1, 5))
        expected = reference.score(files["queries"], workers=0)
        assert shown == [f"{v:.{DECIMALS}f}" for v in expected]
        assert len(d.find_elements(By.CSS_SELECTOR, '#scores-table td.score[data-requirement="Sharpness (MOS)"]')) \
            == len(files["queries"])

        # nothing the page loaded came from another host
        hosts = d.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert [h for h in hosts if not h.startswith((server.url, "data:", "blob:"))] == []

        d.execute_script("window.scrollTo(0, 0)")
        shot = tmp_path / "app.png"
        assert d.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        if os.environ.get("PROMPTIQA_APP_SCREENSHOT"):
            shutil.copyfile(shot, os.environ["PROMPTIQA_APP_SCREENSHOT"])

        # another tab is another session: it starts with no requirement
        d.switch_to.new_window("tab")
        d.get(server.url)
        _wait(d, lambda d: d.find_elements(By.ID, "requirements"), "the second session's page")
        assert _text(d, "requirements").startswith("No requirement yet")
        d.close()
        d.switch_to.window(d.window_handles[0])
        assert "my stars" in _text(d, "requirements")
    finally:
        code = server.stop()
    assert code == 130 and server.leftovers() == [], server.log.read_text()
