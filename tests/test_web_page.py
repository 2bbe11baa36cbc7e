"""The console's page in a real browser (Debian's chromium driven by Playwright), real clamd."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Dialog, Page, sync_playwright

from clamd_server import EICAR, Clamd
from helpers import image_bytes
from server_process import free_port
from service_helpers import Daemon, make_root, start
from web_helpers import web_address

CHROMIUM = "/usr/bin/chromium"
FOLDER = "grayscale+png"
HOSTILE = "<img src=x onerror=alert(1)>.jpg"
TOKEN = "a-long-enough-test-token-0123456789"
SCRIPTED_SVG = (b'<svg xmlns="http://www.w3.org/2000/svg" width="80" height="60">'
                b'<script>alert("svg")</script>'
                b'<rect width="80" height="60" fill="#c33" onload="alert(\'rect\')"/></svg>')
WAIT_MS = 30_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's chromium, headless; nothing is downloaded."""
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: run `make setup` (Debian package chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM,
                                              args=["--no-sandbox", "--disable-gpu"])
        yield launched
        launched.close()


def console(tmp_path: Path, clamd: Clamd, daemons: list[Daemon], **web: object) -> str:
    """A running service on tmp_path/root with the folder FOLDER; the page's URL."""
    config = make_root(tmp_path / "root", clamd.address,
                       web={"listen": f"127.0.0.1:{free_port()}", **web})
    (config.parent / "inbox" / FOLDER).mkdir()
    start(daemons, config)
    host, port = web_address(config)
    return f"http://{host}:{port}/"


def job_item(page: Page, name: str, state: str) -> str:
    """Wait until the list shows a job of that name in that state; its selector."""
    selector = f"li.job[data-state={state}]:has(.name:text-is({name!r}))"
    page.wait_for_selector(selector, timeout=WAIT_MS)
    return selector


def test_upload_by_picker_and_by_drop_the_list_follows_and_names_stay_text(
        tmp_path: Path, clamd: Clamd, daemons: list[Daemon], browser: Browser) -> None:
    url = console(tmp_path, clamd, daemons)
    root = tmp_path / "root"
    page = browser.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: record(dialogs, dialog))
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(url)
    page.wait_for_selector(f"#folder option[value='{FOLDER}']", state="attached")

    page.set_input_files("#picker", files=[
        {"name": HOSTILE, "mimeType": "image/jpeg", "buffer": image_bytes("JPEG", (320, 240))},
        {"name": "eicar.jpg", "mimeType": "image/jpeg", "buffer": EICAR},
        {"name": "script.svg", "mimeType": "image/svg+xml", "buffer": SCRIPTED_SVG},
    ])
    hostile = job_item(page, HOSTILE, "done")  # arrived through the events, no reload
    job_item(page, "eicar.jpg", "quarantined")
    scripted = job_item(page, "script.svg", "done")
    assert page.locator("#attention li.job").count() == 1
    assert page.locator("#done li.job").count() == 2
    svg_preview = page.locator(f"{scripted} img[alt^='before']").get_attribute("src")
    assert page.evaluate("(src) => fetch(src).then((r) => r.headers.get('content-type'))",
                         svg_preview) == "image/png"

    dropped = base64.b64encode(image_bytes("JPEG", (200, 150), seed=5)).decode()
    transfer = page.evaluate_handle("""(data) => {
        const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], "dropped.jpg", {type: "image/jpeg"}));
        return transfer;
    }""", dropped)
    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
    job_item(page, "dropped.jpg", "done")
    assert page.locator("#done li.job").count() == 3

    for item, side in [(item, side) for item in (hostile, scripted)
                       for side in ("before", "after")]:
        image = page.locator(f"{item} img[alt^='{side}']")
        image.scroll_into_view_if_needed()
        page.wait_for_function("(img) => img.complete && img.naturalWidth > 0",
                               arg=image.element_handle(), timeout=WAIT_MS)
    assert page.locator(f"{hostile} .name").text_content() == HOSTILE
    assert page.locator("img[src='x']").count() == 0
    assert dialogs == []
    assert page.locator(f"{hostile} a:text-is('Download')").count() == 1
    assert "Eicar-Test-Signature" in str(page.locator("#attention .reason").text_content())
    page.screenshot(path=str(tmp_path / "console-wide.png"), full_page=True)

    page.set_viewport_size({"width": 390, "height": 844})
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways at 390 px ({width} px wide)"
    page.screenshot(path=str(tmp_path / "console-phone.png"), full_page=True)
    assert all(request.startswith(url) for request in requests), requests

    dropped_item = page.locator(job_item(page, "dropped.jpg", "done"))
    dropped_item.locator(".again-steps").fill("invert+png")
    dropped_item.locator("button:text-is('Process again')").click()
    page.wait_for_selector("li.job[data-state=done]:has(.folder:text-is('invert+png/'))",
                           timeout=WAIT_MS)
    assert (root / "outbox" / "invert+png" / "dropped.png").is_file()
    page.locator(f"li.job:has(.folder:text-is('{FOLDER}/')):has(.name:text-is('dropped.jpg'))"
                 " button:text-is('Delete')").click()
    page.wait_for_selector(f"li.job:has(.folder:text-is('{FOLDER}/'))"
                           ":has(.name:text-is('dropped.jpg'))", state="detached")
    assert not (root / "outbox" / FOLDER / "dropped.png").exists()
    page.close()


def test_the_page_asks_for_the_token_once_and_keeps_a_strict_cookie(
        tmp_path: Path, clamd: Clamd, daemons: list[Daemon], browser: Browser) -> None:
    url = console(tmp_path, clamd, daemons, token=TOKEN)
    context = browser.new_context()
    page = context.new_page()
    page.goto(url)
    page.wait_for_selector("#login", state="visible")
    page.fill("#token", "wrong")
    page.keyboard.press("Enter")
    page.wait_for_selector("#login-error:text('not the token')")
    page.fill("#token", TOKEN)
    page.keyboard.press("Enter")
    page.wait_for_selector("#console", state="visible")
    (cookie,) = context.cookies()
    assert (cookie["httpOnly"], cookie["sameSite"]) == (True, "Strict")
    assert TOKEN not in cookie["value"]
    assert page.evaluate("() => document.cookie") == ""  # the script cannot read it

    page.reload()
    page.wait_for_selector("#console", state="visible")
    assert page.locator("#login").is_hidden()
    page.focus("#folder")
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.id") == "drop"
    context.close()


def record(dialogs: list[str], dialog: Dialog) -> None:
    """Note a dialog the page opened, and dismiss it."""
    dialogs.append(dialog.message)
    dialog.dismiss()
