"""In a real headless Chromium: upload a real X-ray through the page and read the result.

Skips with a reason when Chromium or playwright is missing, unless REQUIRE_BROWSER=1 (set
by .ci/run), where a missing browser is a failure.
"""

from __future__ import annotations

import pytest
import requests

from tests.browser_support import browser, serve  # noqa: F401 (fixture)
from tests.web_support import ROOT

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def live_url(tiny_model):
    yield from serve(tiny_model)


def _read_result(page) -> dict:
    return {
        "label": page.locator("#label").inner_text().strip(),
        "covid": float(page.locator("#prob-covid").inner_text()),
        "normal": float(page.locator("#prob-normal").inner_text()),
        "threshold": float(page.locator("#threshold").inner_text()),
        "model": page.locator("#model-name").inner_text().strip(),
        # One research-demo notice per screen (issue 24): the page's, not a second one in the result.
        "disclaimer": page.locator(".disclaimer").inner_text(),
    }


def _expected(live_url, path):
    return requests.post(live_url + "/predict", data=path.read_bytes(), timeout=60,
                         headers={"Content-Type": "image/jpeg"}).json()


def test_upload_and_classify_in_chromium(browser, live_url, sample_xrays):
    path = sample_xrays["covid"][0]
    want = _expected(live_url, path)
    page = browser.new_page()
    errors = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(live_url + "/")
    page.set_input_files("#file-input", str(path))
    page.locator("#preview").wait_for(state="visible")
    page.click("#classify")
    page.locator("#result").wait_for(state="visible", timeout=60_000)
    got = _read_result(page)
    assert got["label"] == want["label"] and got["label"] in ("Covid", "Normal")
    assert got["covid"] == pytest.approx(want["probabilities"]["Covid"], abs=1e-3)
    assert got["normal"] == pytest.approx(want["probabilities"]["Normal"], abs=1e-3)
    assert got["threshold"] == pytest.approx(want["threshold"], abs=1e-3)
    assert got["model"] == want["model"]["name"]
    assert "not a diagnosis" in got["disclaimer"].lower()
    assert page.locator("#bar-covid").get_attribute("value") is not None
    assert errors == []  # no CSP violation, no script error
    (ROOT / "reports").mkdir(exist_ok=True)
    page.screenshot(path=str(ROOT / "reports" / "browser_result.png"), full_page=True)

    # A bad file shows the API's message on the page, not a crash.
    page.set_input_files("#file-input", files=[{"name": "notes.png", "mimeType": "image/png",
                                                "buffer": b"just some text"}])
    page.click("#classify")
    page.locator("#error").wait_for(state="visible")
    assert "not an image" in page.locator("#error").inner_text().lower()
    page.close()


def test_works_with_javascript_disabled(browser, live_url, sample_xrays):
    path = sample_xrays["normal"][0]
    want = _expected(live_url, path)
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(live_url + "/")
    page.set_input_files("#file-input", str(path))
    with page.expect_navigation():
        page.click("#classify")
    got = _read_result(page)
    assert got["label"] == want["label"]
    assert got["covid"] == pytest.approx(want["probabilities"]["Covid"], abs=1e-3)
    page.screenshot(path=str(ROOT / "reports" / "browser_result_nojs.png"), full_page=True)
    context.close()
