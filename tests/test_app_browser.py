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
from promptiqa.app.prompt_table import SCORE
from tests.helpers import AppServer, check_prompts

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


def test_a_person_sets_a_requirement_and_scores_images_in_the_browser(browser, app_files, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    app_server = AppServer(tmp_path / "server", "--checkpoint", str(app_files["ckpt"]), "--device", "cpu")
    try:
        d = browser
        d.get(app_server.url)
        _wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#prompt-images input[type=file]"), "the page")
        assert d.title == "PromptIQA"
        assert "micro.pth.tar" in _text(d, "model") and "Limits:" in _text(d, "limits")
        # a 64 px model: the model line says what that means for photographs (not the demo's model, though)
        assert "Every image is resized to 64x64 pixels before it is scored" in _text(d, "model")
        assert "This is the demo's model" not in _text(d, "model")

        # 1. the person's own scored images: upload, type the scores in the table, the range and a name
        d.find_element(By.CSS_SELECTOR, "#prompt-images input[type=file]").send_keys(
            "\n".join(str(p) for p in app_files["prompt"]))
        cell = '#prompt-table [data-testid="cell-{}-{}"]'
        _wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, cell.format(len(app_files["prompt"]) - 1, 0)),
              "one table row per prompt image")
        for row, score in enumerate(app_files["stars"]):
            ActionChains(d).double_click(d.find_element(By.CSS_SELECTOR, cell.format(row, SCORE))).perform()
            editor = _wait(d, lambda d: d.switch_to.active_element.tag_name == "textarea"
                           and d.switch_to.active_element, "a double click to open the cell's editor")
            editor.send_keys(f"{score:g}", Keys.ENTER)
            _wait(d, lambda d: d.find_element(By.CSS_SELECTOR, cell.format(row, SCORE)).text.strip("⋮\n ")
                  == f"{score:g}", f"score {score:g} in row {row + 1}")
        typed = [d.find_element(By.CSS_SELECTOR, cell.format(r, SCORE)).text.strip("⋮\n ")
                 for r in range(len(app_files["stars"]))]
        assert typed == [f"{s:g}" for s in app_files["stars"]]
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
            "\n".join(str(p) for p in app_files["queries"]))
        _wait(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#query-images tr, #query-images .file"))
              >= len(app_files["queries"]) or app_files["queries"][-1].name in _text(d, "query-images"), "the uploads")
        d.find_element(By.ID, "score").click()
        _wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#scores-table td.score")
              or _text(d, "score-status").startswith("Error"), "the scores")
        assert _text(d, "score-status").startswith(f"Scored {len(app_files['queries'])} images under 2 requirements")
        shown = [c.text for c in d.find_elements(By.CSS_SELECTOR, '#scores-table td.score[data-requirement="my stars"]')]
        reference = Predictor.from_checkpoint(app_files["ckpt"], device="cpu")
        reference.set_prompt(app_files["prompt"], app_files["stars"], score_range=(1, 5))
        expected = reference.score(app_files["queries"], workers=0)
        assert shown == [f"{v:.{DECIMALS}f}" for v in expected]
        assert len(d.find_elements(By.CSS_SELECTOR, '#scores-table td.score[data-requirement="Sharpness (MOS)"]')) \
            == len(app_files["queries"])

        # nothing the page loaded came from another host
        hosts = d.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert [h for h in hosts if not h.startswith((app_server.url, "data:", "blob:"))] == []

        d.execute_script("window.scrollTo(0, 0)")
        shot = tmp_path / "app.png"
        assert d.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        if os.environ.get("PROMPTIQA_APP_SCREENSHOT"):
            shutil.copyfile(shot, os.environ["PROMPTIQA_APP_SCREENSHOT"])

        # another tab is another session: it starts with no requirement
        d.switch_to.new_window("tab")
        d.get(app_server.url)
        _wait(d, lambda d: d.find_elements(By.ID, "requirements"), "the second session's page")
        assert _text(d, "requirements").startswith("No requirement yet")
        d.close()
        d.switch_to.window(d.window_handles[0])
        assert "my stars" in _text(d, "requirements")
    finally:
        code = app_server.stop()
    assert code == 130 and app_server.leftovers() == [], app_server.log.read_text()


def _open(driver, app_server):
    """A new session of the module's app, its page loaded."""
    from selenium.webdriver.common.by import By

    driver.get(app_server.url)
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#prompt-images input[type=file]"), "the page")
    return driver


def _upload(driver, element_id: str, paths) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, f"#{element_id} input[type=file]").send_keys("\n".join(map(str, paths)))


def _uploaded(driver, element_id: str, count: int) -> None:
    """Wait until the file component lists ``count`` files."""
    from selenium.webdriver.common.by import By

    _wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, f"#{element_id} tbody tr")) == count,
          f"{count} files in {element_id}")


def _status(driver, element_id: str, *starts: str) -> str:
    """The status line once it starts with one of ``starts`` (or says Error)."""
    _wait(driver, lambda d: _text(d, element_id).startswith((*starts, "Error")), f"{element_id}: {starts}")
    return _text(driver, element_id)


def _click(driver, button_id: str, status_id: str) -> str:
    """Click a button; the status line once the click has changed it (an earlier message never passes for the new one)."""
    from selenium.webdriver.common.by import By

    def done(d) -> bool:   # gradio's progress overlay ("processing | 0.1s") gone, and the message new
        tracker = d.find_elements(By.CSS_SELECTOR, f'#{status_id} [data-testid="status-tracker"]')
        return all("hide" in t.get_attribute("class").split() for t in tracker) and _text(d, status_id) not in (
            "", before)

    before = _text(driver, status_id)
    driver.find_element(By.ID, button_id).click()
    _wait(driver, done, f"{status_id} after {button_id}")
    return _text(driver, status_id)


def test_a_csv_fills_the_scores_beside_thumbnails_and_the_requirement_check_says_when_it_is_not_followed(
        browser, app_server, app_files, tmp_path):
    from selenium.webdriver.common.by import By

    reference = Predictor.from_checkpoint(app_files["ckpt"], device="cpu")
    images, followed, reversed_ = check_prompts(reference, tmp_path)
    good = reference.check_requirement(reference.set_prompt(images, followed, score_range=(1, 5)))
    bad = reference.check_requirement(reference.set_prompt(images, reversed_, score_range=(1, 5)))
    for name, scores in (("followed", followed), ("reversed", reversed_)):   # scores as the CSV's text gives them
        (tmp_path / f"{name}.csv").write_text("image,score\n" + "".join(f"{im.name},{v!r}\n"
                                                                       for im, v in zip(images, scores)))
    with open(tmp_path / "followed.csv", "a") as fh:
        fh.write("elsewhere/ghost.png,3\n")                 # a row naming no uploaded image: reported
    d = _open(browser, app_server)

    # images and their CSV dropped together: one row per image, its thumbnail beside its score from the CSV
    _upload(d, "prompt-images", [*images, tmp_path / "followed.csv"])
    cell = '#prompt-table [data-testid="cell-{}-{}"]'
    assert _status(d, "requirement-status", "Filled") == ("Filled 10 of 10 scores from followed.csv. Not among the "
                                                          "uploaded images: elsewhere/ghost.png.")
    names = [d.find_element(By.CSS_SELECTOR, cell.format(r, SCORE - 1)).text.strip("⋮\n ") for r in range(10)]
    shown = [d.find_element(By.CSS_SELECTOR, cell.format(r, SCORE)).text.strip("⋮\n ") for r in range(10)]
    assert names == [im.name for im in images] and [float(v) for v in shown] == followed
    thumbnails = [d.find_element(By.CSS_SELECTOR, cell.format(r, 0) + ' img[src^="data:image/png;base64,"]')
                  for r in range(10)]
    assert all(t.size["width"] > 8 for t in thumbnails)
    for element_id, text in (("range-low", "1"), ("range-high", "5"), ("range-name", "followed")):
        _type_into(d, element_id, text)
    status = _click(d, "add-requirement", "requirement-status")
    assert status.startswith("Added requirement followed: 10 images") and good.follows
    assert f"Requirement check (leave-one-out SROCC on the prompt's own 10 images): {good.srocc:.2f}." in status
    assert "does not follow" not in status
    name_box = d.find_element(By.CSS_SELECTOR, "#range-name input, #range-name textarea")
    assert name_box.get_attribute("value") == ""                      # cleared after Add

    # the same name again is refused, and the first requirement stays as it was
    _type_into(d, "range-name", "followed")
    assert _click(d, "add-requirement", "requirement-status").startswith(
        "Error: a requirement named 'followed' exists")
    assert name_box.get_attribute("value") == "followed" and _text(d, "requirements").count("followed") == 1

    # the reversed scores, from the prompt-file tab: the model cannot follow them, and the page says so
    d.find_element(By.XPATH, "//button[@role='tab'][normalize-space()='Prompt file']").click()
    _wait(d, lambda d: d.find_element(By.ID, "add-prompt-file").is_displayed(), "the prompt-file tab")
    _upload(d, "prompt-file", [tmp_path / "reversed.csv", *images])
    _uploaded(d, "prompt-file", 11)
    _type_into(d, "file-range-low", "1")
    _type_into(d, "file-range-high", "5")
    status = _click(d, "add-prompt-file", "requirement-status")
    assert status.startswith("Added requirement reversed: 10 images") and bad.srocc < 0 and not bad.follows
    assert (f"own 10 images): {bad.srocc:.2f}; below 0.5: this model does not follow this requirement."
            in status), status
    bold = d.find_elements(By.CSS_SELECTOR, "#requirement-status strong")
    assert any("does not follow this requirement" in b.text for b in bold)
    rows = _text(d, "requirements")
    assert f"{good.srocc:.2f}" in rows and f"{bad.srocc:.2f}: not followed" in rows


def test_an_undecodable_zip_member_is_skipped_and_listed_and_errors_keep_the_results(
        browser, app_server, app_files, tmp_path):
    import zipfile

    from selenium.webdriver.common.by import By

    archive = tmp_path / "batch.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for q in app_files["queries"]:
            zf.write(q, f"photos/{q.name}")
        zf.write(app_files["junk"], "photos/broken.jpg")
    d = _open(browser, app_server)
    d.find_element(By.XPATH, "//button[@role='tab'][normalize-space()='Bundled examples']").click()
    _wait(d, lambda d: d.find_element(By.ID, "add-example").is_displayed(), "the examples tab")
    assert _click(d, "add-example", "requirement-status").startswith("Added")

    _upload(d, "query-images", [archive])
    _uploaded(d, "query-images", 1)
    status = _click(d, "score", "score-status")
    assert status.startswith(f"Scored {len(app_files['queries'])} images under 1 requirement in ") and status.endswith(
        " s. Skipped 1 file(s) in zip archives that could not be decoded: batch.zip:photos/broken.jpg."), status
    rows = d.find_elements(By.CSS_SELECTOR, "#scores-table tbody tr")
    assert [r.find_element(By.CSS_SELECTOR, "td.image").text for r in rows] == \
        [f"batch.zip:photos/{q.name}" for q in app_files["queries"]]

    # a loose file that is no image is an error (as a file named on the command line); the results stay
    d.find_element(By.CSS_SELECTOR, "#query-images button[aria-label='Clear']").click()
    _upload(d, "query-images", [app_files["junk"]])
    _wait(d, lambda d: "broken" in d.find_element(By.CSS_SELECTOR, "#query-images tbody tr").text, "the new upload")
    status = _click(d, "score", "score-status")
    assert status.startswith("Error: ") and "broken.jpg" in status
    assert len(d.find_elements(By.CSS_SELECTOR, "#scores-table tbody tr")) == len(app_files["queries"])
