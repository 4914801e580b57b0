"""The compare page in a real browser: Debian's chromium driven by playwright against a real
`tuneserve serve` of the embedded model (base) and the trained demo (tuned, q8_0), with the
report of a real before/after eval of the demo's suites through that same server.

Screenshots go to test-artifacts/browser/ ($TUNESERVE_TEST_ARTIFACTS overrides the folder).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import httpx
import pytest

from serve.engines import free_port
from toolkit.core.modes import SAMPLING

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
# Headless, and quiet on the network: without the background-networking flags Chromium keeps
# calling home, which a closed network refuses.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
KEY = "page-test-key"
EVAL_DEADLINE = 900  # seconds
ARTIFACTS = Path(os.environ.get("TUNESERVE_TEST_ARTIFACTS", REPO / "test-artifacts")) / "browser"
WIDE = {"width": 1400, "height": 900}
PHONE = {"width": 390, "height": 844}


@dataclass
class PageServer:
    url: str  # the page, e.g. http://127.0.0.1:PORT/
    report: dict  # the report.json the page shows
    run: Path  # the training run it belongs to


@pytest.fixture(scope="module")
def page_server(
    exported_demo, base_gguf, demo_models_dir, tmp_path_factory
) -> Iterator[PageServer]:
    """One `tuneserve serve base=... tuned=... --api-key K --report RUN/eval` for the module,
    and a real eval of the demo's heldout and guard suites through it into that folder."""
    from toolkit.export.run_export import run_gguf

    run, _ = exported_demo
    report_dir = run / "eval"
    report_dir.mkdir(exist_ok=True)
    port = free_port()
    log = tmp_path_factory.mktemp("page-serve") / "serve.log"
    command = [sys.executable, "-m", "toolkit.cli", "serve", f"base={base_gguf}"]
    command += [f"tuned={run_gguf(run, 'q8_0')}", "--port", str(port), "--api-key", KEY]
    command += ["--report", str(report_dir)]
    env = {**os.environ, "TUNESERVE_MODELS_DIR": str(demo_models_dir)}
    with log.open("w") as output:
        server = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        root = f"http://127.0.0.1:{port}"
        wait_until_healthy(server, root, log)
        previous = os.environ.get("TUNESERVE_MODELS_DIR")
        os.environ["TUNESERVE_MODELS_DIR"] = str(demo_models_dir)  # where the heldout split is
        try:
            evaluate_within(
                EVAL_DEADLINE,
                log,
                demo_models_dir / "logs" / "serve",
                suites=["heldout", str(guard_slice(tmp_path_factory.mktemp("suites")))],
                models=["base", "tuned"],
                base_url=f"{root}/v1",
                api_key=KEY,
                run=run.name,
                report_dir=report_dir,
                concurrency=2,
                max_tokens=24,
                timeout=60,
                progress=False,
            )
        finally:
            if previous is not None:
                os.environ["TUNESERVE_MODELS_DIR"] = previous
        report = json.loads((report_dir / "report.json").read_text())
        yield PageServer(f"{root}/", report, run)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def guard_slice(folder: Path) -> Path:
    """Every fourth item of the built-in guard suite (75 of 300, every scorer kept), saved as
    guard.jsonl so the report still names the suite `guard`: the page needs a guard with flips,
    not the whole suite's statistical power."""
    from evals.suite import BUILTIN_DIR

    lines = (BUILTIN_DIR / "guard.jsonl").read_text().splitlines()
    path = folder / "guard.jsonl"
    path.write_text("\n".join(lines[::4]) + "\n")
    return path


def evaluate_within(deadline: float, serve_log: Path, engine_logs: Path, **kwargs) -> None:
    """`run_eval(**kwargs)`, failing with what the server and the machine were doing when it
    is not done within `deadline` seconds (locally it takes ~1 min; a hang must not wait for
    pytest-timeout, whose stack dump does not say what the engines were up to)."""
    from evals.api import run_eval

    answered = [0, 0]
    failure: list[BaseException] = []

    def progress(done: int, total: int) -> None:
        answered[:] = [done, total]

    def work() -> None:
        try:
            run_eval(on_answer=progress, **kwargs)
        except BaseException as exc:  # handed to the test's thread
            failure.append(exc)

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(deadline)
    if worker.is_alive():
        top = subprocess.run(
            ["ps", "-eo", "pid,ppid,pcpu,rss,etime,args", "--sort=-pcpu"],
            capture_output=True,
            text=True,
        ).stdout.splitlines()[:12]
        pytest.fail(
            f"the eval answered {answered[0]} of {answered[1]} in {deadline:g} s; "
            f"load {os.getloadavg()}\n"
            + "\n".join(line[:200] for line in top)
            + f"\n--- serve log ---\n{serve_log.read_text()[-3000:]}"
            + "".join(
                f"\n--- {engine_log.name} ---\n{engine_log.read_text(errors='replace')[-3000:]}"
                for engine_log in sorted(engine_logs.glob("*.log"))
            )
        )
    if failure:
        raise failure[0]


def wait_until_healthy(server: subprocess.Popen, root: str, log: Path) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"tuneserve serve exited with {server.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{root}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"tuneserve serve was not ready in 300 s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def browser(page_server) -> Iterator[object]:
    """Debian's chromium (installed by `make install`), headless, a fresh profile per launch.

    After `page_server`: playwright's sync API runs an event loop, and the eval needs its own.
    """
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: `make install` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS
        )
        yield launched
        launched.close()


class Tab:
    """A page in its own browser context, recording the errors the page's scripts hit."""

    def __init__(self, browser, url: str, viewport: dict) -> None:  # noqa: ANN001
        self.context = browser.new_context(viewport=viewport)
        self.page = self.context.new_page()
        self.page.set_default_timeout(60_000)
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on(
            "console",
            lambda message: self.errors.append(message.text) if message.type == "error" else None,
        )
        self.page.goto(url)

    def sign_in(self, key: str = KEY) -> None:
        self.page.fill("#key-input", key)
        self.page.keyboard.press("Enter")

    def script_errors(self) -> list[str]:
        """Errors other than the browser's own log line for a refused (401) request."""
        return [error for error in self.errors if "401" not in error]


@pytest.fixture
def tab(browser, page_server) -> Iterator[Tab]:
    opened = Tab(browser, page_server.url, WIDE)
    opened.sign_in()
    opened.page.wait_for_selector("article.column[data-model=tuned]")
    yield opened
    assert opened.script_errors() == []
    opened.context.close()


def screenshot(page, name: str, height: int | None = None) -> None:  # noqa: ANN001
    """The whole page, or its top `height` pixels."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    clip = {"x": 0, "y": 0, "width": WIDE["width"], "height": height} if height else None
    page.screenshot(path=str(ARTIFACTS / name), full_page=True, clip=clip)


def ask(tab: Tab, prompt: str) -> None:
    """Type a prompt and press Enter, as a user does; wait until every column has answered."""
    tab.page.fill("#prompt", prompt)
    tab.page.focus("#prompt")
    tab.page.keyboard.press("Enter")
    # (a function, not an expression: the page's CSP forbids the eval an expression needs)
    tab.page.wait_for_function(
        "() => [...document.querySelectorAll('article.column')]"
        ".every(c => c.dataset.state && c.dataset.state !== 'streaming')",
        timeout=120_000,
    )


def column(tab: Tab, model: str):  # noqa: ANN201
    return tab.page.locator(f"article.column[data-model={model}]")


def test_a_wrong_key_is_refused_and_the_right_one_opens_the_page(browser, page_server):
    tab = Tab(browser, page_server.url, WIDE)
    tab.page.wait_for_selector("#key-form:not([hidden])")
    tab.sign_in("not-the-key")
    refusal = tab.page.locator("#key-message")
    tab.page.wait_for_function("() => document.querySelector('#key-message').textContent !== ''")
    assert "Refused" in refusal.inner_text() and "401" in refusal.inner_text()
    assert tab.page.locator("article.column").count() == 0
    assert tab.page.is_hidden("#view-compare")
    tab.sign_in()
    tab.page.wait_for_selector("article.column[data-model=tuned]")
    models = tab.page.locator("article.column h3").all_inner_texts()
    assert models == ["base", "tuned"]  # the served names; not the :thinking/:chat aliases
    assert tab.page.is_hidden("#key-form")
    assert tab.script_errors() == []
    tab.context.close()


def test_the_page_data_refuses_a_request_without_the_key(page_server):
    for path in ("page/api/report", "page/api/run"):
        assert httpx.get(page_server.url + path).status_code == 401
        wrong = httpx.get(page_server.url + path, headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"


def test_a_prompt_streams_both_answers_side_by_side_and_the_conversation_goes_on(tab):
    tab.page.fill("#max-tokens", "40")
    ask(tab, "What is the capital of France?")
    for model in ("base", "tuned"):
        answer = column(tab, model)
        assert answer.get_attribute("data-state") == "done"
        assert answer.locator(".answer").inner_text().strip()
        # streamed: the answer arrived in several pieces, not one block
        assert int(answer.get_attribute("data-chunks")) > 1
    first_answer = column(tab, "tuned").locator(".answer").first.inner_text()
    ask(tab, "And of Italy?")
    assert column(tab, "tuned").locator("li.turn").count() == 2
    screenshot(tab.page, "compare.png")
    # the second request carried the conversation: the copied request holds both turns
    column(tab, "tuned").get_by_role("button", name="Copy as curl").click()
    copied = json.loads(
        re.search(r"-d '(.*)'$", tab.page.input_value("#snippet-text"), re.S).group(1)
    )
    assert [m["role"] for m in copied["messages"]] == ["user", "assistant", "user"]
    assert copied["messages"][1]["content"] == first_answer
    assert copied["messages"][2]["content"] == "And of Italy?"


def test_the_mode_switch_changes_the_sampling_sent_and_shown(tab):
    tab.page.fill("#max-tokens", "8")
    shown = {}
    for mode in ("chat", "thinking"):
        tab.page.check(f"input[name=mode][value={mode}]")
        ask(tab, "Say hello.")
        for model in ("base", "tuned"):
            shown[(mode, model)] = column(tab, model).locator(".sampling").inner_text()
    for model in ("base", "tuned"):
        # the x-tuneserve-mode / x-tuneserve-sampling headers of the answers, from toolkit/core/modes.py
        assert shown[("chat", model)] == f"chat mode · {SAMPLING['chat'].header()}"
        assert shown[("thinking", model)] == f"thinking mode · {SAMPLING['thinking'].header()}"
    assert shown[("chat", "tuned")] != shown[("thinking", "tuned")]


def test_the_copied_curl_and_openai_snippets_run_as_they_are(tab, page_server):
    tab.page.fill("#max-tokens", "8")
    tab.page.check("input[name=mode][value=chat]")
    ask(tab, "Name a colour.")
    env = {**os.environ, "TUNESERVE_API_KEY": KEY}
    snippets = {}
    for kind in ("curl", "openai"):
        column(tab, "tuned").get_by_role("button", name=f"Copy as {kind}").click()
        snippets[kind] = tab.page.input_value("#snippet-text")
        assert KEY not in snippets[kind]  # the key stays out of what is copied
        tab.page.keyboard.press("Escape")
    curl = subprocess.run(
        ["bash", "-c", snippets["curl"]], env=env, capture_output=True, text=True, timeout=60
    )
    reply = json.loads(curl.stdout)
    assert reply["object"] == "chat.completion" and reply["model"] == "tuned"
    assert isinstance(reply["choices"][0]["message"]["content"], str)
    python = subprocess.run(
        [sys.executable, "-c", snippets["openai"]],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert python.returncode == 0, python.stderr  # the openai client raises on any failure


def fixed(value: float) -> str:
    """JavaScript's `value.toFixed(3)` for values >= 0 (an exact tie rounds up, not to even)."""
    return str(Decimal(value).quantize(Decimal("0.001"), ROUND_HALF_UP))


def flips(report: dict, direction: str | None = None, suite: str | None = None) -> list[str]:
    """The items the page must list: base and tuned scored differently (computed here from
    report.json, independently of the page's script)."""
    found = []
    for item in report["items"]:
        before, after = item["answers"]["base"]["score"], item["answers"]["tuned"]["score"]
        if before == after or (suite and item["suite"] != suite):
            continue
        if direction in (None, "gained" if after > before else "lost"):
            found.append(f"{item['suite']}/{item['id']}")
    return found


def listed(tab: Tab) -> list[str]:
    cards = tab.page.locator("li.flip")
    return [
        f"{cards.nth(i).get_attribute('data-suite')}/{cards.nth(i).get_attribute('data-item')}"
        for i in range(cards.count())
    ]


def test_the_report_lists_the_flipped_items_of_the_demo_run(tab, page_server):
    report = page_server.report
    assert flips(report, "gained", "heldout"), "the tuned demo should win held-out items"
    tab.page.click("nav >> text=Eval report")
    tab.page.wait_for_selector("li.flip")
    assert listed(tab) == flips(report)
    # each suite's scores with their intervals and the paired test
    summary = tab.page.inner_text("#report-summary")
    for row in report["models"]:
        assert f"[{fixed(row['ci'][0])}, {fixed(row['ci'][1])}]" in summary
    for pair in report["comparisons"]:
        assert pair["test"] in summary and f"losses {pair['losses']}" in summary
    # a flipped item shows the expected answer and both models' answers
    key = flips(report, "gained", "heldout")[0]
    item = next(i for i in report["items"] if f"{i['suite']}/{i['id']}" == key)
    card = tab.page.locator(f"li.flip[data-suite=heldout][data-item={item['id']}]").inner_text()
    assert str(item["expected"]) in card
    for model in ("base", "tuned"):
        assert item["answers"][model]["output"].strip() in card
    tab.page.select_option("#flip-suite", "heldout")
    tab.page.select_option("#flip-direction", "gained")
    assert listed(tab) == flips(report, "gained", "heldout")
    tab.page.select_option("#flip-suite", "guard")
    tab.page.select_option("#flip-direction", "lost")
    assert listed(tab) == flips(report, "lost", "guard")
    screenshot(tab.page, "flipped-items.png", height=1300)  # what the tuning cost
    scorers = {i["scorer"] for i in report["items"] if i["suite"] == "guard"}
    scorer = sorted(scorers)[0]
    tab.page.select_option("#flip-scorer", scorer)
    expected = [
        key
        for key in flips(report, "lost", "guard")
        if next(i for i in report["items"] if f"{i['suite']}/{i['id']}" == key)["scorer"] == scorer
    ]
    assert listed(tab) == expected
    tab.page.select_option("#flip-scorer", "")
    tab.page.select_option("#flip-suite", "")
    tab.page.select_option("#flip-direction", "all")
    assert listed(tab) == flips(report)
    screenshot(tab.page, "flipped-items-all.png")


def test_the_training_run_shows_its_loss_curve_and_recipe(tab, page_server):
    tab.page.goto(page_server.url + "#run")
    tab.page.wait_for_selector("#loss-figure:not([hidden])")
    lines = (page_server.run / "metrics.jsonl").read_text().splitlines()
    rows = [row for row in map(json.loads, lines) if "loss" in row and "step" in row]
    points = tab.page.get_attribute("polyline.line.loss", "points").split()
    assert len(points) == len(rows) == 30
    assert f"{fixed(rows[-1]['loss'])} at step 30" in tab.page.inner_text("#loss-caption")
    assert "max_steps: 30" in tab.page.inner_text("#recipe")


def test_the_keyboard_reaches_every_view(tab):
    assert tab.page.evaluate("document.activeElement.id") == "prompt"  # ready to type
    for _ in range(15):  # back from the prompt, past the controls, to the report link
        tab.page.keyboard.press("Shift+Tab")
        if tab.page.evaluate("document.activeElement.textContent") == "Eval report":
            break
    else:
        pytest.fail("Shift+Tab never reached the Eval report link")
    tab.page.keyboard.press("Enter")
    tab.page.wait_for_selector("#view-report:not([hidden])")
    assert tab.page.evaluate("document.activeElement.id") == "report-title"
    assert tab.page.is_hidden("#view-compare")


def test_the_page_fits_a_phone(browser, page_server):
    tab = Tab(browser, page_server.url, PHONE)
    tab.sign_in()
    tab.page.wait_for_selector("article.column[data-model=tuned]")
    tab.page.fill("#max-tokens", "16")
    ask(tab, "Opposite of hot?")
    overflow = tab.page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0  # nothing sticks out sideways
    base, tuned = (column(tab, m).bounding_box() for m in ("base", "tuned"))
    assert tuned["y"] >= base["y"] + base["height"]  # the answers stack, one under the other
    assert base["width"] > PHONE["width"] * 0.8
    screenshot(tab.page, "compare-phone.png")
    tab.page.goto(page_server.url + "#report")
    tab.page.wait_for_selector("li.flip")
    assert tab.page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 0
    assert tab.script_errors() == []
    tab.context.close()
