"""Assemble the app: the four tabs, the "send to" buttons between them, the HTTP API
endpoints and a bounded queue, all over one `Playground`."""
from __future__ import annotations

import gradio as gr

from .. import Playground
from ..share.history import Histories
from . import history, inpaint, layout_to_image, sharing, text_to_image, upscale
from .api import ApiEndpoints
from . import compare, compare_api
from . import learn, learn_api
from .common import session_of
from .runs import ActiveRuns

TITLE = "The diffusion playground"
INTRO = ("Text to image, layout to image, inpainting and x4 super-resolution over one "
         "model registry. Everything here is also callable from Python "
         "(`from playground import Playground`) and from `gradio_client` (see *Use via API* "
         "below).")


def build_app(pg: Playground, *, concurrency_limit: int | None = 1, max_queue: int = 32,
              api_output_dir: str | None = None) -> gr.Blocks:
    """The Gradio app over `pg`.

    concurrency_limit: sampling runs at once, over all tabs and API endpoints together
        (1 suits a CPU; None = no limit). max_queue: requests waiting beyond that; more
        are refused with Gradio's "queue is full" message."""
    runs = ActiveRuns()
    runs.history = Histories()  # each session's results, for the History tab
    # delete_cache: Gradio's uploads and results older than an hour go, checked hourly
    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        gr.Markdown(f"# {TITLE}\n{INTRO}")
        restore_bar = sharing.restore_bar()
        links = {}
        with gr.Tabs() as tabs:
            with gr.Tab("Text to image", id="t2i"):
                t2i = text_to_image.build(pg, runs, concurrency_limit=concurrency_limit)
                links["t2i"] = sharing.link_row("t2i")
            with gr.Tab("Layout to image", id="layout"):
                layout = layout_to_image.build(pg, runs, concurrency_limit=concurrency_limit)
                links["layout"] = sharing.link_row("layout")
            with gr.Tab("Inpainting", id="inpaint"):
                paint = inpaint.build(pg, runs, concurrency_limit=concurrency_limit)
                links["inpaint"] = sharing.link_row("inpaint")
            with gr.Tab("Super-resolution", id="upscale"):
                up = upscale.build(pg, runs, concurrency_limit=concurrency_limit)
                links["upscale"] = sharing.link_row("upscale")
            with gr.Tab("History", id="history") as history_tab:
                past = history.build()
            with gr.Tab("Compare", id="compare"):
                compare.build(pg, runs, concurrency_limit=concurrency_limit)
            with gr.Tab("Learn", id="learn"):
                learn.build(pg, runs, concurrency_limit=concurrency_limit)
        wire_send_to(tabs, t2i, layout, paint, up)
        targets = sharing.wire(app, pg, tabs, restore_bar,
                               {"t2i": t2i, "layout": layout, "inpaint": paint, "upscale": up},
                               links)
        history.wire(past, history_tab, runs.history, pg, tabs, restore_bar, targets, paint, up)
        api = ApiEndpoints(pg, api_output_dir)
        api.register(concurrency_limit=concurrency_limit)
        compare_api.CompareEndpoints(pg, api.output_dir).register(
            concurrency_limit=concurrency_limit)
        learn_api.LearnEndpoints(pg, api.output_dir).register(
            concurrency_limit=concurrency_limit)
        cancel_work_of_closed_tabs(app, runs)
    app.queue(max_size=max_queue, default_concurrency_limit=concurrency_limit)
    app.playground_runs = runs  # for tests and monitoring: the runs in flight
    app.playground_output_dir = api.output_dir  # served: see serving.launch_options
    app.playground_css = upscale.CSS + text_to_image.CSS + history.CSS  # given to launch():
    # see serving.launch_options
    return app


def cancel_work_of_closed_tabs(app: gr.Blocks, runs: ActiveRuns) -> None:
    """When a browser tab closes, its runs stop and its queued requests leave the queue.

    Gradio drops a closed tab's queued events only when that tab's event stream notices
    the disconnect, which can take until its next 15 s heartbeat, or never if the event
    is handed a worker first. Its unload event comes from the page's own heartbeat
    connection as soon as the tab goes, so the work is cancelled here as well."""
    async def on_tab_closed(request: gr.Request):
        session = session_of(request)
        runs.close_session(session)
        queue = getattr(app, "_queue", None)  # Gradio's own queue: no public handle
        if queue is not None and session != "local":
            await queue.clean_events(session_hash=session)

    app.unload(on_tab_closed)


def wire_send_to(tabs: gr.Tabs, t2i, layout, paint, up) -> None:
    """Each "Send to" button carries a result into another tab and opens that tab."""
    def to_inpaint(picture):
        return inpaint.editor_value(picture), gr.Tabs(selected="inpaint")

    def to_upscale(picture):
        return picture, gr.Tabs(selected="upscale")

    def chosen(gallery, index):
        if not gallery:
            raise gr.Error("Nothing to send yet: generate a picture first.",
                           print_exception=False)
        index = index if isinstance(index, int) and 0 <= index < len(gallery) else 0
        item = gallery[index]
        return item[0] if isinstance(item, (tuple, list)) else item

    def must_have(picture):
        if picture is None:
            raise gr.Error("Nothing to send yet: make a picture first.", print_exception=False)
        return picture

    private = {"queue": False, "api_visibility": "private"}
    t2i.send_to_inpaint.click(lambda g, i: to_inpaint(chosen(g, i)), [t2i.gallery, t2i.selected],
                              [paint.editor, tabs], **private)
    t2i.send_to_upscale.click(lambda g, i: to_upscale(chosen(g, i)), [t2i.gallery, t2i.selected],
                              [up.source, tabs], **private)
    layout.send_to_inpaint.click(lambda p: to_inpaint(must_have(p)), layout.result,
                                 [paint.editor, tabs], **private)
    layout.send_to_upscale.click(lambda p: to_upscale(must_have(p)), layout.result,
                                 [up.source, tabs], **private)
    paint.send_to_upscale.click(lambda p: to_upscale(must_have(p)), paint.result,
                                [up.source, tabs], **private)
    up.send_to_inpaint.click(lambda p: to_inpaint(must_have(p)), up.result,
                             [paint.editor, tabs], **private)
