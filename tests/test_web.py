"""The search page, driven in headless Chromium (Debian's chromium and chromium-driver)."""

import os
import tempfile

import pytest
from test_server import running

from rnnembed.server import ServerConfig, create_app
from rnnembed.store import VectorStore

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    pytest.skip(
        f"{CHROMIUM} or {CHROMEDRIVER} is missing: apt-get install chromium chromium-driver",
        allow_module_level=True,
    )
webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

KEY = "page-key"
LINES = [
    ("The zeppelin floats above the harbour at dawn.", "notes/sky.txt:1"),
    ("A plumber fixes the kitchen sink on Tuesday.", "notes/house.txt:4"),
    ("Tickets for the zeppelin ride are sold out.", "notes/sky.txt:2"),
]


@pytest.fixture(scope="module")
def url(lm, tmp_path_factory):
    folder = tmp_path_factory.mktemp("web")
    with VectorStore(folder / "index.db", model=lm) as store:
        store.add([t for t, _ in LINES], sources=[s for _, s in LINES])
        app = create_app(lm, store, api_key=KEY, config=ServerConfig(model_name="page-model"))
        with running(app) as u:
            yield u


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.TemporaryDirectory()
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile.name}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    profile.cleanup()


def wait(driver, condition):
    return WebDriverWait(driver, 30).until(condition)


def enter_key(browser):
    """Type the API key into the page's key box (inside a closed <details>)."""
    browser.find_element(By.TAG_NAME, "summary").click()
    box = browser.find_element(By.ID, "api-key")
    box.clear()
    box.send_keys(KEY)


def test_search_from_the_page(browser, url):
    browser.get(url)
    wait(browser, lambda d: d.find_element(By.ID, "search-status").text)  # no key yet: an error
    assert "API key" in browser.find_element(By.ID, "search-status").text
    enter_key(browser)
    browser.find_element(By.ID, "query").send_keys("zeppelin")
    browser.find_element(By.CSS_SELECTOR, "input[name=mode][value=bm25]").click()
    browser.find_element(By.ID, "search").click()
    hits = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#results li.hit"))
    found = {
        (
            hit.find_element(By.CLASS_NAME, "text").text,
            hit.find_element(By.CLASS_NAME, "source").text,
        )
        for hit in hits
    }
    assert found == {LINES[0], LINES[2]}
    for hit in hits:
        assert float(hit.find_element(By.CLASS_NAME, "score").text) > 0
    assert browser.find_element(By.ID, "search-status").text == "2 hits (bm25)"

    browser.find_element(By.CSS_SELECTOR, "input[name=mode][value=hybrid]").click()
    browser.find_element(By.ID, "search").click()
    wait(browser, lambda d: "(hybrid)" in d.find_element(By.ID, "search-status").text)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#results li.hit")) == 3


def test_generate_from_the_page(browser, url):
    browser.get(url)
    enter_key(browser)
    browser.find_element(By.ID, "prompt").send_keys("The")
    max_tokens = browser.find_element(By.ID, "max-tokens")
    max_tokens.clear()
    max_tokens.send_keys("15")
    browser.find_element(By.ID, "generate").click()
    text = wait(browser, lambda d: d.find_element(By.ID, "generated").text)
    assert text.startswith("The") and len(text) > len("The")
    assert "page-model" in browser.find_element(By.ID, "model").text
