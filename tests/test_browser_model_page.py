"""``GET /model`` in a real headless Chromium (issue 24): reached from the main page's link, it
shows every figure of the shipped model's report (equal to ``metrics.json`` and the gate report),
its plots, the model card's "Cannot" paragraph word for word, one research-demo notice, and
axe-core (WCAG 2 A/AA) finds no violation at desktop and phone widths.
"""

from __future__ import annotations

import json

import pytest

from app.model_page import card_bullet
from tests.axe_support import axe_violations, violations_at_widths
from tests.browser_support import browser, serve  # noqa: F401 (fixture)
from tests.gate_inputs import MODEL
from tests.test_model_page import expected_figures, strip_markdown
from tests.web_support import ROOT

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def shipped_url():
    yield from serve(MODEL)


def test_model_page_shows_the_report_in_chromium(browser, shipped_url):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(shipped_url + "/")
    page.click("[data-testid=model-page-link]")
    page.wait_for_url(shipped_url + "/model")
    page.wait_for_load_state("load")

    shown = page.evaluate("""() => Object.fromEntries(Array.from(document.querySelectorAll('[data-metric]'))
        .map(el => [el.dataset.metric, el.textContent.trim()]))""")
    assert shown == expected_figures()  # every figure, and nothing else, equals metrics.json / the gate report

    meta = json.loads(MODEL.with_suffix(".json").read_text())
    assert page.locator("[data-testid=model-display-name]").inner_text() == meta["name"]
    assert page.locator("[data-testid=model-version]").inner_text() == meta["sha256"][:12]
    assert page.locator("[data-testid=model-input-size]").inner_text() == str(meta["input_size"])
    training = page.locator("[data-testid=training-data]").inner_text()
    assert f"{sum(meta['data']['train'].values()):,} chest X-rays" in training
    assert "stage4" not in page.content() and "stage 4" not in page.content()

    card = (ROOT / "MODEL_CARD.md").read_text()
    assert page.locator("[data-testid=cannot]").inner_text() == strip_markdown(card_bullet(card))

    for name in ("roc_curve.png", "reliability.png", "confusion_matrix.png"):
        img = page.locator(f"[data-testid='figure-{name}']")
        assert img.evaluate("el => el.complete && el.naturalWidth") > 100, name
    assert page.locator(".disclaimer").count() == 1

    assert violations_at_widths(page) == {1200: [], 390: []}
    # The check can fail: an image without a text alternative is found.
    page.evaluate("document.querySelector('main').insertAdjacentHTML('beforeend', '<img src=\"/static/favicon.svg\">')")
    assert "image-alt" in [v["id"] for v in axe_violations(page)]
    assert errors == []
    page.close()
