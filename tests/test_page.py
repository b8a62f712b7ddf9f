"""The search page, driven in a real headless Chromium (Debian's `chromium`, through Playwright).

The server runs on a free loopback port with the embedded model over the
bundled FAQ. Screenshots go to $SEMSEARCH_SCREENSHOTS when it is set (CI
keeps them; a person looks at them), else to the test's temporary folder.
Skips with the reason only when no browser can be started here.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import require, unavailable
from test_service import ready, serving

from index import Index
from search.faq import faq_documents, read_faq

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def browser():
    playwright_api = require("playwright.sync_api", "Playwright for Python is not installed")
    if CHROMIUM is None:
        unavailable("no Chromium here (Debian: apt-get install chromium)")
    with playwright_api.sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        except Exception as exc:  # a browser that cannot start here
            unavailable(f"Chromium at {CHROMIUM} does not start: {str(exc).splitlines()[0]}")
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    path = tmp_path_factory.mktemp("page") / "faq"
    entries = read_faq([str(ROOT / "examples" / "faq.jsonl")], question_field="text")
    long_doc = {"id": "manual", "metadata": {"topic": "shipping"}, "text": (
        "Our shipping times: orders leave the warehouse within three days. " * 25
        + "Parcel lockers: you can have any parcel delivered to a locker near you and collect it with a code. " * 14
        + "Returns are free for thirty days after delivery. " * 25)}
    Index.create(path).add([*faq_documents(entries), long_doc])
    with serving(path) as (url, _):
        ready(url)
        yield url


def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("SEMSEARCH_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_search_finds_the_question_that_shares_no_word(browser, site, tmp_path):
    page = browser.new_page(viewport={"width": 1000, "height": 800})
    page.goto(site)
    page.wait_for_selector(".status.ready")
    page.fill("#search-query", "I forgot my login secret")
    page.click("#search-form button")
    first = page.wait_for_selector("#results li.hit")
    assert first.get_attribute("data-id") == "faq1"
    assert "reset my password" in first.inner_text()
    assert "results in" in page.inner_text("#search-note")
    page.screenshot(path=str(shots(tmp_path) / "search.png"), full_page=True)
    page.close()


def test_the_matched_passage_is_highlighted_inside_its_document(browser, site):
    page = browser.new_page()
    page.goto(site)
    page.wait_for_selector(".status.ready")
    page.fill("#search-query", "can my parcel go to a locker")
    page.click("#search-form button")
    page.wait_for_selector('#results li.hit[data-id="manual"]')
    mark = page.inner_text('#results li.hit[data-id="manual"] mark')
    assert "locker" in mark and len(mark) < len(page.inner_text('#results li.hit[data-id="manual"] .text'))
    page.close()


def test_faq_answers_or_says_not_sure(browser, site, tmp_path):
    page = browser.new_page(viewport={"width": 1000, "height": 700})
    page.goto(site)
    page.click("#tab-faq")
    page.fill("#faq-question", "I forgot my login secret")
    page.click("#faq-form button")
    answer = page.wait_for_selector("#faq-confident")
    assert "Forgot password" in answer.inner_text()
    page.screenshot(path=str(shots(tmp_path) / "faq-answer.png"), full_page=True)
    page.fill("#faq-question", "what will the weather be like in Paris tomorrow")
    page.click("#faq-form button")
    unsure = page.wait_for_selector("#faq-unsure")
    assert "Not sure" in unsure.inner_text() and unsure.query_selector_all("li")
    page.screenshot(path=str(shots(tmp_path) / "faq-not-sure.png"), full_page=True)
    page.close()
