"""The page of `macsql serve` in a real browser: Debian's headless Chromium driven by Playwright, against a
server on a free loopback port with a scripted model. Skips when the chromium binary is absent.

Set MACSQL_SCREENSHOT=path.png to keep a screenshot of the page after the follow-up."""

import os
import sqlite3
from pathlib import Path

import pytest

from macsql.backends.base import ScriptedLLM
from macsql.demo import DEMO_QUESTIONS, DEMO_SQL, build
from macsql.pipeline import Pipeline
from tests.conftest import demo_reply, make_db

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found "
                                "(Debian: apt-get install -y chromium; .ci/run installs it)")


def rows_of(db, sql):
    conn = sqlite3.connect(db)
    try:
        return [[str(v) for v in row] for row in conn.execute(sql)]
    finally:
        conn.close()


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e \".[dev]\")")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        yield b
        b.close()


@pytest.fixture
def served(tmp_path):
    """start(llm, databases) -> base URL of a server running in this process."""
    from macsql.serve.app import create_app
    from macsql.serve.server import serving_in_thread

    stack = []

    def start(llm, databases, **kwargs):
        cm = serving_in_thread(create_app(Pipeline(llm, candidates=1), databases, **kwargs))
        stack.append(cm)
        return cm.__enter__()

    yield start
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


def open_page(browser, url):
    # bypass_csp: Playwright's waits evaluate strings, which the page's CSP forbids; without the CSP the
    # markup test below is also stricter (only textContent keeps the data inert, not the policy)
    page = browser.new_page(viewport={"width": 1280, "height": 1100}, bypass_csp=True)
    problems = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.goto(url)
    return page, problems


def table_rows(page):
    return page.eval_on_selector_all("#result tbody tr",
                                     "trs => trs.map(tr => [...tr.cells].map(td => td.textContent))")


def test_ask_edit_rerun_and_follow_up_in_a_browser(browser, served, tmp_path):
    db = build(DEMO_SQL, tmp_path / "shop.sqlite")
    llm = ScriptedLLM(demo_reply)
    url = served(llm, {"demo": db}, examples={"demo": list(DEMO_QUESTIONS)})
    page, problems = open_page(browser, url)
    page.wait_for_function("document.querySelector('#schema').textContent.includes('CREATE TABLE customers')")
    assert page.eval_on_selector_all("#db option", "os => os.map(o => o.value)") == ["demo"]
    assert page.locator("#examples button").count() == len(DEMO_QUESTIONS)

    # ask: the steps stream in, then the SQL, the table and a bar chart (a label and a number column)
    page.fill("#question", "How many customers live in each country?")
    page.click("#ask")
    page.wait_for_selector("#answer:not([hidden])")
    steps = page.locator("#steps li strong").all_text_contents()
    assert {"schema", "decomposer", "execute"} <= set(steps)
    per_country = "SELECT country, COUNT(*) AS customers FROM customers GROUP BY country ORDER BY country"
    assert page.input_value("#sql") == per_country
    assert page.locator("#result thead th").all_text_contents() == ["country", "customers"]
    assert table_rows(page) == rows_of(db, per_country)
    assert page.is_visible("#chart-box") and page.locator("#chart rect.bar").count() == len(rows_of(db, per_country))
    assert page.text_content("#stats").startswith("1 model call · ")

    # a paged result: 40 orders, 20 rows a page
    page.fill("#sql", "SELECT order_id, status FROM orders ORDER BY order_id")
    page.click("#run")
    page.wait_for_function("document.querySelector('#run-status').textContent.startsWith('ran in')")
    assert page.text_content("#page-info") == "page 1 of 2" and len(table_rows(page)) == 20
    page.click("#next")
    assert page.text_content("#page-info") == "page 2 of 2" and table_rows(page)[0][0] == "21"

    # edit the SQL and run it again
    spain = "SELECT COUNT(*) AS customers FROM customers WHERE country = 'Spain'"
    page.fill("#sql", spain)
    page.click("#run")
    page.wait_for_function("document.querySelector('#result-info').textContent === '1 row'")
    assert table_rows(page) == rows_of(db, spain) and page.is_hidden("#chart-box")

    # a follow-up builds on the edited query (the scripted model answers it only with that context)
    page.fill("#followup", "and only those in Madrid?")
    page.click("#ask-followup")
    page.wait_for_function("document.querySelectorAll('#history li').length === 2")
    page.wait_for_function("document.querySelector('#sql').value.includes('Madrid')")
    assert table_rows(page) == rows_of(db, "SELECT COUNT(*) FROM customers WHERE country = 'Spain' AND city = 'Madrid'")
    history = page.locator("#history li .q").all_text_contents()
    assert history == ["How many customers live in each country?", "and only those in Madrid?"]
    assert page.locator("#history li code").first.text_content() == spain  # the edit replaced the first SQL
    shot = os.environ.get("MACSQL_SCREENSHOT") or str(tmp_path / "serve.png")
    page.screenshot(path=shot, full_page=True)
    assert Path(shot).stat().st_size > 10_000

    # a hostile edit is refused with the reason, and the page keeps working
    page.fill("#sql", "DROP TABLE customers")
    page.click("#run")
    page.wait_for_function("document.querySelector('#run-status').textContent === 'refused'")
    assert "only SELECT/WITH queries are allowed" in page.text_content("#error")
    assert rows_of(db, "SELECT COUNT(*) FROM customers") == [["18"]]
    # the browser logs the refused request's 400; nothing else went wrong on the page
    assert problems == ["Failed to load resource: the server responded with a status of 400 (Bad Request)"]


def test_markup_from_the_database_and_the_model_renders_as_text(browser, served, tmp_path):
    values = ["<script>window.pwned = 1</script>", "<img src=x onerror=\"window.pwned = 2\">", "<b>bold</b>"]
    db = make_db(tmp_path / "notes.sqlite", "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);" + "".join(
        f"INSERT INTO notes VALUES ({i}, '{v}');" for i, v in enumerate(values)))
    sql = "SELECT body, '<i>' || id || '</i>' AS tag FROM notes ORDER BY id"
    llm = ScriptedLLM(lambda m, a: f"Steps:\n1. <img src=y onerror=\"window.pwned = 3\">\nFinal SQL:\n```sql\n{sql}\n```")
    url = served(llm, {"<b>notes</b>": db})
    page, problems = open_page(browser, url)
    page.wait_for_function("document.querySelector('#db').options.length === 1")
    assert page.text_content("#db option") == "<b>notes</b>"
    page.fill("#question", "Show the notes")
    page.click("#ask")
    page.wait_for_selector("#answer:not([hidden])")
    assert [r[0] for r in table_rows(page)] == values
    assert page.text_content("#subq li") == "<img src=y onerror=\"window.pwned = 3\">"
    # nothing was parsed as markup: no element came from the data, no handler ran
    assert page.evaluate("document.querySelectorAll('main script, main img, main b, main i').length") == 0
    assert page.evaluate("window.pwned === undefined")
    assert problems == []
