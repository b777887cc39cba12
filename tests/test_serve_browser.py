"""The page of `macsql serve` in a real browser: Debian's headless Chromium driven by Playwright, against a
server on a free loopback port with a scripted model. Skips when the chromium binary is absent.

Set MACSQL_SCREENSHOT=path.png to keep a screenshot of the page after the follow-up, and
MACSQL_SHOTS=folder to take the screenshots of an answer, an unanswerable question and a big result at
1280x900 and 390x844 (test_screenshots)."""

import csv
import io
import os
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest

from macsql.backends.base import ScriptedLLM
from macsql.demo import DEMO_QUESTIONS, DEMO_SQL, build
from macsql.pipeline import Pipeline
from macsql.sqlexec import execute
from tests.conftest import demo_reply, make_db

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
WIDE, PHONE = {"width": 1280, "height": 900}, {"width": 390, "height": 844}
# read at import: conftest clears MACSQL_* variables for each test
SCREENSHOT, SHOTS = os.environ.get("MACSQL_SCREENSHOT"), os.environ.get("MACSQL_SHOTS")
PER_COUNTRY = "SELECT country, COUNT(*) AS customers FROM customers GROUP BY country ORDER BY country"
SPAIN = "SELECT COUNT(*) AS customers FROM customers WHERE country = 'Spain'"

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
    """start(llm, databases) -> base URL of a server running in this process (its app as `start.app`)."""
    from macsql.serve.app import create_app
    from macsql.serve.server import serving_in_thread

    stack = []

    def start(llm, databases, **kwargs):
        kwargs.setdefault("store", tmp_path / "conversations.sqlite")
        start.app = create_app(Pipeline(llm, candidates=1), databases, **kwargs)
        cm = serving_in_thread(start.app)
        stack.append(cm)
        return cm.__enter__()

    yield start
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


@pytest.fixture
def demo_db(tmp_path):
    return build(DEMO_SQL, tmp_path / "shop.sqlite")


def open_page(browser, url, viewport=None, **context):
    # bypass_csp: Playwright's waits evaluate strings, which the page's CSP forbids; without the CSP the
    # markup test below is also stricter (only textContent keeps the data inert, not the policy)
    page = browser.new_page(viewport=viewport or {"width": 1280, "height": 1100}, bypass_csp=True, **context)
    problems = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.goto(url)
    return page, problems


def table_rows(page):
    return page.eval_on_selector_all("#result tbody tr",
                                     "trs => trs.map(tr => [...tr.cells].map(td => td.textContent))")


def ask(page, question):
    page.fill("#question", question)
    page.click("#ask")
    page.wait_for_function("q => document.querySelector('#answer-question').textContent === q && "
                           "!document.querySelector('#answer').hidden && "
                           "(document.querySelector('#result-box').hidden || "
                           " document.querySelector('#page-info').textContent !== '')", arg=question)


def wait_schema(page, text="CREATE TABLE"):
    page.wait_for_function("t => document.querySelector('#schema').textContent.includes(t)", arg=text)


def test_ask_edit_rerun_and_follow_up_in_a_browser(browser, served, demo_db):
    db = demo_db
    url = served(ScriptedLLM(demo_reply), {"demo": db}, examples={"demo": list(DEMO_QUESTIONS)})
    page, problems = open_page(browser, url)
    wait_schema(page, "CREATE TABLE customers")
    assert page.eval_on_selector_all("#db option", "os => os.map(o => o.value)") == ["demo"]
    assert page.locator("#examples button").count() == len(DEMO_QUESTIONS)

    # the answer first: its summary, the table and a bar chart; the steps streamed in, folded away
    ask(page, "How many customers live in each country?")
    assert page.text_content("#summary").startswith(f"{len(rows_of(db, PER_COUNTRY))} rows; the first: country = ")
    steps = page.locator("#steps li strong").all_text_contents()
    assert {"schema", "decomposer", "execute"} <= set(steps)
    assert page.evaluate("document.querySelector('#steps-box').open") is False
    assert page.input_value("#sql") == PER_COUNTRY
    assert page.locator("#result thead th").all_text_contents() == ["country", "customers"]
    assert table_rows(page) == rows_of(db, PER_COUNTRY)
    page.wait_for_selector("#chart-box:not([hidden])")
    assert page.locator("#chart rect.bar").count() == len(rows_of(db, PER_COUNTRY))
    assert page.text_content("#stats").startswith("1 model call · ")
    assert page.text_content("#answer-label") == "Question 1 of a new conversation"
    # the answer sits near the top of the page, above the SQL
    top = page.evaluate("document.querySelector('#summary').getBoundingClientRect().top")
    assert top < page.evaluate("document.querySelector('#sql').getBoundingClientRect().top") and top < 450

    # a result paged and sorted on the server: 40 orders, 25 rows a page
    page.fill("#sql", "SELECT order_id, status FROM orders ORDER BY order_id")
    page.click("#run")
    page.wait_for_function("document.querySelector('#run-status').textContent.startsWith('ran in')")
    page.wait_for_function("document.querySelector('#page-info').textContent === 'page 1 of 2'")
    assert len(table_rows(page)) == 25 and page.is_hidden("#chart-box")  # ids are no quantity
    page.click("#next")
    page.wait_for_function("document.querySelector('#page-info').textContent === 'page 2 of 2'")
    assert table_rows(page)[0][0] == "26"
    page.click("#result thead th:first-child button")  # ascending, from page 1
    page.click("#result thead th:first-child button")  # descending
    page.wait_for_function("document.querySelector('#result thead th').getAttribute('aria-sort') === 'descending'"
                           " && document.querySelector('#result tbody td').textContent === '40'")
    assert page.text_content("#page-info") == "page 1 of 2"
    page.select_option("#page-size", "50")
    page.wait_for_function("document.querySelector('#page-info').textContent === 'page 1 of 1'")
    assert [r[0] for r in table_rows(page)] == [str(n) for n in range(40, 0, -1)]

    # edit the SQL and run it again
    page.fill("#sql", SPAIN)
    page.click("#run")
    page.wait_for_function("document.querySelector('#result-info').textContent === 'rows 1–1 of 1'")
    assert table_rows(page) == rows_of(db, SPAIN) and page.is_hidden("#chart-box")
    assert page.text_content("#summary") == f"customers: {rows_of(db, SPAIN)[0][0]}"

    # a follow-up from the same box builds on the edited query, and is shown as the follow-up it is
    assert page.text_content("#context") == "Follow-up to: How many customers live in each country?"
    ask(page, "and only those in Madrid?")
    madrid = "SELECT COUNT(*) FROM customers WHERE country = 'Spain' AND city = 'Madrid'"
    assert "Madrid" in page.input_value("#sql") and table_rows(page) == rows_of(db, madrid)
    assert page.text_content("#answer-label") == "Follow-up, question 2 of this conversation"
    assert page.locator("#turns li .q").all_text_contents() == ["How many customers live in each country?",
                                                                "and only those in Madrid?"]
    conversation = page.evaluate("new URLSearchParams(location.hash.slice(1)).get('c')")
    saved = httpx.get(f"{url}/api/conversations/{conversation}").json()
    assert [t["sql"] for t in saved["turns"]][0] == SPAIN  # the edit replaced the first SQL
    if SCREENSHOT:
        page.screenshot(path=SCREENSHOT, full_page=True)

    # "New conversation" is the one way to leave it
    page.click("#new-conversation")
    assert page.text_content("#context") == "New conversation" and page.is_hidden("#answer")

    # a hostile edit is refused with the reason, and the page keeps working
    ask(page, "How many customers live in Spain?")
    page.fill("#sql", "DROP TABLE customers")
    page.click("#run")
    page.wait_for_function("document.querySelector('#run-status').textContent === 'refused'")
    assert "only SELECT/WITH queries are allowed" in page.text_content("#error")
    assert rows_of(db, "SELECT COUNT(*) FROM customers") == [["18"]]
    # the browser logs the refused request's 400; nothing else went wrong on the page
    assert problems == ["Failed to load resource: the server responded with a status of 400 (Bad Request)"]


PETS = """CREATE TABLE pets (pet_id INTEGER PRIMARY KEY, name TEXT, kind TEXT);
INSERT INTO pets VALUES (1, 'Rex', 'dog'), (2, 'Tom', 'cat'), (3, 'Kit', 'cat');"""


def test_switching_the_database_leaves_nothing_of_the_old_answer(browser, served, demo_db, tmp_path):
    pets = make_db(tmp_path / "pets.sqlite", PETS)
    url = served(ScriptedLLM(demo_reply), {"demo": demo_db, "pets": pets})
    page, problems = open_page(browser, url)
    wait_schema(page, "CREATE TABLE customers")
    ask(page, "How many customers live in each country?")
    page.select_option("#db", "pets")
    wait_schema(page, "CREATE TABLE pets")
    assert page.is_hidden("#answer") and page.is_hidden("#steps-box") and page.is_hidden("#chart-box")
    assert page.input_value("#sql") == "" and table_rows(page) == []
    assert page.locator("#steps li").count() == 0 and page.locator("#turns li").count() == 0
    assert page.text_content("#context") == "New conversation" and page.evaluate("location.hash") == ""
    # the database's own history: the demo's conversation is not listed under pets
    assert page.locator("#history li").count() == 0
    # back on the demo, a new question starts a new conversation about it
    page.select_option("#db", "demo")
    wait_schema(page, "CREATE TABLE customers")
    page.wait_for_function("document.querySelectorAll('#history li').length === 1")
    assert problems == []


def test_reload_keeps_the_history_and_the_answers_link(browser, served, demo_db):
    url = served(ScriptedLLM(demo_reply), {"demo": demo_db})
    page, problems = open_page(browser, url)
    wait_schema(page)
    ask(page, "How many customers live in each country?")
    link = page.evaluate("location.hash")
    summary = page.text_content("#summary")
    assert link.startswith("#c=") and link.endswith("&t=0")
    page.reload()
    page.wait_for_function("q => document.querySelector('#answer-question').textContent === q && "
                           "document.querySelectorAll('#result tbody tr').length > 0",
                           arg="How many customers live in each country?")
    assert page.text_content("#summary") == summary and page.input_value("#sql") == PER_COUNTRY
    assert table_rows(page) == rows_of(demo_db, PER_COUNTRY)
    assert page.text_content("#context") == "Follow-up to: How many customers live in each country?"
    page.wait_for_function("document.querySelectorAll('#history li').length === 1")
    assert page.text_content("#history li .q") == "How many customers live in each country?"
    # the same link in a fresh page opens the same answer
    other, _ = open_page(browser, url + "/" + link)
    other.wait_for_function("document.querySelectorAll('#result tbody tr').length > 0")
    assert other.text_content("#summary") == summary
    assert problems == []


def test_stop_cancels_the_question_and_the_next_one_works(browser, served, demo_db):
    gate = threading.Event()

    def reply(messages, agent):
        gate.wait(20)
        return demo_reply(messages, agent)

    url = served(ScriptedLLM(reply), {"demo": demo_db})
    page, problems = open_page(browser, url)
    wait_schema(page)
    page.fill("#question", "How many customers live in Spain?")
    page.focus("#question")
    page.keyboard.press("Control+Enter")  # Ctrl+Enter asks
    page.wait_for_selector("#stop:not([hidden])")
    page.wait_for_function("document.querySelector('#running').textContent.startsWith('Decomposer')")
    page.wait_for_function("document.querySelector('#elapsed').textContent.endsWith(' s')")
    page.click("#stop")
    page.wait_for_function("document.querySelector('#running').textContent === 'Stopped.'")
    assert page.is_hidden("#stop") and page.is_enabled("#ask") and page.is_hidden("#answer")
    gate.set()  # the model call in flight ends; the server stops the question at that step
    server = served.app.state.server
    ask(page, "How many customers live in each country?")
    assert table_rows(page) == rows_of(demo_db, PER_COUNTRY)
    assert page.text_content("#answer-label") == "Question 1 of a new conversation"
    deadline = time.monotonic() + 10
    while server.counters()["questions_running"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.counters()["questions_running"] == 0
    assert [c["title"] for c in server.store.recent(["demo"])] == ["How many customers live in each country?"]
    assert problems == []


def test_csv_download_equals_the_executors_rows(browser, served, demo_db):
    # under the page's own CSP (no bypass): only selector waits, which evaluate no strings in the page
    url = served(ScriptedLLM(demo_reply), {"demo": demo_db})
    page = browser.new_page(viewport=WIDE, accept_downloads=True)
    problems = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.goto(url)
    page.wait_for_selector("#schema:has-text('CREATE TABLE customers')", state="attached")
    page.fill("#question", "How many customers live in each country?")
    page.click("#ask")
    page.wait_for_selector("#page-info:has-text('page 1 of 1')")
    assert page.is_visible("#chart-box")
    sql = "SELECT customer_id, first_name, city, signup_date FROM customers"
    page.fill("#sql", sql)
    page.click("#run")
    page.wait_for_selector("#run-status:has-text('ran in')")
    with page.expect_download() as info:
        page.click("#csv")
    download = info.value
    assert download.suggested_filename == "demo-result.csv"
    table = list(csv.reader(io.StringIO(Path(download.path()).read_text())))
    result = execute(demo_db, sql)
    assert table[0] == list(result.columns)
    assert table[1:] == [["" if v is None else str(v) for v in row] for row in result.rows]
    page.click("#copy-sql")
    page.wait_for_selector("#run-status:has-text('SQL copied')")
    assert problems == []  # no CSP violation, no script error


LONG = "x" * 300


def test_a_phone_sized_page_does_not_scroll_sideways(browser, served, demo_db):
    url = served(ScriptedLLM(demo_reply), {"demo": demo_db}, examples={"demo": list(DEMO_QUESTIONS)})
    page, problems = open_page(browser, url, viewport=PHONE)
    wait_schema(page)
    ask(page, "How many customers live in each country?")
    page.fill("#sql", f"SELECT o.*, c.*, '{LONG}' AS note FROM orders o JOIN customers c USING (customer_id)")
    page.click("#run")
    page.wait_for_function("document.querySelector('#run-status').textContent.startsWith('ran in')")
    page.evaluate("document.querySelector('#steps-box').open = true")
    assert page.evaluate("document.documentElement.scrollWidth") == page.evaluate("window.innerWidth") == 390
    assert problems == []


def test_the_api_docs_render_with_the_network_blocked(browser, served, demo_db):
    url = served(ScriptedLLM(demo_reply), {"demo": demo_db})
    page = browser.new_page(bypass_csp=True)
    outside = []

    def only_loopback(route):
        if route.request.url.startswith(url):
            return route.continue_()
        outside.append(route.request.url)
        return route.abort()

    page.route("**/*", only_loopback)
    page.goto(url + "/docs")
    page.wait_for_function("document.querySelectorAll('.endpoint').length > 5")
    text = page.text_content("#endpoints")
    assert "/api/ask/stream" in text and "/api/download" in text and "question_id" in text
    assert outside == []


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
    ask(page, "Show the notes <img src=z onerror=\"window.pwned = 4\">")
    assert [r[0] for r in table_rows(page)] == values
    assert page.text_content("#subq li") == "<img src=y onerror=\"window.pwned = 3\">"
    assert page.text_content("#summary").startswith("3 rows; the first: body = <script>")
    # nothing was parsed as markup: no element came from the data, no handler ran
    page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
    assert page.evaluate("document.querySelectorAll('main script, main img, main b, main i, aside img').length") == 0
    assert page.evaluate("window.pwned === undefined")
    assert problems == []


# --------------------------------------------------------------------------------- screenshots
UNANSWERABLE = "What is the total weight of the shipments?"


def screenshot_reply(messages, agent):
    question = messages[-1]["content"].rsplit("Question:", 1)[-1].lower()
    if "weight" in question:
        return "Final SQL:\n```sql\nSELECT SUM(weight) FROM orders\n```"
    if "every order" in question:
        return ("Final SQL:\n```sql\nSELECT o.order_id, o.order_date, o.status, c.first_name, c.last_name, "
                "c.city, c.country FROM orders o JOIN customers c USING (customer_id) ORDER BY o.order_id\n```")
    return demo_reply(messages, agent)


@pytest.mark.skipif(not SHOTS, reason="set MACSQL_SHOTS=folder to take the screenshots")
def test_screenshots(browser, served, demo_db):
    folder = Path(SHOTS)
    folder.mkdir(parents=True, exist_ok=True)
    url = served(ScriptedLLM(screenshot_reply), {"demo": demo_db}, examples={"demo": list(DEMO_QUESTIONS)})
    for name, viewport in (("1280x900", WIDE), ("390x844", PHONE)):
        for label, question in (("answer", "How many customers live in each country?"),
                                ("unanswerable", UNANSWERABLE), ("big-result", "Show every order with its customer")):
            page, problems = open_page(browser, url, viewport=viewport)
            wait_schema(page)
            ask(page, question)
            page.screenshot(path=str(folder / f"{label}-{name}.png"))
            page.close()
            assert problems == []
    page, problems = open_page(browser, url, viewport=WIDE, color_scheme="dark")
    wait_schema(page)
    ask(page, "How many customers live in each country?")
    page.screenshot(path=str(folder / "answer-1280x900-dark.png"))
    assert problems == []
