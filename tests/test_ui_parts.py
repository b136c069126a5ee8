"""The parts of the UI that are not widgets: the streamed run (progress, previews,
Stop), reading the mask and boxes from the browser widgets, logins and warnings, and
app.py's flags."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

import app as app_module
from playground import BadInput, Cancelled, Playground, PlaygroundError
from playground.ui import common, inpaint, layout_to_image
from playground.ui.runs import ActiveRuns, stream_run
from playground.ui.serving import (exposure_warning, login_checker, parse_login,
                                   read_auth_file)


@pytest.fixture(scope="module")
def pg():
    return Playground()


def text_to_image(pg, steps):
    return lambda control: pg.text_to_image("a red circle", steps=steps, seed=1,
                                            control=control)


# ---------------------------------------------------------------- streamed runs

def test_stream_reports_every_step_previews_and_the_result(pg):
    runs = ActiveRuns()
    updates = list(stream_run(text_to_image(pg, 5), steps=5, runs=runs, session="a",
                              tab="t2i", poll_s=0.01))
    final = updates[-1]
    assert final.done and final.result.size == (64, 64)
    progress = [u for u in updates if not u.done]
    assert progress[-1].step == 5 and all(u.total == 5 for u in progress)
    previews = [u.preview for u in progress if u.preview is not None]
    assert previews and all(p.size == (64, 64) for p in previews)
    assert runs.count() == 0


def test_placing_objects_reports_its_passes_before_the_steps_and_can_be_stopped(pg):
    def placed(control):
        return pg.text_to_image("a red circle in the top left", steps=4, seed=1,
                                control=control, place_objects=True)

    updates = list(stream_run(placed, steps=4, runs=ActiveRuns(), session="a", tab="t2i",
                              poll_s=0.01))
    staged = [(u.stage, u.step, u.total) for u in updates if u.stage]
    assert staged and staged[-1] == ("placing objects", 10, 10)
    first_step = next(i for i, u in enumerate(updates) if not u.stage)
    assert all(not u.stage for u in updates[first_step:])  # the passes come first
    assert common.stage_message(updates[0]).count("Placing objects") == 1

    runs = ActiveRuns()
    with pytest.raises(Cancelled):
        for update in stream_run(placed, steps=4, runs=runs, session="a", tab="t2i",
                                 poll_s=0.01):
            assert update.stage, "a stop during placing ends the run before sampling"
            runs.stop("a", "t2i")
    assert runs.count() == 0


def test_stop_cancels_only_that_sessions_run_within_two_steps(pg):
    runs = ActiveRuns()
    steps_seen, stopped_at = [], None
    with pytest.raises(Cancelled):
        for update in stream_run(text_to_image(pg, 60), steps=60, runs=runs,
                                 session="alice", tab="t2i", poll_s=0.01):
            steps_seen.append(update.step)
            if stopped_at is None and update.step >= 2:
                assert not runs.stop("bob", "t2i"), "bob has no run to stop"
                assert runs.stop("alice", "t2i")
                stopped_at = update.step
    assert stopped_at is not None
    assert max(steps_seen) <= stopped_at + 2, f"Stop at {stopped_at}, ran to {steps_seen}"
    assert runs.count() == 0


def test_a_consumer_that_goes_away_cancels_the_run(pg):
    runs = ActiveRuns()
    stream = stream_run(text_to_image(pg, 60), steps=60, runs=runs, session="a", tab="t2i",
                        poll_s=0.01)
    next(stream)
    stream.close()  # what happens when the browser leaves or Gradio cancels the event
    deadline = time.monotonic() + 10
    while any(t.name == "playground-t2i" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "the worker kept sampling for nobody"
        time.sleep(0.05)
    assert runs.count() == 0


def test_a_closed_session_cancels_its_runs_and_those_that_slip_out_of_the_queue(monkeypatch):
    from playground.run import RunControl
    from playground.ui import runs as runs_module
    runs = ActiveRuns()
    alice_t2i, alice_inpaint, bob = RunControl(), RunControl(), RunControl()
    runs.start("alice", "t2i", alice_t2i)
    runs.start("alice", "inpaint", alice_inpaint)
    runs.start("bob", "t2i", bob)
    assert runs.close_session("alice") == 2
    assert alice_t2i.cancelled and alice_inpaint.cancelled and not bob.cancelled
    late = RunControl()  # queued before the close, handed a worker just after it
    runs.start("alice", "upscale", late)
    assert late.cancelled
    monkeypatch.setattr(runs_module, "CLOSED_SESSION_GRACE_S", 0.0)
    after_reconnect = RunControl()  # the same session back after a connection blip
    runs.start("alice", "t2i", after_reconnect)
    assert not after_reconnect.cancelled


def test_core_errors_come_out_of_the_stream(pg):
    call = lambda control: pg.text_to_image("a red circle", steps=0, control=control)  # noqa: E731
    with pytest.raises(BadInput, match="steps must be between 1 and 150"):
        list(stream_run(call, steps=0, runs=ActiveRuns(), session="a", tab="t2i"))


def test_errors_become_messages_for_the_user():
    assert "steps must be" in str(common.user_error(BadInput("steps must be 1..150")))
    unexpected = common.user_error(RuntimeError("boom"))
    assert "still running" in str(unexpected) and "boom" in str(unexpected)
    assert issubclass(BadInput, PlaygroundError)


# ---------------------------------------------------------------- widgets -> arguments

def test_mask_is_where_any_layer_was_painted():
    background = Image.new("RGBA", (64, 64), (200, 10, 10, 255))
    layer = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    layer.paste((255, 0, 255, 255), (10, 20, 30, 40))
    picture, mask = inpaint.split_editor_value(
        {"background": background, "layers": [layer], "composite": background})
    assert picture.mode == "RGB" and picture.size == (64, 64)
    m = np.asarray(mask)
    assert m[20:40, 10:30].min() == 255 and m.sum() == 255 * 20 * 20
    assert inpaint.split_editor_value(None) == (None, None)


def test_canvas_boxes_become_fractions_with_their_phrases():
    value = layout_to_image.canvas_value(layout_to_image.EXAMPLE_BOXES)
    phrases, boxes = layout_to_image.phrases_and_boxes(value)  # the canvas as a file
    value["image"] = np.asarray(Image.open(value["image"]))     # as the widget sends it
    assert layout_to_image.phrases_and_boxes(value) == (phrases, boxes)
    assert phrases == [p for p, _ in layout_to_image.EXAMPLE_BOXES]
    for got, (_, want) in zip(boxes, layout_to_image.EXAMPLE_BOXES):
        assert np.allclose(got, want, atol=1 / layout_to_image.CANVAS_SIDE)


# ---------------------------------------------------------------- serving and flags

def test_logins_are_checked_exactly(tmp_path):
    assert parse_login("ann:pa:ss") == ("ann", "pa:ss")
    with pytest.raises(BadInput, match="user:password"):
        parse_login("ann")
    (tmp_path / "logins").write_text("# users\nann:one\n\nbob:two\n")
    check = login_checker(read_auth_file(str(tmp_path / "logins")))
    assert check("ann", "one") and check("bob", "two")
    assert not check("ann", "two") and not check("ann", "on") and not check("", "")


def test_open_servers_without_login_get_a_warning():
    assert exposure_warning("127.0.0.1", share=False, has_auth=False) is None
    assert "--auth" in exposure_warning("0.0.0.0", share=False, has_auth=False)
    assert "--auth" in exposure_warning("127.0.0.1", share=True, has_auth=False)
    assert exposure_warning("0.0.0.0", share=True, has_auth=True) is None


def test_help_lists_the_flags(capsys):
    with pytest.raises(SystemExit):
        app_module.parse_args(["--help"])
    text = capsys.readouterr().out
    for flag in ("--host", "--port", "--model", "--models-file", "--device", "--share",
                 "--auth", "--auth-file", "--root-path"):
        assert flag in text
    args = app_module.parse_args([])
    assert (args.host, args.port, args.share, args.auth) == ("127.0.0.1", 7860, False, None)


def test_main_builds_the_app_and_warns_when_shared_without_login(monkeypatch, capsys):
    launched = {}
    real_build = app_module.build_app

    def build_and_record(pg, **kwargs):
        built = real_build(pg, **kwargs)
        built.launch = lambda **options: launched.update(options)
        return built

    monkeypatch.setattr(app_module, "build_app", build_and_record)
    app_module.main(["--share", "--port", "7999", "--root-path", "/pg"])
    assert "WARNING" in capsys.readouterr().err
    assert launched["share"] is True and launched["server_port"] == 7999
    assert launched["server_name"] == "127.0.0.1" and launched["root_path"] == "/pg"
    assert launched["auth"] is None and launched["allowed_paths"] and len(
        launched["allowed_paths"]) == 1


def test_threads_flag_sets_torchs_cpu_threads(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(app_module, "build_app", lambda pg, **kwargs: _NoLaunch())
    try:
        app_module.main(["--threads", "1"])
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(SystemExit) as exit_:
        app_module.main(["--threads", "0"])
    assert "--threads must be 1 or more" in str(exit_.value)


class _NoLaunch:
    playground_output_dir = "."

    def launch(self, **options):
        pass

    def block_thread(self):
        pass


def test_bad_flags_exit_with_a_message(capsys):
    with pytest.raises(SystemExit) as exit_:
        app_module.main(["--auth", "no-colon"])
    assert "user:password" in str(exit_.value)


def test_filmstrip_captions_say_which_object_a_composed_frame_belongs_to(tmp_path):
    from playground.teach.trace import Frame
    from playground.ui import learn

    picture = Image.new("RGB", (8, 8), (255, 255, 255))
    plain = learn.save_frame(tmp_path, Frame(5, 20, 500.0, picture, picture))
    composed = learn.save_frame(tmp_path, Frame(27, 40, 300.0, picture, picture,
                                                part="object 2 of 2"))
    assert [caption for _, caption in learn.strip_items([plain, composed])] == [
        "step 5: x_t", "step 5: predicted x0",
        "step 27, object 2 of 2: x_t", "step 27, object 2 of 2: predicted x0"]
