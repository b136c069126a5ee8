"""The History tab: this session's results from every tab, newest first, each a PNG
with its settings. Pick one to see its settings, restore them into its tab, or send the
picture to Inpainting or Super-resolution; download everything as a zip with a JSON
manifest. The results themselves are kept by `playground.share.history`."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from .. import Playground
from ..share import read_png
from ..share.history import Histories
from . import inpaint, sharing
from .common import DISPLAY_HEIGHT, call_core, gallery_css, session_of

TAB = "history"
CSS = gallery_css(f"{TAB}-gallery", DISPLAY_HEIGHT + 80)


@dataclass
class HistoryTab:
    gallery: gr.Gallery
    paths: gr.State       # the PNG files shown, in gallery order
    selected: gr.State
    refresh: gr.Button
    restore: gr.Button
    send_to_inpaint: gr.Button
    send_to_upscale: gr.Button
    download: gr.Button
    archive: gr.File
    settings: gr.JSON


def build() -> HistoryTab:
    """The widgets (inside the History tab)."""
    gr.Markdown("Every picture made in this browser session, newest first. Click one, "
                "then restore its settings or send it on.")
    with gr.Row():
        with gr.Column(scale=2):
            gallery = gr.Gallery(label="History", format="png", type="filepath", columns=6,
                                 height=DISPLAY_HEIGHT + 80, object_fit="contain",
                                 interactive=False, elem_id=f"{TAB}-gallery")
        with gr.Column(scale=1):
            refresh = gr.Button("Refresh", size="sm", elem_id=f"{TAB}-refresh")
            restore = gr.Button("Restore its settings", size="sm", variant="primary",
                                elem_id=f"{TAB}-restore")
            send_to_inpaint = gr.Button("Send to Inpainting", size="sm",
                                        elem_id=f"{TAB}-to-inpaint")
            send_to_upscale = gr.Button("Send to Super-resolution", size="sm",
                                        elem_id=f"{TAB}-to-upscale")
            download = gr.Button("Download all (zip with manifest.json)", size="sm",
                                 elem_id=f"{TAB}-download")
            archive = gr.File(label="Zip", interactive=False, visible=False,
                              elem_id=f"{TAB}-zip")
            settings = gr.JSON(label="Settings of the picked result", open=True,
                               elem_id=f"{TAB}-settings")
    return HistoryTab(gallery, gr.State([]), gr.State(None), refresh, restore,
                      send_to_inpaint, send_to_upscale, download, archive, settings)


def wire(h: HistoryTab, history_tab: gr.Tab, histories: Histories, pg: Playground,
         tabs_component: gr.Tabs, bar: sharing.RestoreBar, targets, paint, up) -> None:
    private = {"queue": False, "api_visibility": "private"}

    def listing(request: gr.Request):
        items = histories.of(session_of(request)).items()
        paths = [str(item.path) for item in items]
        return [(path, item.caption) for path, item in zip(paths, items)], paths

    # The picked result stays picked (its file stays) while the list grows.
    for trigger in (history_tab.select, h.refresh.click):
        trigger(listing, None, [h.gallery, h.paths], **private)

    def pick(paths, evt: gr.SelectData):
        path = paths[evt.index] if 0 <= evt.index < len(paths) else None
        return path, (read_png(path).settings if path else None)

    h.gallery.select(pick, h.paths, [h.selected, h.settings], **private)

    def chosen(path):
        if not path:
            raise gr.Error("Pick a picture in the history first.", print_exception=False)
        return path

    def restore(path):
        recipe = call_core(read_png, chosen(path), pg=pg)
        return sharing.restore_answer(recipe, targets)

    h.restore.click(restore, h.selected, sharing.restore_outputs(tabs_component, bar, targets),
                    **private)
    h.send_to_inpaint.click(
        lambda p: (inpaint.editor_value(chosen(p)), gr.Tabs(selected="inpaint")),
        h.selected, [paint.editor, tabs_component], **private)
    h.send_to_upscale.click(lambda p: (chosen(p), gr.Tabs(selected="upscale")),
                            h.selected, [up.source, tabs_component], **private)

    def download(request: gr.Request):
        history = histories.of(session_of(request))
        if not history.items():
            raise gr.Error("Nothing to download yet: make a picture first.",
                           print_exception=False)
        path = history.write_zip(history.folder / "playground-history.zip")
        return gr.File(value=str(path), visible=True)

    h.download.click(download, None, h.archive, **private)
