"""axe-core (Deque's accessibility engine) in the browser tests: WCAG 2 A/AA violations of a page.

``axe.min.js`` comes from the pinned PyPI package ``axe-playwright-python`` (requirements-dev.txt),
which bundles it: CI has Python, make, git and apt only, no npm. The script is evaluated through
the DevTools protocol, which the page's Content-Security-Policy (``script-src 'self'``) does not
block, so the page is checked exactly as it is served. Skips like the browser itself when the
package is missing, unless REQUIRE_BROWSER=1.
"""

from __future__ import annotations

import functools
import os
from importlib import resources

import pytest

# WCAG 2.0 and 2.1, levels A and AA (axe's rule tags); best-practice rules are not asked for.
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
WIDTHS = (1200, 390)  # desktop and a phone


@functools.cache
def axe_source() -> str:
    try:
        return (resources.files("axe_playwright_python") / "axe.min.js").read_text(encoding="utf-8")
    except ModuleNotFoundError:
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail("REQUIRE_BROWSER=1 but axe-playwright-python (axe-core) is not installed")
        pytest.skip("axe-playwright-python (axe-core) is not installed")


def axe_violations(page) -> list[dict]:
    """axe-core's WCAG 2 A/AA violations on the page as it is now: rule id, impact and the
    elements (CSS selectors), so a failing assertion says what to fix."""
    page.evaluate(axe_source())
    result = page.evaluate(
        "tags => axe.run(document, {runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']})",
        WCAG_TAGS)
    return [{"id": v["id"], "impact": v["impact"], "help": v["help"],
             "nodes": [" ".join(n["target"]) if isinstance(n["target"], list) else str(n["target"])
                       for n in v["nodes"]][:5]}
            for v in result["violations"]]


def violations_at_widths(page, height: int = 900) -> dict[int, list[dict]]:
    """The violations at each of :data:`WIDTHS`; the page keeps its state between widths."""
    found = {}
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": height})
        found[width] = axe_violations(page)
    return found
