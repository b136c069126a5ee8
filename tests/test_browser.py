"""The app in a real browser: Debian's chromium driven by Playwright, against the app
served in this process with the starter models. Each tab generates (progress seen,
picture fetched and checked by its pixels), a mask is painted, a box is drawn, Stop
stops a run mid-way, a closed tab drops its queued run and stops its running one, "send
to" carries a picture over, the Learn tab opens with a noised picture, and the page
logs no errors.
On failure, a screenshot of every tab goes to test-artifacts/ (gitignored)."""
from __future__ import annotations

import io
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Page, sync_playwright

from app_server import shared_app
from playground import Registry
from playground.ui.examples import example_picture

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
TABS = {"t2i": "Text to image", "layout": "Layout to image", "inpaint": "Inpainting",
        "upscale": "Super-resolution"}
STEPS = 4
TIMEOUT_MS = 90_000
# Watch a status line and remember every text it showed (steps go by faster than polls).
WATCH_STATUS = """(id) => {
    const el = document.querySelector('#' + id);
    window.__seen = window.__seen || {};
    window.__seen[id] = [];
    new MutationObserver(() => window.__seen[id].push(
            el.innerText.trim() + (el.querySelector('progress') ? ' [bar]' : '')))
        .observe(el, {subtree: true, childList: true, characterData: true});
}"""


@pytest.fixture(scope="module")
def server():
    return shared_app()


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed: apt-get install -y chromium"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server, request):
    """A fresh page on the app; fails the test if the page logged errors, and saves a
    screenshot of each tab when the test failed."""
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server[1])
    page.wait_for_selector("#t2i-generate")
    failed_before = request.session.testsfailed
    yield page
    if request.session.testsfailed > failed_before:
        save_screenshots(page, request.node.name)
    context.close()
    assert not errors, f"the page logged errors: {errors}"


def save_screenshots(page: Page, test_name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    for tab, title in TABS.items():
        try:
            page.get_by_role("tab", name=title).click(timeout=5_000)
            page.screenshot(path=str(ARTIFACTS / f"{test_name}-{tab}.png"), full_page=True)
        except Exception as error:  # noqa: BLE001 - a screenshot must not hide the failure
            print(f"no screenshot of {tab}: {error}")


# ---------------------------------------------------------------- helpers

def open_tab(page: Page, tab: str) -> None:
    page.get_by_role("tab", name=TABS[tab]).click()
    page.wait_for_selector(f"#{tab}-generate", state="visible")


def set_number(page: Page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]").first
    box.fill(str(value))
    box.press("Enter")


def watch_status(page: Page, elem_id: str) -> None:
    """Record every text the status line shows from now on (once it is on the page)."""
    page.wait_for_selector(f"#{elem_id}", state="attached")
    page.evaluate(WATCH_STATUS, elem_id)


def generate(page: Page, tab: str) -> list[str]:
    """Press Generate with few steps; wait for the end; return what the status showed."""
    set_number(page, f"{tab}-steps", STEPS)
    watch_status(page, f"{tab}-status")
    page.click(f"#{tab}-generate")
    page.wait_for_function(  # "Done in" seen since this click (not a run before it)
        "(id) => window.__seen[id].some((text) => text.includes('Done in'))"
        " || document.querySelector('[data-testid=toast-body]')",
        arg=f"{tab}-status", timeout=TIMEOUT_MS)
    toast = page.locator("[data-testid=toast-body]")
    assert toast.count() == 0, f"the app showed an error: {toast.first.inner_text()}"
    return page.evaluate("(id) => window.__seen[id]", f"{tab}-status")


def picture_in(page: Page, selector: str) -> Image.Image:
    """Fetch the picture an <img> under `selector` shows, as served by the app."""
    img = page.locator(f"{selector} img").first
    img.wait_for(state="attached")
    source = img.get_attribute("src")
    body = page.request.get(source).body() if not source.startswith("data:") else None
    assert body is not None, f"{selector} shows an inline picture, not a served PNG"
    return Image.open(io.BytesIO(body))


def assert_real_picture(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    assert image.format == "PNG", f"expected a lossless PNG, got {image.format}"
    assert image.size == size
    pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    assert pixels.std() > 1, "the picture is blank"
    return pixels


def assert_wholly_in_view(page: Page, gallery: str) -> None:
    """The gallery's first picture lies inside the gallery's box (a lone picture used to be
    laid out square and as wide as the gallery, its bottom half cut off)."""
    inside = page.evaluate("""(gallery) => {
        const picture = document.querySelector(gallery + ' img').getBoundingClientRect();
        const box = document.querySelector(gallery + ' .grid-wrap').getBoundingClientRect();
        return [picture.top >= box.top - 1, picture.bottom <= box.bottom + 1,
                picture.left >= box.left - 1, picture.right <= box.right + 1,
                picture.height > 100];
    }""", gallery)
    assert all(inside), f"{gallery}: the picture is not wholly in view (top, bottom, left, right, size: {inside})"


def assert_progress_was_shown(seen: list[str]) -> None:
    steps = [text for text in seen if text.startswith("Step ")]
    assert steps, f"no step count was shown while sampling: {seen}"
    assert any(f"/{STEPS}" in text for text in steps)
    assert all(text.endswith("[bar]") for text in steps), "no progress bar beside the count"


def assert_sliders_start_at_the_models_defaults(page: Page, tab: str, task: str) -> None:
    """Guidance and steps (the starter upscaler starts at 4 steps, the rest at 20)."""
    defaults = Registry(device="cpu").defaults("starter", task)
    for slider in ("guidance", "steps"):
        shown = page.locator(f"#{tab}-{slider} input[type=number]").first.input_value()
        assert float(shown) == defaults[slider], slider


def workers_of(tab: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"playground-{tab}" and t.is_alive()]


# ---------------------------------------------------------------- the tabs

def test_text_to_image_tab(page):
    assert_sliders_start_at_the_models_defaults(page, "t2i", "text_to_image")
    page.fill("#t2i-prompt textarea", "a blue square")
    set_number(page, "t2i-seed", 5)
    seen = generate(page, "t2i")
    assert_progress_was_shown(seen)
    assert_real_picture(picture_in(page, "#t2i-result"), (64, 64))
    assert_wholly_in_view(page, "#t2i-result")
    assert_real_picture(picture_in(page, "#t2i-preview"), (64, 64))
    assert page.locator("#t2i-seed-used input").input_value() == "5"
    assert "seed 5" in page.inner_text("#t2i-status")

    page.get_by_role("button", name="Send to Super-resolution").first.click()
    page.wait_for_selector("#upscale-generate", state="visible")
    sent = picture_in(page, "#upscale-input")
    assert sent.size == (64, 64)


def test_place_objects_checkbox_reaches_the_run(page):
    """Ticked, the picture is the placed one the Python API makes, to the pixel."""
    from playground import Playground

    prompt = "a small red circle in the bottom right"
    page.fill("#t2i-prompt textarea", prompt)
    set_number(page, "t2i-seed", 1)
    page.locator("#t2i-place input[type=checkbox]").check()
    seen = generate(page, "t2i")
    assert any(text.startswith("Placing objects") for text in seen), seen
    shown = assert_real_picture(picture_in(page, "#t2i-result"), (64, 64))
    pg = Playground(device="cpu")
    placed = pg.text_to_image(prompt, seed=1, steps=STEPS, place_objects=True)
    assert np.array_equal(shown, np.asarray(placed, dtype=np.int16))

    page.locator("#t2i-hints input[type=checkbox]").check()
    generate(page, "t2i")
    shown = assert_real_picture(picture_in(page, "#t2i-result"), (64, 64))
    hinted = pg.text_to_image(prompt, seed=1, steps=STEPS, place_objects=True, colour_hints=True)
    assert np.array_equal(shown, np.asarray(hinted, dtype=np.int16)), "colour hints did not reach the run"

    page.locator("#t2i-regional input[type=checkbox]").check()
    generate(page, "t2i")
    shown = assert_real_picture(picture_in(page, "#t2i-result"), (64, 64))
    regional = pg.text_to_image(prompt, seed=1, steps=STEPS, place_objects=True, colour_hints=True,
                                regional_prompts=True)
    assert np.array_equal(shown, np.asarray(regional, dtype=np.int16)), "regional prompts did not reach the run"

    page.locator("#t2i-compose input[type=checkbox]").check()
    generate(page, "t2i")
    shown = assert_real_picture(picture_in(page, "#t2i-result"), (64, 64))
    composed = pg.text_to_image(prompt, seed=1, steps=STEPS, compose_objects=True)
    assert np.array_equal(shown, np.asarray(composed, dtype=np.int16)), "compose objects did not reach the run"


def test_layout_tab_draws_a_box_with_a_phrase(page):
    open_tab(page, "layout")
    canvas = page.locator("#layout-canvas canvas").first
    canvas.wait_for()
    box = canvas.bounding_box()
    x, y = box["x"] + box["width"] * 0.25, box["y"] + box["height"] * 0.25
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 160, y + 140, steps=10)
    page.mouse.up()
    label = page.locator("#model-box-edit input[aria-label='Label']")
    label.fill("a red circle")
    page.locator("#model-box-edit").get_by_role("button", name="OK").click()
    table = page.locator("#layout-table")
    page.wait_for_function("() => document.querySelector('#layout-table').innerText"
                           ".includes('a red circle')")
    assert "a red circle" in table.inner_text()

    seen = generate(page, "layout")  # regional prompts and colour hints, no steering
    assert_progress_was_shown(seen)
    assert not any(text.startswith("Placing objects") for text in seen), seen
    plain = assert_real_picture(picture_in(page, "#layout-result"), (64, 64))
    overlay = page.locator("#layout-overlay")
    assert "a red circle" in overlay.inner_text(), "the box is not drawn over the result"

    page.locator("#layout-place input[type=checkbox]").check()  # off from the start
    seen = generate(page, "layout")
    assert any(text.startswith("Placing objects") for text in seen), seen
    placed = assert_real_picture(picture_in(page, "#layout-result"), (64, 64))
    assert np.abs(placed - plain).max() > 50, "the checkbox did not reach the run"
    page.locator("#layout-place input[type=checkbox]").uncheck()

    page.locator("#layout-regional input[type=checkbox]").uncheck()  # on from the start
    generate(page, "layout")
    one_prompt = assert_real_picture(picture_in(page, "#layout-result"), (64, 64))
    assert np.abs(one_prompt - plain).max() > 30, "the regional prompts checkbox did not reach the run"

    page.locator("#layout-hints input[type=checkbox]").uncheck()  # on from the start too
    generate(page, "layout")
    no_hints = assert_real_picture(picture_in(page, "#layout-result"), (64, 64))
    assert np.abs(no_hints - one_prompt).max() > 30, "the colour hints checkbox did not reach the run"

    grounding = page.locator("#layout-grounding input[type=number]").first
    assert float(grounding.input_value()) == 1.0  # the starter layout model's default
    set_number(page, "layout-grounding", 0.3)
    generate(page, "layout")
    early = assert_real_picture(picture_in(page, "#layout-result"), (64, 64))
    assert np.abs(early - no_hints).max() > 30, "the grounding slider did not reach the run"


def test_inpaint_tab_paints_a_mask(page):
    open_tab(page, "inpaint")
    assert page.locator("#inpaint-focus input[type=checkbox]").is_checked()  # on from the start
    page.get_by_role("button", name="Use an example picture").first.click()
    editor = page.locator("#inpaint-editor")
    editor.locator("button[aria-label='Brush']").click()
    canvas = editor.locator("canvas").last
    page.wait_for_timeout(500)
    box = canvas.bounding_box()
    # paint a stroke across the lower middle of the picture
    y = box["y"] + box["height"] * 0.55
    page.mouse.move(box["x"] + box["width"] * 0.4, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.6, y, steps=3)  # each move redraws: keep few
    page.mouse.up()

    seen = generate(page, "inpaint")
    assert_progress_was_shown(seen)
    mask = np.asarray(picture_in(page, "#inpaint-mask").convert("L"))
    assert mask.shape == (64, 64)
    painted = mask > 127
    assert 0 < painted.sum() < painted.size / 2, "the painted stroke is not the mask"
    result = assert_real_picture(picture_in(page, "#inpaint-result"), (64, 64))
    original = np.asarray(example_picture(), dtype=np.int16)
    assert np.array_equal(result[~painted], original[~painted]), \
        "pixels outside the painted mask changed"


def test_upscale_tab_shows_input_and_output_side_by_side(page):
    open_tab(page, "upscale")
    assert_sliders_start_at_the_models_defaults(page, "upscale", "upscale")
    page.get_by_role("button", name="Use an example picture").last.click()
    page.wait_for_selector("#upscale-input img")
    seen = generate(page, "upscale")
    assert_progress_was_shown(seen)
    assert_real_picture(picture_in(page, "#upscale-result"), (256, 256))
    source = page.locator("#upscale-input img").first.bounding_box()
    output = page.locator("#upscale-result img").first.bounding_box()
    assert abs(source["height"] - output["height"]) < 2, "not shown at the same size"


def test_stop_ends_the_run_mid_way(page, server):
    set_number(page, "t2i-steps", 150)
    watch_status(page, "t2i-status")
    page.click("#t2i-generate")
    page.wait_for_function(
        "() => /^Step ([3-9]|\\d\\d+)\\//.test("
        "document.querySelector('#t2i-status').innerText.trim())")
    page.click("#t2i-stop")
    page.wait_for_function(
        "() => document.querySelector('#t2i-status').innerText.includes('Stopped')")
    deadline = time.monotonic() + 10
    while workers_of("t2i") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not workers_of("t2i"), "the sampling loop kept running after Stop"
    assert server[0].playground_runs.count() == 0
    seen = page.evaluate("() => window.__seen['t2i-status']")
    last_step = max(int(t.split()[1].split("/")[0]) for t in seen if t.startswith("Step "))
    assert last_step < 150
    assert page.locator("#t2i-result img").count() == 0, "a stopped run showed a result"

    seen = generate(page, "t2i")  # the app serves the next run as usual
    assert_real_picture(picture_in(page, "#t2i-result"), (64, 64))


def test_learn_tab_opens_with_the_example_already_noised(page):
    """The forward explorer shows x_t at t 300 before anything is touched: the same
    pixels the Python API gives for the example picture."""
    from playground import Playground

    page.get_by_role("tab", name="Learn").click()
    shown = picture_in(page, "#learn-fwd-noisy")
    expected = Playground().forward_noise(example_picture(), 300, seed=0).noisy
    assert np.array_equal(assert_real_picture(shown, expected.size),
                          np.asarray(expected.convert("RGB"), dtype=np.int16))
    # KaTeX renders the numbers after the tab shows: "t=300, ... SNR=1.442"
    page.wait_for_function("() => document.querySelector('#learn-fwd-snr').innerText.includes('SNR=')")
    assert "t=300," in page.locator("#learn-fwd-snr").inner_text()


@pytest.mark.parametrize("boxes, options, refusal", [
    (("place", "hints", "regional"),
     dict(place_objects=True, colour_hints=True, regional_prompts=True),
     "Turn regional prompts off for the maps"),
    (("compose",), dict(compose_objects=True), "Turn compose objects off for the maps"),
], ids=["regional", "compose"])
def test_learn_tab_filmstrip_runs_with_the_options_and_the_maps_say_why_not(page, boxes, options,
                                                                           refusal):
    """The filmstrip's last x_t is the Text to image tab's picture with the same options,
    pixel for pixel; the maps button answers with the core's message."""
    from playground import Playground

    prompt = "two objects: a small blue square in the top left and a small yellow circle in the bottom right"
    page.get_by_role("tab", name="Learn").click()
    page.fill("#learn-prompt textarea", prompt)
    set_number(page, "learn-seed", 2)
    for box in boxes:
        page.locator(f"#learn-{box} input[type=checkbox]").check()
    generate(page, "learn")
    shown = assert_real_picture(picture_in(page, "#learn-frame-xt"), (64, 64))
    made = Playground(device="cpu").text_to_image(prompt, seed=2, steps=STEPS, **options)
    assert np.array_equal(shown, np.asarray(made, dtype=np.int16)), "the options did not reach the run"

    page.click("#learn-maps")
    toast = page.locator("[data-testid=toast-body]").first
    toast.wait_for()
    assert refusal in toast.inner_text()
    assert "Traceback" not in toast.inner_text()


def test_bad_input_shows_the_core_message(page):
    open_tab(page, "layout")
    page.get_by_role("button", name="Clear boxes").click()
    page.wait_for_function("() => !document.querySelector('#layout-table tbody')"
                           " || document.querySelector('#layout-table tbody').rows.length <= 1")
    page.click("#layout-generate")
    toast = page.locator("[data-testid=toast-body]").first
    toast.wait_for()
    assert "no boxes given" in toast.inner_text()
    assert "Example layout" in toast.inner_text()  # the tab says how to get going
    assert "Traceback" not in toast.inner_text()



def open_page(browser, server):
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server[1])
    return context, page


def test_closing_a_tab_drops_its_queued_run_and_stops_its_running_one(
        browser, server, monkeypatch):
    """Two tabs, one sampling slot. The waiting tab closes: its run leaves the queue
    within moments (build.cancel_work_of_closed_tabs, not Gradio's 15 s heartbeat). The
    sampling tab closes: its loop stops within moments. Nothing samples to the end."""
    app, runs = server[0], server[0].playground_runs
    controls = []

    def start_and_remember(session, tab, control, start=runs.start):
        controls.append(control)
        start(session, tab, control)

    monkeypatch.setattr(runs, "start", start_and_remember)
    sampling, sampling_page = open_page(browser, server)
    waiting, waiting_page = open_page(browser, server)
    for page in (sampling_page, waiting_page):
        set_number(page, "t2i-steps", 150)
    sampling_page.click("#t2i-generate")
    sampling_page.wait_for_function(
        "() => /^Step ([3-9]|\\d\\d+)\\//.test("
        "document.querySelector('#t2i-status').innerText.trim())")
    waiting_page.click("#t2i-generate")
    wait_for(lambda: len(app._queue) == 1, "the second run to wait in the queue")
    waiting.close()
    wait_for(lambda: len(app._queue) == 0, "the closed tab's run to leave the queue",
             seconds=5)

    steps = []
    reported = controls[0].on_progress
    controls[0].on_progress = lambda step, total: (steps.append(step), reported(step, total))
    sampling.close()
    wait_for(lambda: controls[0].cancelled, "the sampling tab's run to be cancelled",
             seconds=5)
    wait_for(lambda: runs.count() == 0, "every run to end")
    assert not steps or steps[-1] < 150, f"the run sampled to the end: {steps[-1:]}"
    assert all(control.cancelled for control in controls), "a closed tab's run went on"


def wait_for(condition, what: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"waited {seconds} s for {what}"
        time.sleep(0.05)
