"""JupyterLab in headless Chromium runs notebooks 03 and 07 (ci profile), all offline.

Checks what nbval cannot: no error in the page, 03's sliders redraw the heatmap, 07's playground
writes a poem, bertviz draws its SVG with the vendored scripts, and no news pop-up. Opt-in (it
takes minutes): set TINYLM_BROWSER_TEST=1, or CI. Screenshots go to pytest's temporary folder.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import nbformat
import pytest

from tinylm.viz import course_font_path

pytest.importorskip("selenium", reason="selenium drives the browser: pip install -e '.[dev]'")
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = ROOT / ".jupyter" / "lab" / "user-settings"  # what `make lab` uses
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1200",
    # Nothing but 127.0.0.1: names resolve nowhere, and any other address goes to a dead proxy.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    "--proxy-server=127.0.0.1:9",
    "--proxy-bypass-list=127.0.0.1",
)
RUN_SECONDS = 240  # one notebook's "run all"; well under 90 s in the ci profile on an idle machine
# JupyterLab 4.6 asks "Would you like to get notified about official Jupyter news?"
NEWS_PROMPT = "official Jupyter news"
CJK = re.compile(r"[\u4e00-\u9fff]")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not (os.environ.get("TINYLM_BROWSER_TEST") == "1" or os.environ.get("CI")),
        reason="browser test is opt-in (minutes): set TINYLM_BROWSER_TEST=1",
    ),
    pytest.mark.skipif(
        not (CHROMIUM and CHROMEDRIVER),
        reason="needs chromium and chromedriver (Debian: apt-get install chromium chromium-driver)",
    ),
]

# The open notebook, from JupyterLab 4's model: code cells not run yet, error outputs, kernel.
RUN_STATE = """
const panel = window.jupyterapp.shell.currentWidget, cells = panel.content.model.cells;
const state = {pending: 0, errors: [], kernel: panel.sessionContext.session?.kernel?.status};
for (let i = 0; i < cells.length; i++) {
  const cell = cells.get(i);
  if (cell.type !== 'code') continue;
  if (cell.executionCount === null) state.pending++;
  for (let j = 0; j < cell.outputs.length; j++) {
    const out = cell.outputs.get(j).toJSON();
    if (out.output_type === 'error') state.errors.push(`cell ${i}: ${out.ename}: ${out.evalue}`);
  }
}
return state;
"""
OPENED = """
const panel = window.jupyterapp?.shell.currentWidget;
return panel?.context?.path === arguments[0] && panel.sessionContext.session?.kernel?.status
  === 'idle';
"""
# The node of the first cell with this tag, or else whose source contains the text; in view.
CELL = """
const [tag, text] = arguments, notebook = window.jupyterapp.shell.currentWidget.content;
const cell = notebook.widgets.find(c => tag ? (c.model.getMetadata('tags') || []).includes(tag)
  : c.model.sharedModel.getSource().includes(text));
if (cell) { cell.node.scrollIntoView(); }
return cell ? cell.node : null;
"""
SAVE = """
const done = arguments[arguments.length - 1];
window.jupyterapp.commands.execute('docmanager:save').then(() => done(true), e => done(`${e}`));
"""
SHUT_DOWN_ALL = """
const done = arguments[arguments.length - 1], sessions = window.jupyterapp?.serviceManager.sessions;
sessions ? sessions.shutdownAll().then(() => done(true), e => done(`${e}`)) : done(true);
"""
# Requests the page made for Jupyter news or for a JupyterLab update check.
NEWS_REQUESTS = r"""
return performance.getEntriesByType('resource').map(e => e.name)
  .filter(url => /\/lab\/api\/(news|update)\b/.test(url));
"""
SVG_MARKS = """
const svg = arguments[0].querySelector('div[id^="bertviz-"] svg');
return svg ? svg.querySelectorAll('line, rect, text, path').length : 0;
"""


@dataclass
class Lab:
    """A JupyterLab server on 127.0.0.1, serving copies of the notebooks."""

    base: str
    token: str
    root: Path
    log: Path

    def page(self, path: str = "") -> str:
        """The address of a lab page ("" for the launcher, "workspaces/W/tree/NAME"), token in."""
        return f"{self.base}/lab/{path}?token={self.token}"


@dataclass
class Ran:
    """A notebook run in the browser; its page stays open for the checks."""

    name: str
    live_errors: list[str]
    saved_errors: list[str]
    page_errors: list[str]
    console: list[str]
    screenshot: Path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def copy_without_outputs(name: str, folder: Path) -> None:
    """Copy notebooks/<name> into folder with no outputs, so every output comes from this run."""
    notebook = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.write(notebook, folder / name)


def wait_until_up(url: str, server: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    """Poll the server's status API (no proxy) until it answers."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, f"JupyterLab exited:\n{log.read_text()[-3000:]}"
        try:
            opener.open(url, timeout=2).close()
            return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"JupyterLab did not answer in {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """JupyterLab with the course's settings, at a free port with a random token."""
    base = tmp_path_factory.mktemp("browser")
    root = base / "notebooks"
    root.mkdir()
    for name in ("03_attention.ipynb", "07_sampling.ipynb"):
        copy_without_outputs(name, root)
    port, token, log = free_port(), secrets.token_hex(16), base / "lab.log"
    env = {
        **os.environ,
        "TINYLM_PROFILE": "ci",
        "JUPYTERLAB_SETTINGS_DIR": str(shutil.copytree(SETTINGS, base / "settings")),
        "JUPYTERLAB_WORKSPACES_DIR": str(base / "workspaces"),
        "JUPYTER_RUNTIME_DIR": str(base / "runtime"),
    }
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.expose_app_in_browser=True",
        *(["--allow-root"] if os.geteuid() == 0 else []),
    ]
    with log.open("w") as out:
        server = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/api/status?token={token}", server, log)
        yield Lab(f"http://127.0.0.1:{port}", token, root, log)
    finally:
        server.terminate()  # the server shuts its kernels down
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


def fontconfig_with_course_font(folder: Path) -> Path:
    """A fontconfig file that adds the course's Noto Sans SC, so screenshots show Chinese."""
    font = course_font_path()
    extra = f"<dir>{font.parent}</dir>" if font else ""
    path = folder / "fonts.conf"
    path.write_text(
        '<?xml version="1.0"?>\n<fontconfig><include ignore_missing="yes">'
        f"/etc/fonts/fonts.conf</include>{extra}</fontconfig>\n"
    )
    return path


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    """Headless Chromium with a fresh profile, that reaches nothing but 127.0.0.1."""
    base = tmp_path_factory.mktemp("chromium")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={base / 'profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    env = {**os.environ, "FONTCONFIG_FILE": str(fontconfig_with_course_font(base))}
    service = Service(CHROMEDRIVER, log_output=str(base / "chromedriver.log"), env=env)
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_script_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of this run's screenshots."""
    return tmp_path_factory.mktemp("screenshots")


def poll(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Call check until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.3)
    return result


def wait_for(driver: webdriver.Chrome, script: str, *args: Any, timeout: float, what: str) -> Any:
    """Run script in the page until it returns something truthy; that value."""
    return poll(lambda: driver.execute_script(script, *args), timeout, what)


def console(driver: webdriver.Chrome) -> list[str]:
    """The browser console's warnings and errors since the last call."""
    return [
        f"{e['level']}: {e['message']}"
        for e in driver.get_log("browser")
        if e["level"] in ("WARNING", "SEVERE")
    ]


def page_errors(driver: webdriver.Chrome) -> list[str]:
    """Error texts anywhere in the page: JavaScript output errors, tracebacks, the news prompt."""
    text = driver.execute_script("return document.body.textContent")
    return [
        s
        for s in ("Javascript Error", "Traceback (most recent call last)", NEWS_PROMPT)
        if s in text
    ]


def saved_errors(path: Path) -> list[str]:
    """The error outputs of the notebook file as JupyterLab saved it."""
    notebook = nbformat.read(path, as_version=4)
    return [
        f"cell {i}: {out.ename}: {out.evalue}"
        for i, cell in enumerate(notebook.cells)
        for out in cell.get("outputs", [])
        if out.output_type == "error"
    ]


def run_all(driver: webdriver.Chrome, name: str) -> list[str]:
    """Run every cell of the open notebook until all have run or one fails; the errors."""
    driver.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    deadline = time.monotonic() + RUN_SECONDS
    while (state := driver.execute_script(RUN_STATE))["kernel"] != "idle" or (
        state["pending"] and not state["errors"]
    ):
        assert time.monotonic() < deadline, f"{name} still runs after {RUN_SECONDS} s: {state}"
        time.sleep(1)
    return state["errors"]


def run_notebook(driver: webdriver.Chrome, lab: Lab, name: str, shots: Path) -> Ran:
    """Open the notebook in a workspace of its own, run it all, save it; what it showed."""
    assert driver.execute_async_script(SHUT_DOWN_ALL) is True, "earlier kernels still run"
    stem = Path(name).stem
    driver.get(lab.page(f"workspaces/{stem}/tree/{name}"))
    try:
        wait_for(driver, OPENED, name, timeout=90, what=f"{name} open with an idle kernel")
        started = time.monotonic()
        errors = run_all(driver, name)
        print(f"{name}: run all in {time.monotonic() - started:.0f} s")
        assert driver.execute_async_script(SAVE) is True, "not saved"
    finally:
        driver.save_screenshot(shot := shots / f"{stem}.png")
    return Ran(
        name, errors, saved_errors(lab.root / name), page_errors(driver), console(driver), shot
    )


def cell(driver: webdriver.Chrome, *, tag: str | None = None, text: str = "") -> WebElement:
    """The open notebook's cell with this tag or source text, scrolled into view."""
    node = driver.execute_script(CELL, tag, text)
    assert node is not None, f"no cell with tag {tag!r} / text {text!r}"
    return node


def assert_no_errors(ran: Ran) -> None:
    """No error output in the notebook, as shown and as saved, nor error text in its page."""
    where = f"{ran.name} (screenshot {ran.screenshot}; console: {ran.console})"
    assert not ran.live_errors, f"error outputs in {where}: {ran.live_errors}"
    assert not ran.saved_errors, f"error outputs saved in {where}: {ran.saved_errors}"
    assert not ran.page_errors, f"{ran.page_errors} in the page of {where}"


@pytest.fixture(scope="module")
def attention(browser: webdriver.Chrome, lab: Lab, shots: Path) -> Ran:
    """Notebook 03, run in the browser."""
    return run_notebook(browser, lab, "03_attention.ipynb", shots)


@pytest.fixture(scope="module")
def sampling(browser: webdriver.Chrome, lab: Lab, shots: Path) -> Ran:
    """Notebook 07, run in the browser (after 03's checks: the page changes)."""
    return run_notebook(browser, lab, "07_sampling.ipynb", shots)


def test_first_screen_is_calm(browser: webdriver.Chrome, lab: Lab, shots: Path) -> None:
    browser.get(lab.page())
    try:
        wait_for(
            browser,
            "return window.jupyterapp?.shell.currentWidget != null",
            timeout=90,
            what="JupyterLab's launcher",
        )
        time.sleep(5)  # the news question, when it is asked, comes right after start-up
    finally:
        browser.save_screenshot(shot := shots / "first_screen.png")
    toasts = [t.text for t in browser.find_elements(By.CSS_SELECTOR, ".Toastify__toast")]
    assert NEWS_PROMPT not in browser.execute_script("return document.body.textContent"), shot
    assert not toasts, f"notifications on the first screen: {toasts} ({shot})"
    assert not browser.execute_script(NEWS_REQUESTS), "JupyterLab fetched news or checked updates"


def test_attention_runs_without_errors(attention: Ran) -> None:
    assert_no_errors(attention)


def heatmap(driver: webdriver.Chrome, node: WebElement, other_than: str = "") -> str:
    """The source of the image that the interact cell shows, or '' (also if it is other_than)."""
    src = driver.execute_script(  # in one step: a redraw replaces the img element
        "return arguments[0].querySelector('.widget-output img')?.src || ''", node
    )
    return "" if src == other_than else src


def move_right(driver: webdriver.Chrome, slider: WebElement) -> str:
    """Move an ipywidgets slider one step right with the keyboard, as a learner can; its readout."""
    handle = slider.find_element(By.CSS_SELECTOR, ".noUi-handle")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", slider)
    handle.click()
    handle.send_keys(Keys.ARROW_RIGHT)
    readout = slider.find_element(By.CSS_SELECTOR, ".widget-readout")
    return poll(lambda: readout.text != "0" and readout.text, 10, "the slider to move")


def test_sliders_redraw_the_heatmap(attention: Ran, browser: webdriver.Chrome, shots: Path) -> None:
    node, shot = cell(browser, text="interact(show_head"), shots / "03_sliders.png"
    try:
        shown = poll(lambda: heatmap(browser, node), 30, "a heatmap under the sliders")
        sliders = node.find_elements(By.CSS_SELECTOR, ".widget-slider")
        assert len(sliders) == 2, f"{len(sliders)} sliders, not layer and head"
        for slider in sliders:
            assert move_right(browser, slider) == "1"
            shown = poll(
                partial(heatmap, browser, node, other_than=shown), 30, "the heatmap to change"
            )
    finally:
        browser.save_screenshot(shot)
    assert not page_errors(browser), f"{page_errors(browser)} after moving the sliders ({shot})"


def test_bertviz_draws_its_svg_offline(
    attention: Ran, browser: webdriver.Chrome, shots: Path
) -> None:
    node, shot = cell(browser, tag="bertviz"), shots / "03_bertviz.png"
    try:
        marks = wait_for(
            browser,
            SVG_MARKS,
            node,
            timeout=30,
            what=f"bertviz's SVG ({shot}; console: {attention.console})",
        )
    finally:
        node.screenshot(str(shot))
    assert marks > 10 and node.find_elements(By.CSS_SELECTOR, "select#layer option"), shot
    failed = [m for m in attention.console + console(browser) if "net::ERR" in m]
    assert not failed, f"the page asked the network for something: {failed} ({shot})"


def test_sampling_runs_without_errors(sampling: Ran) -> None:
    assert_no_errors(sampling)


def test_playground_writes_a_poem(sampling: Ran, browser: webdriver.Chrome, shots: Path) -> None:
    node, shot = cell(browser, text="widgets.interactive("), shots / "07_playground.png"
    output = node.find_element(By.CSS_SELECTOR, ".widget-output")
    assert not CJK.search(output.text), f"a poem before the click ({sampling.screenshot})"
    try:
        node.find_element(By.XPATH, ".//button[normalize-space()='Write']").click()
        poem = poll(lambda: CJK.search(output.text) and output.text, 60, "the playground's poem")
    finally:
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", output)
        browser.save_screenshot(shot)
    assert len(CJK.findall(poem)) >= 10, f"not a poem: {poem!r} ({shot})"
    assert not page_errors(browser), f"{page_errors(browser)} after the click ({shot})"
