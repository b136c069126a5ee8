"""Sharing in a real browser (Debian's chromium via Playwright, the app served in this
process with the starter models): "Copy link" gives a permalink that opens the same tab
with the same settings and runs nothing; a dropped AUTOMATIC1111 PNG restores what it
can and names what it ignored; History lists results across tabs, restores one, and
its zip holds every result with a matching manifest."""
from __future__ import annotations

import io
import json
import zipfile

from PIL import Image, PngImagePlugin

from test_browser import (assert_wholly_in_view, browser, generate,  # noqa: F401 - fixtures
                          open_tab, page, server, set_number)


def field_value(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id} textarea, #{elem_id} input").first.input_value()


def wait_for_note(page, text: str) -> str:
    page.wait_for_function("(t) => (document.querySelector('#share-note')?.innerText || '')"
                           ".includes(t)", arg=text)
    return page.inner_text("#share-note")


def test_copy_link_opens_the_same_tab_and_settings_without_running(page):  # noqa: F811
    open_tab(page, "layout")
    page.get_by_role("button", name="Example layout").click()
    page.fill("#layout-prompt textarea", "a red circle and a blue square, shared")
    set_number(page, "layout-seed", 77)
    set_number(page, "layout-steps", 9)
    set_number(page, "layout-grounding", 0.45)
    page.locator("#layout-place input[type=checkbox]").check()  # off by default
    page.click("#layout-copy-link")
    page.wait_for_function("() => (document.querySelector('#layout-link textarea') || "
                           "document.querySelector('#layout-link input')).value"
                           ".startsWith('http')")
    link = field_value(page, "layout-link")
    assert "tab=layout" in link and "seed=77" in link and "box=a+red+circle" in link
    assert "grounding=0.45" in link

    opened = page.context.new_page()
    opened.goto(link)
    wait_for_note(opened, "Restored")
    opened.wait_for_selector("#layout-generate", state="visible")
    assert field_value(opened, "layout-prompt") == "a red circle and a blue square, shared"
    assert field_value(opened, "layout-seed") == "77"
    assert field_value(opened, "layout-steps") == "9"
    assert field_value(opened, "layout-grounding") == "0.45"
    assert opened.locator("#layout-place input[type=checkbox]").is_checked()
    opened.wait_for_function("() => (document.querySelector('#layout-table')?.innerText"
                             " || '').includes('a blue square')")
    table = opened.inner_text("#layout-table")
    assert "a red circle" in table and "0.08" in table
    opened.wait_for_timeout(500)
    assert opened.locator("#layout-result img").count() == 0, "opening a link ran the model"
    assert "Done" not in opened.inner_text("#layout-status")
    opened.close()


A1111_PARAMETERS = ("a blue square at the top\nNegative prompt: red\nSteps: 6, Sampler: Euler a, "
                    "CFG scale: 5, Seed: 4242, Size: 64x64, Model hash: 0123abcd, "
                    "Clip skip: 2, Version: v1.10.1")


def test_dropping_an_a1111_png_restores_its_settings(page, tmp_path):  # noqa: F811
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", A1111_PARAMETERS)
    path = tmp_path / "from_a1111.png"
    Image.new("RGB", (64, 64), (10, 20, 30)).save(path, pnginfo=info)
    open_tab(page, "upscale")
    page.set_input_files("#share-drop input[type=file]", str(path))
    note = wait_for_note(page, "Ignored")
    assert "AUTOMATIC1111" in note and "Model hash" in note and "Clip skip" in note
    page.wait_for_selector("#t2i-generate", state="visible")
    assert field_value(page, "t2i-prompt") == "a blue square at the top"
    assert field_value(page, "t2i-negative") == "red"
    assert field_value(page, "t2i-seed") == "4242"
    assert field_value(page, "t2i-steps") == "6"


def test_history_restores_and_zips_every_result(page):  # noqa: F811
    page.fill("#t2i-prompt textarea", "a green triangle")
    set_number(page, "t2i-seed", 21)
    generate(page, "t2i")
    open_tab(page, "upscale")
    page.get_by_role("button", name="Use an example picture").last.click()
    page.wait_for_selector("#upscale-input img")
    set_number(page, "upscale-seed", 22)
    generate(page, "upscale")

    page.get_by_role("tab", name="History").click()
    page.wait_for_function("() => document.querySelectorAll('#history-gallery img').length == 2")
    assert_wholly_in_view(page, "#history-gallery")
    page.locator("#history-gallery img").last.click()  # the oldest: the text-to-image one
    page.wait_for_function("() => document.querySelector('#history-settings')"
                           ".innerText.includes('a green triangle')")

    page.click("#history-download")
    link = page.locator("#history-zip a").first
    link.wait_for()
    archive = zipfile.ZipFile(io.BytesIO(page.request.get(link.get_attribute("href")).body()))
    manifest = json.loads(archive.read("manifest.json"))
    assert [r["task"] for r in manifest["results"]] == ["text_to_image", "upscale"]
    for result in manifest["results"]:
        carried = json.loads(Image.open(io.BytesIO(archive.read(result["file"]))).text["settings"])
        assert carried == result["settings"]
    assert [r["settings"]["seed"] for r in manifest["results"]] == [21, 22]

    open_tab(page, "t2i")
    page.fill("#t2i-prompt textarea", "something else")  # restoring must bring it back
    page.get_by_role("tab", name="History").click()
    page.click("#history-restore")
    page.wait_for_selector("#t2i-generate", state="visible")
    page.wait_for_function("() => document.querySelector('#t2i-prompt textarea').value"
                           " == 'a green triangle'")
    assert field_value(page, "t2i-seed") == "21"
