"""Several X-rays through the page in a real headless Chromium (issue 24), with the shipped model
and its input gate, served by the real app over HTTP.

One drop of three X-rays and a photograph gives four rows in file order (three labels, one
refusal), the CSV downloads with those rows and the predict CLI's columns, sorting and the
per-row heatmap work, and axe-core finds no WCAG 2 A/AA violation with the table shown, at desktop
and phone widths. Twenty X-rays in one drop (two /predict/batch requests: BATCH_MAX_FILES is 16)
show every row, each P(Covid) equal to /predict for that file within 1e-4. Without JavaScript
the form classifies the first file.
"""

from __future__ import annotations

import base64
import csv
import io

import pytest
import requests

from model_training.predict import COLUMNS
from tests.axe_support import violations_at_widths
from tests.browser_support import browser, serve  # noqa: F401 (fixture)
from tests.gate_inputs import MODEL, sample_photos

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DROP = """files => {
  const dt = new DataTransfer();
  for (const f of files) {
    const bytes = Uint8Array.from(atob(f.b64), c => c.charCodeAt(0));
    dt.items.add(new File([bytes], f.name, {type: f.type}));
  }
  return dt;
}"""


@pytest.fixture(scope="module")
def shipped_url():
    yield from serve(MODEL)


def _drop(page, files: list[tuple[str, bytes]]) -> None:
    """Drop ``files`` (name, bytes) on the drop zone in one drag, as a person drags a selection."""
    payload = [{"name": name, "b64": base64.b64encode(data).decode(), "type": "image/jpeg"} for name, data in files]
    transfer = page.evaluate_handle(DROP, payload)
    page.dispatch_event("#dropzone", "drop", {"dataTransfer": transfer})


def _classify_all(page, count: int) -> None:
    page.click("#classify")
    page.locator("#batch-progress-text").filter(has_text=f"All {count} files done").wait_for(timeout=120_000)


def _rows(page) -> list[dict]:
    return page.evaluate("""() => Array.from(document.querySelectorAll('#batch-rows tr')).map(tr => ({
        status: tr.dataset.status, file: tr.querySelector('.file-name').textContent,
        label: tr.querySelector('.label-cell').textContent, p: tr.querySelector('.prob-cell').textContent,
        note: tr.querySelector('.note-cell').textContent,
        thumb: !!tr.querySelector('img.thumb, .hint')}))""")


def _predict(url: str, data: bytes) -> tuple[int, dict]:
    response = requests.post(url + "/predict", files={"file": ("x.jpg", data, "image/jpeg")}, timeout=60)
    return response.status_code, response.json()


def _watch(page) -> tuple[list[str], list[str]]:
    errors, posts = [], []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("request", lambda req: posts.append(req.url) if req.method == "POST" else None)
    return errors, posts


def test_four_files_in_one_drop_rows_csv_sort_heatmap_and_axe(browser, shipped_url, sample_xrays):
    xrays = [sample_xrays["covid"][0], sample_xrays["normal"][0], sample_xrays["covid"][1]]
    files = [(xrays[0].name, xrays[0].read_bytes()), (xrays[1].name, xrays[1].read_bytes()),
             ("holiday.jpg", sample_photos()["china.jpg"]), (xrays[2].name, xrays[2].read_bytes())]
    want = [_predict(shipped_url, data) for _, data in files]
    assert [status for status, _ in want] == [200, 200, 422, 200]

    page = browser.new_page(viewport={"width": 1200, "height": 900}, accept_downloads=True)
    errors, posts = _watch(page)
    page.goto(shipped_url + "/")
    _drop(page, files)
    _classify_all(page, 4)
    rows = _rows(page)
    assert [r["file"] for r in rows] == [name for name, _ in files]  # file order
    assert [r["status"] for r in rows] == ["classified", "classified", "refused", "classified"]
    for row, (status, answer) in zip(rows, want):
        assert row["thumb"]
        if status == 200:
            assert row["label"] == answer["label"]
            assert float(row["p"]) == pytest.approx(answer["probabilities"]["Covid"], abs=1e-4)
        else:
            assert row["label"] == "Refused" and row["note"] == answer["error"]["message"]
            assert "does not look like a frontal chest X-ray" in row["note"]
    assert posts == [shipped_url + "/predict/batch"]  # one request for the four files
    note = page.locator("[data-testid=batch-note]").inner_text()
    assert "calibrated probability" in note and "balanced operating point" in note
    assert page.locator("[data-testid=disclaimer]").count() == 1 and page.locator(".disclaimer").count() == 1

    # Download CSV: the predict CLI's columns, one row per file in file order.
    with page.expect_download() as download:
        page.click("#download-csv")
    table = list(csv.DictReader(io.StringIO(open(download.value.path(), encoding="utf-8").read())))
    assert tuple(table[0].keys()) == COLUMNS and len(table) == 4
    for row, (name, _), (status, answer) in zip(table, files, want):
        assert row["file"] == name
        if status == 200:
            assert row["label"] == answer["label"] and row["error"] == ""
            assert float(row["probability_covid"]) == pytest.approx(answer["probabilities"]["Covid"], abs=1e-6)
            assert float(row["probability_normal"]) == pytest.approx(answer["probabilities"]["Normal"], abs=1e-6)
            assert row["threshold"] == f"{answer['threshold']:g}" and row["operating_point"] == "balanced"
            assert row["in_distribution"] == str(answer["in_distribution"]).lower()
        else:
            assert row["label"] == "" and row["error"] == f"not_a_chest_xray: {answer['error']['message']}"

    # Sort by P(Covid): highest first, the refusal last; then ascending; then file order again.
    page.click("#sort-covid")
    probs = [float(r["p"]) for r in _rows(page) if r["status"] == "classified"]
    assert probs == sorted(probs, reverse=True) and _rows(page)[-1]["status"] == "refused"
    assert page.get_attribute("#sort-header", "aria-sort") == "descending"
    page.click("#sort-covid")
    page.click("#sort-covid")
    assert [r["file"] for r in _rows(page)] == [name for name, _ in files]

    # A heatmap for one row: one /predict?explain=true for that file, shown in its row.
    page.locator("#batch-rows tr").first.locator("button.row-heatmap").click()
    heat = page.locator("#batch-rows tr").first.locator("img.row-heatmap-img")
    heat.wait_for(state="visible", timeout=60_000)
    assert heat.get_attribute("src").startswith("data:image/png;base64,")
    assert posts[1:] == [shipped_url + "/predict?explain=true"]

    found = violations_at_widths(page)
    assert found == {1200: [], 390: []}
    assert errors == []  # no CSP violation, no script error
    page.close()


def test_twenty_xrays_in_one_drop(browser, shipped_url, sample_xrays, data_dir):
    paths = [p for label in ("covid", "normal") for p in sorted((data_dir / "test" / label).glob("*.jpg"))[:10]]
    files = [(p.name, p.read_bytes()) for p in paths]
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors, posts = _watch(page)
    page.goto(shipped_url + "/")
    _drop(page, files)
    _classify_all(page, 20)
    rows = _rows(page)
    assert [r["file"] for r in rows] == [name for name, _ in files]
    assert all(page.locator("#batch-rows tr").nth(i).is_visible() for i in range(20))
    assert posts == [shipped_url + "/predict/batch"] * 2  # 16 + 4: within BATCH_MAX_FILES
    for row, (_, data) in zip(rows, files):
        status, answer = _predict(shipped_url, data)
        assert status == 200 and row["status"] == "classified" and row["label"] == answer["label"]
        assert abs(float(row["p"]) - answer["probabilities"]["Covid"]) <= 1e-4
    assert errors == []
    page.close()


def test_without_javascript_the_first_file_is_classified(browser, shipped_url, sample_xrays):
    first, second = sample_xrays["normal"][0], sample_xrays["covid"][0]
    _, want = _predict(shipped_url, first.read_bytes())
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(shipped_url + "/")
    page.set_input_files("#file-input", [str(first), str(second)])
    with page.expect_navigation():
        page.click("#classify")
    assert page.locator("#label").inner_text().strip() == want["label"]
    assert float(page.locator("#prob-covid").inner_text()) == pytest.approx(want["probabilities"]["Covid"], abs=1e-3)
    context.close()
