"""In a real headless Chromium: classify an X-ray, toggle "Show heatmap", see the Grad-CAM
overlay over the preview, and save the screenshot the README shows
(``reports/browser_heatmap.png``).

Skips with a reason when Chromium or playwright is missing, unless REQUIRE_BROWSER=1 (set
by .ci/run), where a missing browser is a failure.
"""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from tests.browser_support import browser, serve  # noqa: F401 (fixture)
from tests.web_support import ROOT

pytestmark = [pytest.mark.browser, pytest.mark.slow]
SHIPPED = ROOT / "models" / "covid_resnet50.h5"


@pytest.fixture(scope="module")
def live_url(tiny_model):
    """The shipped model when present (the screenshot is the README's), else the tiny one."""
    yield from serve(SHIPPED if SHIPPED.exists() else tiny_model)


@pytest.fixture(scope="module")
def page(browser):
    yield browser.new_page(viewport={"width": 900, "height": 1000})


def _box(page, selector):
    return page.locator(selector).bounding_box()


def test_show_heatmap_toggle(page, live_url, sample_xrays, tmp_path):
    errors, explain_requests = [], []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("request", lambda req: explain_requests.append(req.url) if "explain=true" in req.url else None)

    # A non-square upload, so the overlay must keep the upload's aspect to cover the preview.
    upload = tmp_path / "wide_xray.png"
    Image.open(sample_xrays["covid"][0]).convert("L").resize((600, 420)).save(upload)
    page.goto(live_url + "/")
    assert page.locator("#heatmap-controls").is_hidden()
    page.set_input_files("#file-input", str(upload))
    page.locator("#preview").wait_for(state="visible")
    page.click("#classify")
    page.locator("#result").wait_for(state="visible", timeout=60_000)
    assert page.locator("#heatmap").is_hidden() and explain_requests == []

    page.check("#heatmap-toggle")
    page.locator("#heatmap").wait_for(state="visible", timeout=60_000)
    src = page.locator("#heatmap").get_attribute("src")
    assert src.startswith("data:image/png;base64,")
    overlay = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
    assert overlay.size == (512, 358)
    heat, preview = _box(page, "#heatmap"), _box(page, "#preview")
    for key in ("x", "y", "width", "height"):
        assert heat[key] == pytest.approx(preview[key], abs=1.5)  # drawn over the preview
    assert page.locator("#explained-class").inner_text() == page.locator("#label").inner_text()
    assert len(explain_requests) == 1
    (ROOT / "reports").mkdir(exist_ok=True)
    page.screenshot(path=str(ROOT / "reports" / "browser_heatmap.png"), full_page=True)

    page.uncheck("#heatmap-toggle")
    assert page.locator("#heatmap").is_hidden()
    page.check("#heatmap-toggle")  # shown again from the loaded overlay, no new request
    page.locator("#heatmap").wait_for(state="visible")
    assert len(explain_requests) == 1

    # A new file drops the old overlay; with the toggle on, Classify asks for both at once.
    page.set_input_files("#file-input", str(sample_xrays["normal"][0]))
    assert page.locator("#heatmap").is_hidden()
    page.click("#classify")
    page.locator("#heatmap").wait_for(state="visible", timeout=60_000)
    assert len(explain_requests) == 2
    assert errors == []  # no CSP violation, no script error


def test_dicom_upload_through_the_page(page, live_url, sample_xrays, tmp_path):
    """Browsers cannot preview DICOM: the page still classifies it and shows the heatmap alone."""
    from cxr.decode import decode_image
    from tests.test_dicom import PATIENT_NAME, make_dicom

    gray = decode_image(sample_xrays["normal"][1].read_bytes())
    dcm = tmp_path / "chest.dcm"
    dcm.write_bytes(make_dicom(255 - gray, photometric="MONOCHROME1"))
    page.goto(live_url + "/")
    page.set_input_files("#file-input", str(dcm))
    page.locator("#preview").wait_for(state="hidden")
    page.click("#classify")
    page.locator("#result").wait_for(state="visible", timeout=60_000)
    page.check("#heatmap-toggle")
    page.locator("#heatmap").wait_for(state="visible", timeout=60_000)
    assert page.locator("#label").inner_text() in ("Covid", "Normal")
    assert "standalone" in page.locator("#heatmap").get_attribute("class")
    assert page.locator("#heatmap").bounding_box()["width"] > 100
    assert PATIENT_NAME not in page.content() and "Doe" not in page.content()
