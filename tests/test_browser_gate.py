"""The input gate in a real browser (issue 12): a photograph gets the API's friendly refusal on
the page, an X-ray unlike the training data gets its result with the warning shown, and an
ordinary X-ray gets no warning. The shipped model and gate, served by the real app."""

from __future__ import annotations

import pytest

from cxr.inference import load_predictor
from tests.browser_support import browser, serve  # noqa: F401 (fixture)
from tests.gate_inputs import MODEL, out_of_distribution_xray, sample_photos

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def shipped_url():
    yield from serve(MODEL)


def _upload(page, name: str, data: bytes) -> None:
    page.set_input_files("#file-input", files=[{"name": name, "mimeType": "image/jpeg", "buffer": data}])
    page.click("#classify")


def test_refusal_and_shift_warning_on_the_page(browser, shipped_url, sample_xrays, tmp_path):
    odd_name, odd = out_of_distribution_xray(load_predictor(MODEL))
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(shipped_url + "/")

    _upload(page, "china.jpg", sample_photos()["china.jpg"])
    page.locator("#error").wait_for(state="visible", timeout=60_000)
    assert "does not look like a frontal chest X-ray" in page.locator("#error").inner_text()
    assert page.locator("#result").is_hidden()

    _upload(page, odd_name, odd)
    page.locator("#result").wait_for(state="visible", timeout=60_000)
    warning = page.locator("[data-testid=shift-warning]")
    assert warning.is_visible()
    assert "differs from the images the model was trained on" in warning.inner_text()
    assert float(page.locator("#shift-score").inner_text()) > float(page.locator("#shift-threshold").inner_text())

    _upload(page, "normal.jpg", sample_xrays["normal"][0].read_bytes())
    page.locator("#shift-warning").wait_for(state="hidden", timeout=60_000)
    assert page.locator("#label").inner_text().strip() in ("Covid", "Normal")
    assert errors == []
    page.close()
