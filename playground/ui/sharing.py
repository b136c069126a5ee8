"""Sharing in the UI: a "Copy link" row on every tab (a permalink holding the tab and
its settings), links opened restore those settings (nothing runs until Generate), and a
drop zone that restores the settings a PNG carries (ours or an AUTOMATIC1111 one),
saying which were ignored. The reading and checking live in `playground.share`; here
are only widgets and events."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from .. import Playground, PlaygroundError
from ..run import versions
from ..share import link_query, read_png, read_query, restorable
from ..share.recipe import TASK_OF_TAB, Recipe
from . import layout_to_image
from .common import call_core

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
# The link is made in the browser: only it knows the address the user sees (proxies,
# --root-path, share links). Copying can fail (no clipboard on plain http): the link
# is shown in the box either way.
LINK_JS = """(query) => {
    if (!query) { return query; }
    const url = window.location.origin + window.location.pathname + query;
    if (navigator.clipboard) { navigator.clipboard.writeText(url).catch(() => {}); }
    return url;
}"""
PAGE_QUERY_JS = "(ignored) => window.location.search"


@dataclass
class LinkRow:
    button: gr.Button
    box: gr.Textbox


@dataclass
class RestoreBar:
    drop: gr.File
    note: gr.Markdown
    page_query: gr.Textbox


def link_row(tab: str) -> LinkRow:
    """The "Copy link" button and the box showing the link (inside a tab)."""
    with gr.Row(equal_height=True):
        button = gr.Button("Copy link", size="sm", scale=1, min_width=100,
                           elem_id=f"{tab}-copy-link")
        box = gr.Textbox(show_label=False, interactive=False, scale=6, buttons=["copy"],
                         placeholder="A link that opens this tab with these settings "
                         "(it runs when Generate is pressed)", elem_id=f"{tab}-link")
    return LinkRow(button, box)


def example_pngs() -> list[str]:
    """The example pictures with settings shipped in examples/."""
    return sorted(str(p) for p in EXAMPLES_DIR.glob("*.png"))


def restore_bar() -> RestoreBar:
    """Drop zone for a PNG with settings, its examples, and the note saying what was
    restored and ignored."""
    with gr.Accordion("Restore settings from a picture or link", open=True):
        with gr.Row():
            drop = gr.File(label="Drop a PNG (from this playground or AUTOMATIC1111) to "
                           "restore its settings", file_types=[".png"], type="filepath",
                           height=150, scale=2, elem_id="share-drop")
            note = gr.Markdown("", elem_id="share-note")
        pngs = example_pngs()
        if pngs:
            gr.Examples([[p] for p in pngs], inputs=[drop],
                        label="Example pictures (settings inside: click one)")
    page_query = gr.Textbox(visible=False)
    return RestoreBar(drop, note, page_query)


# ---------------------------------------------------------------- settings -> widgets

def restore_targets(tabs: dict) -> list[tuple[str, str, gr.components.Component]]:
    """(tab, settings key, widget) for every restorable widget of every tab."""
    return [(tab, key, widget) for tab, built in tabs.items()
            for key, widget in built.fields.items()]


OPTIONAL_FLAGS = ("place_objects", "regional_prompts", "colour_hints", "compose_objects")


def widget_updates(recipe: Recipe, targets) -> list:
    """One update per target: the recipe's values on its tab, nothing elsewhere."""
    values = recipe.settings
    updates = []
    for tab, key, _ in targets:
        if tab == recipe.tab and key in OPTIONAL_FLAGS:  # recorded only when on
            updates.append(gr.update(value=bool(values.get(key))))
        elif tab != recipe.tab or values.get(key) is None:
            updates.append(gr.skip())
        elif key == "boxes":
            phrases = values.get("phrases") or [""] * len(values["boxes"])
            updates.append(layout_to_image.canvas_value(list(zip(phrases, values["boxes"]))))
        else:
            updates.append(gr.update(value=values[key]))
    return updates


def canvas_note(recipe: Recipe) -> list[str]:
    """The layout canvas holds whole pixels: say when restored boxes had to move."""
    boxes = recipe.settings.get("boxes")
    if recipe.tab != "layout" or not boxes:
        return []
    phrases = recipe.settings.get("phrases") or [""] * len(boxes)
    on_canvas = layout_to_image.phrases_and_boxes(
        layout_to_image.canvas_value(list(zip(phrases, boxes))))[1]
    if on_canvas == boxes:
        return []
    return [f"The boxes moved to the canvas's {layout_to_image.CANVAS_SIDE}-pixel grid "
            f"(now {on_canvas}): pixels may differ."]


def restore_outputs(tabs_component: gr.Tabs, bar: RestoreBar, targets) -> list:
    return [tabs_component, bar.note, *(widget for _, _, widget in targets)]


def restore_answer(recipe: Recipe, targets) -> list:
    recipe.notes += canvas_note(recipe)
    return [gr.Tabs(selected=recipe.tab), recipe.message(), *widget_updates(recipe, targets)]


def nothing(targets, note=gr.skip()) -> list:
    return [gr.skip(), note, *(gr.skip() for _ in targets)]


# ---------------------------------------------------------------- the events

def wire(app: gr.Blocks, pg: Playground, tabs_component: gr.Tabs, bar: RestoreBar,
         tabs: dict, links: dict[str, LinkRow]) -> list:
    """Wire links, opened links and dropped PNGs. `tabs`: tab id -> built tab (with
    `fields`); returns the restore targets (for the History tab's Restore)."""
    targets = restore_targets(tabs)
    outputs = restore_outputs(tabs_component, bar, targets)
    private = {"queue": False, "api_visibility": "private"}

    for tab, row in links.items():
        keys = list(tabs[tab].fields)
        make = _link_maker(pg, tab, keys)
        row.button.click(make, list(tabs[tab].fields.values()), row.box, **private).then(
            None, row.box, row.box, js=LINK_JS, **private)

    def open_link(query: str):
        try:
            record = read_query(query or "")
            if record is None:
                return nothing(targets)
            recipe = restorable(record, pg=pg, origin="link")
        except PlaygroundError as error:
            return nothing(targets, f"This link could not be read: {error}")
        return restore_answer(recipe, targets)

    app.load(open_link, bar.page_query, outputs, js=PAGE_QUERY_JS, **private)

    def dropped(path: str | None):
        if not path:
            return nothing(targets)
        recipe = call_core(read_png, path, pg=pg)
        return restore_answer(recipe, targets)

    bar.drop.change(dropped, bar.drop, outputs, **private)
    return targets


def _link_maker(pg: Playground, tab: str, keys: list[str]):
    task = TASK_OF_TAB[tab]

    def make(*values) -> str:
        settings = dict(zip(keys, values))
        if "boxes" in settings:
            settings["phrases"], settings["boxes"] = \
                layout_to_image.phrases_and_boxes(settings["boxes"])
        model = settings.get("model")
        revision = None
        if model in pg.models(task):
            revision = pg.registry.entry(model).sources[task].revision
        return link_query(task, settings, revision=revision or "", versions=versions())
    return make
