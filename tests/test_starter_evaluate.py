"""The evaluation's measures on pictures with known answers, and a quick run that updates a card."""
import random

import numpy as np
import pytest
import torch
from PIL import Image

from playground import Registry
from playground.registry import STARTER_FOLDERS
from playground.starter import evaluate as ev
from playground.starter.captions import parse
from playground.starter.world import PALETTE, Obj, Scene, render


def noisy(img: Image.Image, std: float, seed: int = 0) -> Image.Image:
    a = np.asarray(img, dtype=np.float64) + np.random.default_rng(seed).normal(0, std, np.asarray(img).shape)
    return Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8))


def test_psnr_and_ssim_on_known_pictures():
    img = render(Scene("white", [Obj("red", "circle", (0.2, 0.2, 0.8, 0.8))]), 64)
    shifted = Image.fromarray((np.asarray(img).astype(int) - 10).clip(0, 255).astype(np.uint8))
    assert ev.psnr(img, shifted) == pytest.approx(10 * np.log10(255 ** 2 / 100), abs=1e-6)
    assert ev.ssim(img, img) == pytest.approx(1.0)
    assert 1.0 > ev.ssim(img, noisy(img, 5)) > ev.ssim(img, noisy(img, 30)) > 0


def test_frechet_distance_of_gaussians():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4000, 3)), rng.normal(size=(4000, 3))
    assert ev.frechet_distance(a, b) < 0.02
    assert ev.frechet_distance(a, b + 2.0) == pytest.approx(12.0, abs=0.2)  # 3 dims x 2^2
    assert ev.frechet_distance(a, 3 * b) == pytest.approx(3 * (1 - 3) ** 2, rel=0.05)  # tr(1 + 9 - 2*3) per dim


def reading(*objects, background="white"):
    return {"background": background, "objects": [
        {"colour": c, "shape": s, "size": z, "cell": cell, "box": box, "score": 0.9}
        for c, s, z, cell, box in objects]}


def test_two_object_prompts_need_every_attribute_and_the_relation():
    a, b = Obj("red", "circle", (0.05, 0.05, 0.3, 0.3)), Obj("blue", "square", (0.05, 0.7, 0.3, 0.95))
    case = ev.Case(Scene("white", [a, b]), "a medium red circle above a medium blue square", seed=0)
    red = ("red", "circle", "medium", "top left", a.box)
    blue = ("blue", "square", "medium", "bottom left", b.box)
    assert ev.score_two(case, reading(blue, red))
    assert not ev.score_two(case, reading(("red", "circle", "medium", "bottom left", b.box),
                                          ("blue", "square", "medium", "top left", a.box))), "relation reversed"
    assert not ev.score_two(case, reading(red, ("blue", "square", "large", "bottom left", b.box))), "wrong size"
    assert not ev.score_two(case, reading(red, blue, background="black"))
    assert not ev.score_two(case, reading(red, blue, ("green", "circle", "small", "centre", (0.4, 0.4, 0.6, 0.6))))


def test_blending_back_leaves_the_outside_unchanged():
    original = render(Scene("green", [Obj("red", "square", (0.1, 0.1, 0.4, 0.4))]), 64)
    result = noisy(original, 40)
    mask = ev.mask_for((0.5, 0.5, 0.8, 0.8))
    assert ev.largest_change_outside(result, original, mask) > 50
    blended = ev.blend(result, original, mask)
    assert ev.largest_change_outside(blended, original, mask) == 0
    inside = np.asarray(mask) > 0
    assert (np.asarray(blended)[inside] == np.asarray(result)[inside]).all()


def test_the_vae_round_trip_is_close_but_not_exact():
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(f"{ev.WEIGHTS}/upscale/vae", torch_dtype=torch.float32)
    truth = render(Scene("white", [Obj("blue", "triangle", (0.2, 0.1, 0.7, 0.6))]), 256)
    back = ev.vae_round_trip(vae, truth)
    assert back.size == truth.size
    assert 25 < ev.psnr(back, truth) < 60, "the starter VAE loses a little at the edges"
    inside = np.asarray(back)[100, 115].astype(int)  # well inside the triangle
    assert np.abs(inside - np.array(PALETTE["blue"])).max() <= 12


def test_the_cards_sharing_note_follows_the_folders_links(tmp_path):
    """Which parts are stored once and which a pipeline has of its own, read from the links."""
    import os
    for part in ("tokenizer", "text_encoder", "vae"):
        (tmp_path / "text2img" / part).mkdir(parents=True)
    (tmp_path / "layout" / "text_encoder").mkdir(parents=True)
    (tmp_path / "upscale" / "vae").mkdir(parents=True)
    for task in ("layout", "inpaint", "upscale"):
        (tmp_path / task).mkdir(exist_ok=True)
        os.symlink("../text2img/tokenizer", tmp_path / task / "tokenizer")
        if task != "upscale":
            os.symlink("../text2img/vae", tmp_path / task / "vae")
        if task != "layout":
            os.symlink("../layout/text_encoder", tmp_path / task / "text_encoder")
    note = ev.sharing_note(str(tmp_path))
    assert "the tokenizer is shared by all four (stored once, in `weights/text2img/`)" in note
    assert "the text encoder is shared by layout, inpaint, upscale (stored once, in `weights/layout/`)" in note
    assert "text2img has a text encoder of its own, trained on with the cell-word attention loss" in note
    assert "the VAE is shared by text2img, layout, inpaint" in note and "upscale has a VAE of its own" in note


def test_held_out_sets_are_fixed():
    first, again = ev.text_cases("two", 5, 2), ev.text_cases("two", 5, 2)
    assert [c.prompt for c in first] == [c.prompt for c in again]
    assert all(len(c.scene.objects) == 2 for c in first)
    for case in ev.inpaint_cases(6):
        box = case.extra["target"].box
        m = np.asarray(case.extra["mask"]) > 0
        cx, cy = int((box[0] + box[2]) / 2 * 64), int((box[1] + box[3]) / 2 * 64)
        assert m[cy, cx] and m.mean() < 0.5, "the mask covers the object to paint"
        (alone,) = parse(case.extra["alone"])["objects"]  # the prompt a person would write ...
        new = case.extra["target"]
        assert (alone["colour"], alone["shape"], alone["size"]) == (new.colour, new.shape, new.size)
    assert [c.extra["alone"] for c in ev.inpaint_cases(6)] == [c.extra["alone"] for c in ev.inpaint_cases(6)]
    # ... drawn apart from the captions, which stay what every figure before was measured on
    assert ev.inpaint_cases(1)[0].prompt == "a medium red triangle below a medium red circle on a white background"


def test_quick_run_updates_a_card(tmp_path):
    card = tmp_path / "MODEL_CARD.md"  # not there yet: the run starts it from ours
    ev.main(["--quick", "--card", str(card)])
    text = card.read_text()
    assert "(written by" not in text
    assert "| text-to-image | single: colour |" in text and "| super-resolution | PSNR bicubic (dB) |" in text
    assert "| super-resolution | PSNR VAE round trip, the model's ceiling (dB) |" in text
    assert "| VAE (renders) | PSNR round trip, 64 px renders (dB) |" in text
    defaults = Registry(device="cpu")
    for task, section in ev.SECTIONS.items():  # each model ran at the playground's default guidance
        task_key = {folder: key for key, folder in STARTER_FOLDERS.items()}[task]
        assert f"| {section} | guidance | {ev.fmt(defaults.defaults('starter', task_key)['guidance'])} |" in text
    pictures = list((tmp_path / "card").glob("*.png"))
    assert pictures and all(f"card/{p.name}" in text for p in pictures)
    # a rerun replaces the figures rather than adding them (one cheap task is enough to show it)
    ev.main(["--quick", "--tasks", "upscale", "--card", str(card)])
    text = card.read_text()
    assert text.count("<!-- figures:start -->") == 1
    figures = text.split("<!-- figures:start -->")[1].split("<!-- figures:end -->")[0]
    assert "| super-resolution | PSNR bicubic (dB) |" in figures and "| text-to-image |" not in figures


def test_one_task_at_one_guidance_prints_and_leaves_the_card_alone(capsys):
    before = open(ev.CARD).read()
    ev.main(["--quick", "--tasks", "inpaint", "--guidance", "2"])
    out = capsys.readouterr().out
    assert "| inpainting | guidance | 2.000 |" in out and "text-to-image" not in out
    assert "| inpainting | right inside mask, captions of one object |" in out
    assert "| inpainting | right inside mask, captions of 2-3 objects |" in out
    assert "| inpainting | right inside mask, prompt of the new object alone |" in out
    assert open(ev.CARD).read() == before
    ev.main(["--quick", "--tasks", "layout", "--grounding", "0.3"])
    out = capsys.readouterr().out
    assert "| layout-to-image | grounding (share of the steps the boxes steer) | 0.300 |" in out
    assert open(ev.CARD).read() == before and ev.GLIGEN_BETA == 1.0
    ev.main(["--quick", "--tasks", "inpaint", "--scheduler", "Euler"])
    assert "| inpainting | attributes right inside mask |" in capsys.readouterr().out
    assert open(ev.CARD).read() == before
    with pytest.raises(SystemExit):
        ev.main(["--tasks", "inpaint", "--scheduler", "Karras 9000"])
    assert "--scheduler takes one of: DDPM, DDIM" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ev.main(["--tasks", "paint"])
    assert "--tasks takes a comma-separated subset" in capsys.readouterr().err


def test_another_step_count_prints_and_leaves_the_card_and_the_setting_alone(capsys, monkeypatch):
    before, seen = open(ev.CARD).read(), []
    real = ev.eval_upscale

    def eval_upscale(pipe, n, guidance):
        seen.append((ev.STEPS, pipe.scheduler.config.timestep_spacing))
        return real(pipe, n, guidance)

    monkeypatch.setattr(ev, "eval_upscale", eval_upscale)
    ev.main(["--quick", "--tasks", "upscale", "--steps", "3"])
    ev.main(["--quick", "--tasks", "upscale", "--steps", "1"])  # as the playground runs one step
    assert seen == [(3, "linspace"), (1, "trailing")] and "(3 steps;" in capsys.readouterr().out
    assert open(ev.CARD).read() == before and ev.STEPS == ev.TARGET_STEPS == 20
    with pytest.raises(SystemExit):
        ev.main(["--tasks", "upscale", "--steps", "0"])
    assert "--steps takes a whole number of at least 1" in capsys.readouterr().err


def test_a_larger_or_fresh_set_prints_and_leaves_the_card_and_the_sets_alone(capsys, monkeypatch):
    before, usual, seen = open(ev.CARD).read(), dict(ev.SETS), []
    real = ev.upscale_cases

    def upscale_cases(n):
        cases = real(n)
        seen.append((n, ev.SETS["upscale"][0], [c.prompt for c in cases]))
        return cases

    monkeypatch.setattr(ev, "upscale_cases", upscale_cases)
    monkeypatch.setattr(ev, "eval_upscale", lambda pipe, n, guidance: (
        {"cases": len(upscale_cases(n))}, []))
    ev.main(["--quick", "--tasks", "upscale", "--cases", "3"])
    ev.main(["--quick", "--tasks", "upscale", "--seed-offset", "5"])
    ev.main(["--quick", "--tasks", "upscale"])
    (n3, seed3, three), (n1, seed1, fresh), (_, _, usual_one) = seen
    assert (n3, seed3, n1, seed1) == (3, usual["upscale"][0], 1, usual["upscale"][0] + 5)
    assert three[:1] == usual_one and fresh != usual_one  # the larger set starts with the usual cases
    assert "upscale seed 7500006" in capsys.readouterr().out
    assert open(ev.CARD).read() == before and ev.SETS == usual


def test_position_probe_measures_how_far_the_cell_words_move_the_object():
    from playground.starter import probe_position as pp

    reading = {"objects": [{"box": (0.0, 0.0, 0.2, 0.2), "score": 0.4},
                           {"box": (0.6, 0.6, 1.0, 1.0), "score": 0.9}]}
    assert pp.object_centre(reading) == (0.8, 0.8) and pp.object_centre({"objects": []}) is None
    still = {cell: ((0.5, 0.5), 0.0) for cell in pp.CELLS}
    assert pp.spread(still) == 0.0
    followed = {"top left": ((1 / 6, 1 / 6), 1.0), "bottom right": ((5 / 6, 5 / 6), 1.0),
                "centre": (None, 0.0)}
    assert pp.spread(followed) == pytest.approx(2 / 3 * 2 ** 0.5)
    triangle = {"colour": "red", "shape": "triangle", "score": 0.9}
    assert pp.looks_asked({"objects": [triangle]}, "red", "triangle")
    assert not pp.looks_asked({"objects": [triangle, dict(triangle, shape="circle", score=0.95)]},
                              "red", "triangle")
    assert not pp.looks_asked({"objects": []}, "red", "triangle")


def test_position_why_probes_find_place_in_clean_latents_and_coordinates_in_features():
    from playground.starter import probe_position as pp

    latent = torch.zeros(4, 16, 16)
    latent[:, 1:5, 11:15] = 1.0  # an object in the top right
    g = torch.Generator().manual_seed(0)
    assert pp.place_from_noisy_latent(latent, (11 / 16, 1 / 16, 15 / 16, 5 / 16), 0.9999, g) == "top right"
    rng = np.random.default_rng(0)
    rows, cols = np.divmod(np.arange(16), 4)
    knows = np.stack([cols, rows], 1)[None].repeat(20, 0) + 0.01 * rng.normal(size=(20, 16, 2))
    assert pp.position_r2(np.concatenate([knows, rng.normal(size=(20, 16, 6))], -1)) > 0.99
    assert pp.position_r2(rng.normal(size=(20, 16, 8))) < 0.2


def test_position_why_reads_a_training_state_over_the_shipped_pipeline(tmp_path):
    from safetensors.torch import save_file

    from playground.starter import probe_position as pp

    from playground.registry import STARTER_DIR

    folder = f"{STARTER_DIR}/{STARTER_FOLDERS['text_to_image']}"
    shipped = pp.text2img_pipeline(folder)
    state = {**{f"unet.{k}": v.contiguous() for k, v in shipped.unet.state_dict().items()},
             **{f"text.{k}": torch.zeros_like(v) for k, v in shipped.text_encoder.state_dict().items()}}
    save_file(state, tmp_path / "state.safetensors")
    a, b = "a small red circle in the top left", "a small blue circle in the top left"
    assert pp.predicted_picture_gap(shipped, a, a, samples=2) == 0.0
    assert pp.predicted_picture_gap(shipped, a, b, samples=2) > 1.0
    # a state whose text encoder is all zeros makes every prompt the same
    assert pp.predicted_picture_gap(pp.text2img_pipeline(folder, str(tmp_path / "state.safetensors")),
                                    a, b, samples=2) == 0.0


def test_gates_probe_reads_the_shipped_layout_unet_and_a_training_state(tmp_path, capsys):
    from safetensors.torch import save_file

    from playground.starter import probe_position as pp

    gates = {"a.fuser.alpha_attn": torch.tensor(0.5), "b.fuser.alpha_attn": torch.tensor(-0.1),
             "a.fuser.alpha_dense": torch.tensor(0.0), "a.other.weight": torch.ones(2)}
    openings = pp.gate_openings(gates)
    assert openings["attention"] == pytest.approx([np.tanh(0.5), np.tanh(-0.1)])
    assert openings["dense"] == [0.0]
    save_file({f"ema_unet.{k}": v for k, v in gates.items()} | {"unet.a.fuser.alpha_attn": torch.tensor(3.0)},
              tmp_path / "state.safetensors")
    pp.main(["--gates", "--state", str(tmp_path / "state.safetensors")])
    assert f"attention gates (2 layers): largest {np.tanh(0.5):.4f}" in capsys.readouterr().out
    pp.main(["--gates"])  # the shipped layout UNet: ten gated layers, barely open
    shipped = capsys.readouterr().out
    assert "attention gates (10 layers)" in shipped and "dense gates (10 layers)" in shipped


def test_the_upscaler_guesses_the_clean_picture_well_at_every_noise_level():
    """The shipped upscaler trained with the x0 floor: its one-step guess from pure noise
    (t 999) follows the low-res picture (it was 23-25 dB before, below bicubic), and near
    the end of sampling it comes close to the VAE's own round trip."""
    from playground.starter.probe_upscale import one_step_psnr

    case = ev.upscale_cases(1)[0]
    truth = render(case.scene, 4 * ev.BASE)
    early, late = one_step_psnr(ev.load_pipeline("upscale"), truth, levels=(999, 50))
    assert early > 28 and late > 34, (early, late)


def test_colour_probe_counts_swaps_and_reads_the_pixel_colour():
    from playground.starter import probe_colour as pc
    from playground.starter.world import PALETTE, Obj, Scene, render

    scene = Scene("white", [Obj("green", "square", (0.25, 0.25, 0.75, 0.75))])
    assert pc.centre_colour(render(scene), (0.25, 0.25, 0.75, 0.75)) == PALETTE["green"]
    cases = [ev.Case(scene, "a green square", seed=i) for i in range(3)]
    readings = [{"objects": [{"colour": "green", "score": 0.9}]},
                {"objects": [{"colour": "black", "score": 0.9}, {"colour": "green", "score": 0.2}]},
                {"objects": []}]
    assert pc.colour_mistakes(cases, readings) == {("green", "black"): 1, ("green", "no object"): 1}


def test_shared_tail_swaps_only_the_text_encoders_outputs_from_sep_on(tmp_path):
    import types

    import torch

    from playground.starter import models, train
    from playground.starter.probe_position import with_shared_tail

    tok = models.build_tokenizer()
    torch.manual_seed(0)
    own, shared = models.build_text_encoder(tok).eval(), models.build_text_encoder(tok).eval()
    shared.save_pretrained(tmp_path / "shared")
    ids = train.tokens(tok, ["a red circle in the top left"], "cpu")  # [SEP] at 8
    with torch.no_grad():
        before, theirs = own(ids)[0], shared(ids)[0]
        with_shared_tail(types.SimpleNamespace(text_encoder=own, tokenizer=tok), str(tmp_path / "shared"))
        after = own(ids)[0]
    assert torch.equal(after[:, :8], before[:, :8])
    assert torch.allclose(after[:, 8:], theirs[:, 8:]) and not torch.allclose(before[:, 8:], theirs[:, 8:])


def test_the_sharing_note_names_text_to_images_own_encoder_where_layout_reads_it(tmp_path):
    import os
    for part in ("tokenizer", "text_encoder", "vae"):
        (tmp_path / "text2img" / part).mkdir(parents=True)
    (tmp_path / "inpaint" / "text_encoder").mkdir(parents=True)
    (tmp_path / "upscale" / "vae").mkdir(parents=True)
    (tmp_path / "layout").mkdir()
    for task in ("layout", "inpaint", "upscale"):
        os.symlink("../text2img/tokenizer", tmp_path / task / "tokenizer")
        if task != "upscale":
            os.symlink("../text2img/vae", tmp_path / task / "vae")
    os.symlink("../text2img/text_encoder", tmp_path / "layout" / "text_encoder")
    os.symlink("../inpaint/text_encoder", tmp_path / "upscale" / "text_encoder")
    note = ev.sharing_note(str(tmp_path))
    assert ("text2img's own text encoder, trained on with the cell-word attention loss "
            "(Training, \"Cell words\"), is shared by text2img, layout (stored once, in "
            "`weights/text2img/`)") in note
    assert "the text encoder is shared by inpaint, upscale (stored once, in `weights/inpaint/`)" in note
    assert "of its own" not in note.replace("upscale has a VAE of its own", "")


def test_layout_words_probe_hides_words_by_box_and_otherwise_attends_as_diffusers():
    from diffusers.models.attention_processor import Attention, AttnProcessor

    from playground.starter import probe_layout_words as pl
    from playground.starter.attention_loss import box_coverage, token_objects
    from playground.starter.models import build_tokenizer

    tok = build_tokenizer()
    text = "a red circle in the top left and a blue square in the bottom right"
    objects = token_objects(tok, [text], 77)[0]
    boxes = [[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]]
    torch.manual_seed(0)
    attn = Attention(16, cross_attention_dim=8, heads=2, dim_head=8)
    x, words = torch.randn(2, 64, 16), torch.randn(2, 77, 8)
    # with no boxes nothing is hidden: exactly diffusers' own attention
    plain = pl.WordMaskedCrossAttention(objects, [], guided=True, own_words_only=True)
    assert torch.allclose(plain(attn, x, words), AttnProcessor()(attn, x, words), atol=1e-6)
    red, blue = int((objects == 0).nonzero()[1]), int((objects == 1).nonzero()[1])
    first = box_coverage(boxes[0], 8).flatten() >= 0.5
    for own in (False, True):
        bias = pl.WordMaskedCrossAttention(objects, boxes, guided=True, own_words_only=own).bias(64, 77)
        assert (bias[first, blue] == pl.HIDDEN).all() and (bias[first, red] == 0).all()
        assert (bias[~first, red] == pl.HIDDEN).all() and (bias[:, 0] == 0).all()
        assert bool((bias[first, 30] == pl.HIDDEN).all()) is own  # a pad, inside the first box
    # the negative prompt's half of a guided batch is left as it is
    masked = pl.WordMaskedCrossAttention(objects, boxes, guided=True, own_words_only=True)(attn, x, words)
    assert torch.allclose(masked[0], AttnProcessor()(attn, x, words)[0], atol=1e-6)
    assert not torch.allclose(masked[1], AttnProcessor()(attn, x, words)[1], atol=1e-3)


def test_layout_words_probe_runs_on_the_starter_model(capsys):
    from playground.starter import probe_layout_words as pl

    pl.main(["--cases", "2"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line]
    assert [r.split(" | ")[0][2:] for r in rows[1:]] == list(pl.settings(None, True))
    assert all(0 <= float(v) <= 1 for r in rows[1:] for v in r.strip("| ").split(" | ")[1:])


def test_tail_probe_changes_only_the_outputs_from_sep_on():
    """probe_tail: stock is the pipeline's own encoding; the empty and quiet tails keep the
    words' outputs and replace those from [SEP] on, the quiet one the same for every caption."""
    from playground.starter import probe_tail as pt

    pipe = ev.load_pipeline("text2img")
    prompts = ["a large blue circle in the top left and a small yellow square in the top right",
               "a red triangle on a white background"]
    own, _ = pipe.encode_prompt(prompts[0], "cpu", 1, False)
    stock, negative = pt.conditioner(pipe, "stock")(prompts[0])
    assert torch.allclose(stock, own) and torch.allclose(negative, pt.encoded(pipe.text_encoder, pipe.tokenizer, "")[0])
    sep = len(pipe.tokenizer.tokenize(prompts[0])) + 1
    empty, _ = pt.conditioner(pipe, "empty tail")(prompts[0])
    assert torch.equal(empty[:, :sep], stock[:, :sep]) and torch.equal(empty[:, sep:], negative[:, sep:])
    quiet = pt.conditioner(pipe, "quiet tail")
    first, quiet_negative = quiet(prompts[0])
    second, _ = quiet(prompts[1])
    assert torch.allclose(first[:, :sep], stock[:, :sep], atol=1e-5)
    gap = lambda a, b: float((a[0, sep + 1:] - b[0, sep + 1:]).norm(dim=-1).mean())  # pads in both
    assert gap(first, second) < 0.05 * gap(stock, pt.conditioner(pipe, "stock")(prompts[1])[0])
    assert gap(first, quiet_negative) < 0.05 * gap(stock, negative)


def test_tail_probe_runs_the_evaluation_prompts(capsys):
    from playground.starter import probe_tail as pt

    pt.main(["--single", "2", "--two", "1", "--settings", "stock,quiet tail"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["stock", "quiet tail"]
    assert all("colour" in line and "two objects right" in line and "of 1" in line for line in lines)
    pt.main(["--task", "inpaint", "--cases", "2", "--settings", "empty tail"])
    line = capsys.readouterr().out.strip()
    assert line.startswith("empty tail: right inside mask ") and "captions of 2-3 objects" in line
