"""The try-it page (service/static/) in real headless Chromium against a real uvicorn on loopback.

Chromium and chromedriver are Debian's (/usr/bin), driven through selenium's Service so selenium never
downloads a browser or driver; the browser tests skip with the reason when they are absent.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile

from tests.audio_files import tone
from tests.servers import REPO, running_server

STATIC = REPO / "service" / "static"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
RATE = 16000
KEYWORD = "yes"
API_KEY = "page-test-key"
WAIT_S = 60  # generous upper bounds for explicit waits on a shared 2-core machine; never a timing assertion


def serve(**settings: str):
    """A real kws-serve process (uvicorn) on a free loopback port; yields its base URL."""
    with running_server(max_wait_ms="20", **settings) as server:
        yield server.base


@pytest.fixture(scope="module")
def server():
    yield from serve()


@pytest.fixture(scope="module")
def keyed_server():
    """A server that wants an API key on /v1/* (the page itself stays open)."""
    yield from serve(api_key=API_KEY)


def launch_chromium(profile: Path, fake_microphone: Path | None = None):
    """Headless Debian Chromium with the browser console log readable; a fake microphone when asked."""
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        pytest.skip(f"needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the dev extra)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1000,1200"):
        options.add_argument(flag)
    if fake_microphone is not None:
        options.add_argument("--use-fake-ui-for-media-stream")
        options.add_argument("--use-fake-device-for-media-stream")
        options.add_argument(f"--use-file-for-fake-audio-capture={fake_microphone}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = launch_chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield driver
    driver.quit()


def open_page(driver, base: str):
    """Load the page and wait until it shows the model; returns what the browser console logged meanwhile."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(base + "/")
    WebDriverWait(driver, WAIT_S).until(lambda d: "kws10" in d.find_element(By.ID, "model").text)
    return driver.get_log("browser")


def text_of(driver, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id).text


def wait_for(driver, condition, timeout: float = WAIT_S):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: condition())


@pytest.fixture(scope="module")
def keyword_clip(server, data_dir) -> Path:
    """The first validation-speaker "yes" clip, in manifest order, that the served model labels "yes"."""
    with open(data_dir / "gsc" / "manifest.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == "validation" and r["word"] == KEYWORD]
    for row in rows[:10]:
        path = data_dir / "gsc" / row["file"]
        body = httpx.post(f"{server}/v1/recognize", files={"file": (path.name, path.read_bytes(), "audio/flac")},
                          timeout=30).json()
        if body["label"] == KEYWORD:
            return path
    raise AssertionError(f"none of the first 10 validation {KEYWORD!r} clips is recognised")


def padded_wav(clip: Path, data_dir: Path, path: Path, before_s: float, after_s: float) -> Path:
    """The clip between stretches of quiet background noise (a fixed slice of the GSC noise file), as 16-bit WAV."""
    speech, rate = soundfile.read(clip, dtype="float32")
    assert rate == RATE
    noise, _ = soundfile.read(data_dir / "gsc" / "_background_noise_" / "pink_noise.flac", dtype="float32")
    noise = 0.02 * noise[: int((before_s + after_s) * RATE) + len(speech)] / np.abs(noise).max()
    start = int(before_s * RATE)
    noise[start:start + len(speech)] += speech
    soundfile.write(path, noise, RATE, subtype="PCM_16")
    return path


# -- without a browser -------------------------------------------------------------------------


def test_page_and_assets_are_served_and_self_contained(server):
    page = httpx.get(f"{server}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for asset in ("app.js", "style.css"):
        response = httpx.get(f"{server}/static/{asset}")
        assert response.status_code == 200 and f"/static/{asset}" in page.text
    assert httpx.get(f"{server}/static/missing.js").status_code == 404
    for file in STATIC.iterdir():  # nothing from the internet: no CDNs, no web fonts
        assert not re.search(r"https?://", file.read_text()), file.name
    assert "/" not in httpx.get(f"{server}/openapi.json").json()["paths"]


# -- in Chromium ---------------------------------------------------------------------------------


@pytest.mark.browser
def test_page_loads_without_console_errors_and_shows_the_model(browser, server):
    console = open_page(browser, server)
    assert not [entry for entry in console if entry["level"] == "SEVERE"], console
    labels = text_of(browser, "labels")
    assert "yes" in labels and "_silence_" in labels
    assert text_of(browser, "error") == ""


@pytest.mark.browser
@pytest.mark.data
def test_uploaded_clip_shows_the_label_scores_and_latency(browser, server, keyword_clip):
    from selenium.webdriver.common.by import By

    open_page(browser, server)
    browser.find_element(By.ID, "clip-file").send_keys(str(keyword_clip))
    browser.find_element(By.ID, "clip-send").click()
    wait_for(browser, lambda: text_of(browser, "result-label") != "")
    assert text_of(browser, "result-label") == KEYWORD
    bars = browser.find_elements(By.CSS_SELECTOR, "#result-bars li")
    assert len(bars) == 5 and bars[0].get_attribute("data-label") == KEYWORD
    stages = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "#latency th")]
    assert stages == ["decode", "features", "queue", "inference", "vad", "total"]


@pytest.mark.browser
def test_a_4xx_answer_is_shown_as_an_error(browser, server, tmp_path):
    from selenium.webdriver.common.by import By

    not_audio = tmp_path / "picture.png"
    not_audio.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    open_page(browser, server)
    browser.find_element(By.ID, "clip-file").send_keys(str(not_audio))
    browser.find_element(By.ID, "clip-send").click()
    wait_for(browser, lambda: text_of(browser, "error") != "")
    assert text_of(browser, "error").startswith("415 unsupported_media:")


@pytest.mark.browser
@pytest.mark.data
def test_streamed_file_puts_a_detection_on_the_timeline(browser, server, keyword_clip, data_dir, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    wav = padded_wav(keyword_clip, data_dir, tmp_path / "stream.wav", before_s=2.0, after_s=2.0)
    open_page(browser, server)
    browser.find_element(By.CSS_SELECTOR, 'input[name="stream-source"][value="file"]').click()
    browser.find_element(By.ID, "stream-file").send_keys(str(wav))
    Select(browser.find_element(By.ID, "stream-speed")).select_by_value("4")
    browser.find_element(By.ID, "stream-start").click()
    wait_for(browser, lambda: text_of(browser, "stream-status").startswith("finished") or text_of(browser, "error"))
    assert text_of(browser, "error") == ""
    marks = browser.find_elements(By.CSS_SELECTOR, "#timeline g.detection")
    assert [mark.get_attribute("data-label") for mark in marks] == [KEYWORD]
    assert marks[0].find_element(By.TAG_NAME, "text").text == KEYWORD
    assert len(browser.find_elements(By.CSS_SELECTOR, "#stream-bars li")) == 3  # every window scored (no VAD gate)
    start, end = map(float, re.findall(r"(\d+\.\d+)", text_of(browser, "detections"))[1:3])
    assert start < 3.0 and end > 2.0  # overlaps the second of stream audio that holds the word


@pytest.fixture(scope="module")
def microphone_browser(keyword_clip, data_dir, tmp_path_factory):
    """Chromium whose fake microphone plays a WAV in a loop: the word, then a second of quiet noise."""
    folder = tmp_path_factory.mktemp("microphone")
    microphone = padded_wav(keyword_clip, data_dir, folder / "microphone.wav", before_s=0.0, after_s=1.0)
    driver = launch_chromium(folder / "profile", fake_microphone=microphone)
    yield driver
    driver.quit()


@pytest.mark.browser
@pytest.mark.data
def test_microphone_recording_is_recognised(microphone_browser, server):
    from selenium.webdriver.common.by import By

    driver = microphone_browser
    open_page(driver, server)
    driver.find_element(By.ID, "record").click()
    # 3.2 s of a 2 s loop holds at least one whole word, wherever the loop started
    wait_for(driver, lambda: float(text_of(driver, "record-time").split()[0]) >= 3.2)
    driver.find_element(By.ID, "record-stop").click()
    wait_for(driver, lambda: text_of(driver, "result-label") != "" or text_of(driver, "error"))
    assert text_of(driver, "error") == ""
    assert text_of(driver, "result-label") == KEYWORD
    assert re.search(r"s of (webm|matroska)$", text_of(driver, "result-score"))  # what MediaRecorder made


@pytest.mark.browser
@pytest.mark.data
def test_streamed_microphone_puts_detections_on_the_timeline(microphone_browser, server):
    from selenium.webdriver.common.by import By

    driver = microphone_browser
    open_page(driver, server)
    driver.find_element(By.CSS_SELECTOR, 'input[name="stream-source"][value="mic"]').click()
    driver.find_element(By.ID, "stream-start").click()
    wait_for(driver, lambda: driver.find_elements(By.CSS_SELECTOR, "#timeline g.detection") or text_of(driver, "error"))
    driver.find_element(By.ID, "stream-stop").click()
    wait_for(driver, lambda: text_of(driver, "stream-status").startswith("finished") or text_of(driver, "error"))
    assert text_of(driver, "error") == ""
    marks = driver.find_elements(By.CSS_SELECTOR, "#timeline g.detection")
    assert marks[0].get_attribute("data-label") == KEYWORD


@pytest.mark.browser
def test_api_key_is_kept_and_sent_on_requests_and_the_stream(browser, keyed_server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    clip = tmp_path / "tone.wav"
    soundfile.write(clip, np.concatenate([tone(1.0)[:, 0], np.zeros(RATE, np.float32)]), RATE, subtype="PCM_16")
    browser.get(keyed_server + "/")
    wait_for(browser, lambda: text_of(browser, "error").startswith("401 unauthorized:"))
    browser.find_element(By.ID, "api-key").send_keys(API_KEY, Keys.TAB)  # "change": stored, model reloaded
    wait_for(browser, lambda: "kws10" in text_of(browser, "model"))
    assert text_of(browser, "error") == ""
    open_page(browser, keyed_server)  # reloaded: the key comes back from localStorage
    assert browser.find_element(By.ID, "api-key").get_attribute("value") == API_KEY
    browser.find_element(By.ID, "clip-file").send_keys(str(clip))
    browser.find_element(By.ID, "clip-send").click()
    wait_for(browser, lambda: text_of(browser, "result-label") != "" or text_of(browser, "error"))
    assert text_of(browser, "error") == ""
    browser.find_element(By.CSS_SELECTOR, 'input[name="stream-source"][value="file"]').click()
    browser.find_element(By.ID, "stream-file").send_keys(str(clip))
    browser.find_element(By.ID, "stream-start").click()
    wait_for(browser, lambda: text_of(browser, "stream-status").startswith("finished") or text_of(browser, "error"))
    assert text_of(browser, "error") == ""
    browser.execute_script("localStorage.clear()")
