"""The viewer and the HTML report in a real browser: Debian's Chromium, driven by Playwright.

What a person sees is checked: the runs table's rows against the results, a filter, a click
into a run whose trace lists every attempt with token sums equal to the ledger's, a run
appearing in live mode, the report's plots. Screenshots go to a temporary folder (their
paths are printed); with ``STRATAGEM_DOCS_SCREENSHOT=PATH`` the run page's is also saved
there (that is how ``docs/viewer-run.png`` was made).

Chromium must be installed (``.ci/run`` installs Debian's ``chromium``): a missing browser
is a failure, not a skip, so CI cannot pass without running these.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stratagem.ablation import ResultsStore, RunRecord
from stratagem.budgets import LedgerStore, TokenLedger

from .conftest import RUNS

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = Path(tempfile.gettempdir()) / "stratagem-view-screenshots"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium "
                    "(`apt-get install -y chromium`, as .ci/run does) to run the browser tests")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True,
                                    timeout=60_000)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # Nothing but the viewer itself: a request anywhere else fails the test.
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    yield page
    context.close()
    assert not errors, errors
    outside = [u for u in requests if not u.startswith(("http://127.0.0.1:", "data:",
                                                         "file://", "about:"))]
    assert not outside, outside


def _shot(page: Any, name: str) -> Path:
    SHOTS.mkdir(exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def test_runs_table_filter_and_a_run_trace(view_folder: Path, viewer: Callable[[Path], Any],
                                           page: Any) -> None:
    with ResultsStore(view_folder / "results.sqlite") as store:
        records = {r.run_id: r for r in store.records()}
    with LedgerStore(view_folder / "ledger.sqlite") as store:
        ledger = TokenLedger(store)
    with viewer(view_folder) as url:
        page.goto(url)
        rows = page.locator("#runs tbody tr")
        rows.first.wait_for()
        assert rows.count() == RUNS  # one page of 50 holds them all
        assert page.locator("#range").inner_text() == f"1–{RUNS} of {RUNS} runs"
        shown = {rows.nth(i).get_attribute("data-run-id") for i in range(rows.count())}
        assert shown == set(records)
        _shot(page, "runs")

        page.select_option("#filter-topology", "best_of_8+verifier")
        range_is = "document.querySelector('#range').textContent.endsWith('of {} runs')"
        page.wait_for_function(range_is.format(12))
        page.select_option("#filter-budget", "1600")
        page.wait_for_function(range_is.format(6))
        cells = page.locator("#runs tbody tr td:first-child").all_inner_texts()
        assert cells == ["best_of_8+verifier"] * 6
        page.click("th[data-sort=tokens_total]")
        page.wait_for_function("document.querySelector('th.sorted')?.dataset.sort === "
                               "'tokens_total'")
        _shot(page, "runs-filtered")

        rows.first.click()
        page.locator("#trace li.attempt").first.wait_for()
        run_id = page.url.rsplit("/", 1)[-1]
        totals = ledger.totals(run_id=run_id)
        attempts = page.locator("#trace li.attempt")
        assert attempts.count() == totals.calls == 8 + 0  # eight samples, checked by verifier
        shown_tokens = [int(t) for t in attempts.evaluate_all(
            "els => els.map(e => e.dataset.totalTokens)")]
        assert sum(shown_tokens) == totals.total_tokens
        assert page.locator("#totals").get_attribute("data-total-tokens") == \
            str(totals.total_tokens)
        assert page.locator("#trace li.node[data-node=sample]").count() == 8
        assert "Answer:" in page.locator("#trace pre.reply").first.inner_text()
        assert page.locator("svg.budget path.spent").count() == 1
        assert records[run_id].topology == "best_of_8+verifier"
        shot = _shot(page, "run")
        docs = os.environ.get("STRATAGEM_DOCS_SCREENSHOT")
        if docs:
            page.screenshot(path=docs, full_page=False)
            print(f"screenshot for the README: {docs}")
        assert shot.stat().st_size > 10_000


def test_a_run_with_transfers_marks_them(view_folder: Path, viewer: Callable[[Path], Any],
                                         page: Any) -> None:
    with ResultsStore(view_folder / "results.sqlite") as store:
        moved = next(r for r in store.records() if r.transfers)
    with viewer(view_folder) as url:
        page.goto(f"{url}#/run/{moved.run_id}")
        page.locator("#trace li.attempt").first.wait_for()
        assert page.locator("svg.budget line.transfer").count() == moved.transfers
        assert page.locator("#transfers li").count() == moved.transfers
        _shot(page, "run-transfers")


def test_live_mode_shows_a_new_run_without_a_reload(view_folder: Path, tmp_path: Path,
                                                    viewer: Callable[[Path], Any],
                                                    page: Any) -> None:
    live = tmp_path / "live"
    shutil.copytree(view_folder, live)
    with viewer(live) as url:
        page.goto(f"{url}?poll=200#/?sort=finished_at&desc=1")
        page.locator("#runs tbody tr").first.wait_for()
        page.evaluate("window.__marker = 'same page'")
        with ResultsStore(live / "results.sqlite") as store:
            first = store.records()[0]
            store.add(RunRecord.model_validate({**first.model_dump(), "run_id": "live-run-1",
                                                "finished_at": "2100-01-01T00:00:00Z"}))
        page.locator("#runs tbody tr[data-run-id=live-run-1]").wait_for(timeout=15_000)
        assert page.locator("#runs tbody tr").first.get_attribute("data-run-id") == \
            "live-run-1"
        assert page.evaluate("window.__marker") == "same page"  # no reload happened
        assert page.locator("#range").inner_text() == f"1–{RUNS + 1} of {RUNS + 1} runs"


def test_the_report_is_legible(view_folder: Path, viewer: Callable[[Path], Any],
                               page: Any) -> None:
    with viewer(view_folder) as url:
        page.goto(f"{url}#/report")
        frame = page.frame_locator("iframe.report")
        frame.locator("h1").wait_for(timeout=120_000)
        assert "SIMULATED" in frame.locator("body").inner_text()
        _shot(page, "report-in-viewer")
        page.goto(f"{url}report/")
        figure = page.locator("figure", has_text="Mean billed tokens per run by role")
        figure.wait_for()
        figure.scroll_into_view_if_needed()
        path = SHOTS / "spend-per-role.png"
        SHOTS.mkdir(exist_ok=True)
        figure.screenshot(path=str(path))
        print(f"screenshot: {path}")
        size = figure.locator("img").evaluate("i => [i.naturalWidth, i.naturalHeight]")
        assert size[0] > 0 and size[1] > 0
