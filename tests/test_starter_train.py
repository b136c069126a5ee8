"""Training state: a run saves weights, EMA and the optimiser's moments and resumes from them,
even when it regroups its parameters (the layout run gives its gated layers their own rate)."""
from __future__ import annotations

import argparse
import json
import random
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from playground.starter import models, train
from playground.starter.world import random_scene, render


def two_layers():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))


def saved_after_one_step(path: str, step: int):
    """A model and its optimiser after one step, saved to `path` as a training run does."""
    model = two_layers()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loss = model(torch.ones(5, 3)).square().mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    train.save_state(path, {"m": model}, {}, opt, step=step)
    return model, opt


def regrouped(model):
    """An optimiser over the same parameters in another order and grouping."""
    first, second = list(model[0].parameters()), list(model[1].parameters())
    return torch.optim.AdamW([{"params": second}, {"params": first, "lr_scale": 10.0}], lr=1e-2)


def test_moments_resume_by_name_when_the_parameters_are_regrouped(tmp_path):
    path = str(tmp_path / "state.safetensors")
    model, opt = saved_after_one_step(path, step=1)

    again = two_layers()
    new_opt = regrouped(again)
    assert train.load_state(path, {"m": again}, {}, new_opt) == 1
    assert torch.equal(again[0].weight, model[0].weight)
    for name, p in again.named_parameters():
        saved = dict(model.named_parameters())[name]
        assert torch.equal(new_opt.state[p]["exp_avg"], opt.state[saved]["exp_avg"]), name


def test_states_saved_by_position_still_load(tmp_path):
    path = str(tmp_path / "old.safetensors")
    model, opt = saved_after_one_step(path, step=3)
    tensors = load_file(path)  # rewrite the moments the way older runs saved them
    names = [n for n, _ in model.named_parameters()]
    for key in [k for k in tensors if k.startswith("opt.")]:
        name, moment = key[len("opt.m."):].rsplit(".", 1)
        tensors[f"opt.{names.index(name)}.{moment}"] = tensors.pop(key)
    save_file(tensors, path, metadata={"step": "3"})

    again = two_layers()  # and into a regrouped optimiser, as the layout run did
    opt2 = regrouped(again)
    assert train.load_state(path, {"m": again}, {}, opt2) == 3
    for (name, p), (_, saved) in zip(again.named_parameters(), model.named_parameters()):
        assert torch.equal(opt2.state[p]["exp_avg_sq"], opt.state[saved]["exp_avg_sq"]), name


@pytest.mark.filterwarnings("ignore:.*meta parameter")
def test_a_resumed_ema_lives_on_its_models_device(tmp_path):
    """On a GPU the model is moved before its state loads; the EMA must follow it there
    (it stayed on the CPU once, and the first EMA update failed)."""
    path = str(tmp_path / "state.safetensors")
    model = two_layers()
    train.save_state(path, {"m": model}, {"m": train.Ema(model, 0.9)},
                     torch.optim.AdamW(model.parameters()), step=2)

    again = two_layers().to("meta")  # a device other than the CPU the state was saved from
    ema = train.Ema(again, 0.9)
    train.load_state(path, {"m": again}, {"m": ema}, torch.optim.AdamW(again.parameters()))
    assert {v.device.type for v in ema.shadow.values()} == {"meta"}
    ema.update(again, 3)


def test_a_large_cache_is_drawn_in_parallel_in_order():
    rng = random.Random(5)
    chunks = [[random_scene(rng) for _ in range(n)] for n in (4, 4, 3)]
    parallel = list(train.rendered_chunks(chunks, 32, parallel_above=0))
    assert [len(p) for p in parallel] == [4, 4, 3]
    for drawn, chunk in zip(parallel, chunks):
        for pixels, scene in zip(drawn, chunk):
            assert np.array_equal(pixels, np.asarray(render(scene, 32)))
    as_tensor = train.pixels_to_tensor(parallel[0])
    assert torch.equal(as_tensor[0], train.to_tensor(render(chunks[0][0], 32)))


@pytest.mark.parametrize("depth", [0, 3])
def test_prefetched_batches_are_the_ones_made_in_line(depth):
    rng = random.Random(7)
    batches = train.Prefetch(lambda step: (step, rng.random()), first=5, depth=depth)
    made = [batches() for _ in range(6)]
    again = random.Random(7)
    assert made == [(5 + i, again.random()) for i in range(6)]


def test_a_failed_batch_is_raised_in_the_training_loop():
    def make(step):
        if step == 2:
            raise ValueError("bad scene")
        return step

    batches = train.Prefetch(make, first=0, depth=2)
    assert [batches(), batches()] == [0, 1]
    with pytest.raises(ValueError, match="bad scene"):
        batches()


def test_closing_a_prefetch_stops_its_thread_even_with_the_queue_full():
    batches = train.Prefetch(lambda step: step, first=0, depth=2)
    assert batches() == 0
    time.sleep(0.05)  # the thread fills the queue and waits to put the next one
    batches.close()
    assert not batches.thread.is_alive()


def test_x0_weight_floor_raises_only_the_high_noise_weights():
    sched = models.build_scheduler()
    t = torch.arange(0, 1000, 37)
    ac = sched.alphas_cumprod[t]
    snr = ac / (1 - ac)
    plain = train.loss_weight(sched, t)
    assert torch.equal(plain, train.min_snr_weight(sched, t))
    train.set_x0_floor(0.5)
    try:
        floored = train.loss_weight(sched, t)
    finally:
        train.set_x0_floor(0.0)
    assert torch.all(floored * snr >= 0.5 - 1e-4)  # the picture's error weighs at least 0.5
    assert torch.equal(floored[snr >= 0.5], plain[snr >= 0.5])
    assert floored[-1] > 50 * plain[-1]  # t 999: SNR 0.005


def test_high_noise_share_draws_that_share_of_timesteps_from_t_800_up():
    sched = models.build_scheduler()
    torch.manual_seed(0)
    uniform = torch.randint(0, 1000, (20000,))
    torch.manual_seed(0)
    assert torch.equal(train.training_timesteps(20000, sched, "cpu"), uniform)  # share 0: as before
    train.set_high_noise_share(0.5)
    try:
        t = train.training_timesteps(20000, sched, "cpu")
    finally:
        train.set_high_noise_share(0.0)
    assert t.min() >= 0 and t.max() == 999
    high = (t >= train.HIGH_NOISE_FROM).float().mean().item()
    assert abs(high - (0.5 + 0.5 * 0.2)) < 0.02  # half redrawn high, a fifth of the rest high anyway
    assert abs((t < 100).float().mean().item() - 0.05) < 0.01  # the rest still uniform


def test_cell_attention_loss_counts_only_the_cell_words_of_high_noise_samples():
    from playground.starter.world import Obj, Scene
    tok = models.build_tokenizer()
    attention = train.AttentionSupervision("text2img", models.build_unet("text2img"), tok, 0.0,
                                           record=True)
    cells = train.CellAttentionSupervision(attention, 2.0)
    texts = ["a red circle in the top left"] * 2
    scenes = [Scene("white", [Obj("red", "circle", (0.0, 0.0, 0.5, 0.5))])] * 2
    targets, cell_words = attention.targets(texts, scenes), cells.targets(texts)
    attention.recorder.records[:] = [torch.full((2, 64, 77), 1 / 77)]  # spread evenly
    loss = torch.tensor(1.0)
    both_high = cells.added_to(loss, 0, targets, cell_words, torch.tensor([999, 900]))
    one_high = cells.added_to(loss, 0, targets, cell_words, torch.tensor([999, 10]))
    none_high = cells.added_to(loss, 0, targets, cell_words, torch.tensor([10, 799]))
    assert float(both_high) == pytest.approx(1 + 2 * 0.75)  # 3/4 of the mass outside the box
    assert float(one_high) == pytest.approx(1 + 2 * 0.75)   # a mean over the counted tokens
    assert float(none_high) == 1.0
    off = train.CellAttentionSupervision(attention, 0.0)
    assert off.targets(texts) is None and off.timesteps(2, models.build_scheduler(), "cpu") is None
    assert off.added_to(loss, 0, targets, None, None) is loss


def test_crowding_loss_adds_the_weighted_cell_share_and_is_off_at_zero():
    from playground.starter.world import Obj, Scene
    tok = models.build_tokenizer()
    attention = train.AttentionSupervision("text2img", models.build_unet("text2img"), tok, 0.0,
                                           record=True)
    crowding = train.CrowdingSupervision(attention, 2.0)
    texts = ["a red circle in the top left"] * 2
    scenes = [Scene("white", [Obj("red", "circle", (0.0, 0.0, 0.5, 0.5))])] * 2
    targets, phrases = attention.targets(texts, scenes), crowding.targets(texts)
    attention.recorder.records[:] = [torch.full((2, 64, 77), 1 / 77)]  # spread evenly
    loss = torch.tensor(1.0)
    assert float(crowding.added_to(loss, 0, targets, phrases)) == pytest.approx(1 + 2 * 0.5)
    off = train.CrowdingSupervision(attention, 0.0)
    assert off.targets(texts) is None and off.added_to(loss, 0, targets, None) is loss


def test_own_words_loss_adds_the_weighted_foreign_share_and_is_off_at_zero():
    from playground.starter.world import Obj, Scene
    tok = models.build_tokenizer()
    attention = train.AttentionSupervision("layout", models.build_unet("layout"), tok, 0.0, record=True)
    own_words = train.OwnWordsSupervision(attention, 2.0, n_objects=3)
    texts = ["a red circle in the top left"] * 2
    scenes = [Scene("white", [Obj("red", "circle", (0.0, 0.0, 0.5, 0.5))])] * 2
    ids = train.tokens(tok, texts, "cpu")
    targets = own_words.targets(texts, scenes, ids)
    tail = int(targets[3][0].sum())  # [SEP] and the pads
    attention.recorder.records[:] = [torch.full((2, 64, 77), 1 / 77)]  # spread evenly
    loss = torch.tensor(1.0)
    assert float(own_words.added_to(loss, 0, targets)) == pytest.approx(1 + 2 * tail / 77)
    off = train.OwnWordsSupervision(attention, 0.0, n_objects=3)
    assert off.targets(texts, scenes, ids) is None and off.added_to(loss, 0, None) is loss
    assert train.parser().parse_args(["layout", "--own-words-loss", "0.1"]).own_words_loss == 0.1
    strict = train.OwnWordsSupervision(attention, 2.0, n_objects=3, strict=True)
    strict_targets = strict.targets(texts, scenes, ids)
    assert strict_targets[3] is None
    own = int((strict_targets[2][0] == 0).sum())  # "red", "circle", "top", "left"
    assert float(strict.added_to(loss, 0, strict_targets)) == pytest.approx(1 + 2 * (77 - own) / 77)


def test_hold_tail_measures_only_the_outputs_after_the_captions_words():
    tok = models.build_tokenizer()
    off = train.TailHold(0.0, tok, "cpu")
    hold = train.TailHold(0.0, tok, "cpu")
    torch.manual_seed(0)
    hold.weight, hold.shared = 2.0, models.build_text_encoder(tok).eval()
    ids = train.tokens(tok, ["a red circle in the top left"], "cpu")  # 7 words, [SEP] at 8
    with torch.no_grad():
        same = hold.shared(ids)[0]
    assert hold.after_words(ids)[0, :, 0].nonzero().min() == 8
    loss = torch.tensor(1.0)
    assert float(hold.added_to(loss, 0, ids, same)) == pytest.approx(1.0)
    words_moved = same.clone()
    words_moved[:, 1:8] += 5
    assert float(hold.added_to(loss, 0, ids, words_moved)) == pytest.approx(1.0)
    tail_moved = same.clone()
    tail_moved[:, 8:] *= 2  # moved by its own size
    assert float(hold.added_to(loss, 0, ids, tail_moved)) == pytest.approx(1 + 2 * 1.0)
    assert off.shared is None and off.added_to(loss, 0, ids, same) is loss


def test_low_noise_share_draws_that_share_of_levels_near_the_default():
    torch.manual_seed(0)
    plain = train.low_res_noise_levels(20000, 0.0, "cpu")
    half = train.low_res_noise_levels(20000, 0.5, "cpu")
    assert plain.min() >= 0 and plain.max() == 350 and half.max() == 350
    near = (half <= 40).float().mean().item()
    assert abs(near - (0.5 + 0.5 * 41 / 351)) < 0.02
    assert abs((plain <= 40).float().mean().item() - 41 / 351) < 0.01


def test_decoder_only_fine_tuning_keeps_the_encoder_and_the_scaling_factor(tmp_path, monkeypatch):
    from safetensors import safe_open

    monkeypatch.setattr(train, "RUNS", str(tmp_path))
    torch.manual_seed(0)
    shipped, raw = models.build_vae(), models.build_vae()  # EMA and a raw encoder that differs
    opt = torch.optim.AdamW(raw.parameters())
    (tmp_path / "vae").mkdir()
    path = str(tmp_path / "vae" / "state.safetensors")
    train.save_state(path, {"vae": raw}, {"vae": train.Ema(shipped, 0.998)}, opt, step=10,
                     extra={"scaling_factor": 0.75})

    train.main(["vae", "--decoder-only", "--max-steps", "12", "--batch", "2", "--crop", "32"])

    after = load_file(path)
    with safe_open(path, "pt") as f:
        assert f.metadata()["step"] == "12" and float(f.metadata()["scaling_factor"]) == 0.75
    before = shipped.state_dict()
    for key, value in before.items():
        if key.startswith(("encoder.", "quant_conv.")):
            assert torch.equal(after[f"vae.{key}"], value), key
            assert torch.allclose(after[f"ema_vae.{key}"], value), key
    trained = raw.state_dict()["decoder.conv_out.weight"]
    assert not torch.equal(after["vae.decoder.conv_out.weight"], trained)  # the decoder did learn


def test_trained_minutes_count_the_shipped_minutes_after_a_fresh_clone(tmp_path, monkeypatch):
    monkeypatch.setattr(train, "RUNS", str(tmp_path))
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "log.txt").write_text(
        "[01:00:00] vae: step 50 loss 0.1 (3.0 min, 1.0 s/step)\n"
        "[01:00:00] vae: stopped at step 50\n"  # an older run, before the weights shipped
        "[02:00:00] vae: state recreated from the shipped weights at step 844 after 19.5 min\n"
        "[02:00:01] vae: resumed at step 844\n"
        "[02:10:00] vae: step 900 loss 0.02 (10.0 min, 1.6 s/step)\n"
        "[02:12:00] vae: stopped at step 950\n"
        "[03:00:00] vae: resumed at step 950\n"
        "[03:01:00] vae: step 1000 loss 0.02 (1.5 min, 1.6 s/step)\n")
    assert train.trained_minutes("vae") == 31.0


def test_text2img_with_a_text_encoder_of_its_own_exports_it_apart_from_the_shared_one(tmp_path, monkeypatch):
    """--own-text keeps the shared encoder in runs/text; export then stores text2img's own
    encoder in text2img/ and the shared one once, in layout/, linked from inpaint/ and
    upscale/; tokenizer and VAE stay in text2img/. A fresh clone gets runs/text back."""
    import os
    monkeypatch.setattr(train, "RUNS", str(tmp_path / "runs"))
    for task in ("vae", "text2img", "layout", "inpaint", "upscale"):
        assert train.state_from_shipped(task, train.WEIGHTS)
    assert not train.state_from_shipped("text", train.WEIGHTS) or train.own_text_encoder(train.WEIGHTS)
    layout_state = str(tmp_path / "runs" / "layout" / "state.safetensors")
    save_file(load_file(layout_state), layout_state, metadata={"step": "9"})  # reads the shared one
    t2i_state = tmp_path / "runs" / "text2img" / "state.safetensors"
    shared = train.ema_text_weights(str(t2i_state))
    if train.own_text_encoder(train.WEIGHTS):  # the shipped set has its own already
        shared = train.ema_text_weights(train.shared_text_state())
    else:
        train.fork_shared_text()
    assert os.path.exists(tmp_path / "runs" / "text" / "state.safetensors")
    tensors = load_file(t2i_state)
    own = {k: v + 0.01 for k, v in tensors.items() if k.startswith("ema_text.") and v.is_floating_point()}
    save_file({**tensors, **own}, t2i_state, metadata={"step": "5"})

    out = tmp_path / "weights"
    train.export(argparse.Namespace(weights=str(out)))
    real = lambda task, part: os.path.realpath(out / task / part)
    assert not os.path.islink(out / "text2img" / "text_encoder")
    assert not os.path.islink(out / "layout" / "text_encoder")
    for task in ("inpaint", "upscale"):
        assert real(task, "text_encoder") == real("layout", "text_encoder")
    for task in ("layout", "inpaint", "upscale"):
        assert real(task, "tokenizer") == real("text2img", "tokenizer")
    assert real("layout", "vae") == real("text2img", "vae") != real("upscale", "vae")
    assert train.own_text_encoder(str(out)) == real("text2img", "text_encoder")

    monkeypatch.setattr(train, "RUNS", str(tmp_path / "fresh"))  # a fresh clone of that set
    assert train.state_from_shipped("text", str(out))
    again = train.ema_text_weights(train.shared_text_state())
    assert all(torch.allclose(again[k], shared[k].half().float()) for k in shared)


@pytest.mark.parametrize("readers", [(), ("layout",), ("layout", "inpaint")])
def test_models_that_read_text2imgs_own_text_encoder_ship_linked_to_it(tmp_path, monkeypatch, readers):
    """--text-of-text2img: a layout or inpaint run keeps the choice in its state; export
    links those pipelines' text encoder to text2img's own and stores the shared one once,
    in the first other folder; a fresh clone of that set reads the choices back."""
    import os
    monkeypatch.setattr(train, "RUNS", str(tmp_path / "runs"))
    assert train.own_text_encoder(train.WEIGHTS)  # the shipped set has text2img's own encoder
    for task in ("vae", "text", "text2img", "layout", "inpaint", "upscale"):
        assert train.state_from_shipped(task, train.WEIGHTS)
    shared = train.ema_text_weights(train.shared_text_state())
    for task in ("layout", "inpaint"):
        state = str(tmp_path / "runs" / task / "state.safetensors")
        which = {"text": json.dumps("text2img")} if task in readers else {}
        save_file(load_file(state), state, metadata={"step": "9", **which})
        assert train.reads_own_text(task) == (task in readers)

    out = tmp_path / "weights"
    train.export(argparse.Namespace(weights=str(out)))
    real = lambda task, part: os.path.realpath(out / task / part)
    others = [t for t in ("layout", "inpaint", "upscale") if t not in readers]
    for task in readers:
        assert real(task, "text_encoder") == real("text2img", "text_encoder")
        assert train.ships_own_text(str(out), task)
    assert not os.path.islink(out / others[0] / "text_encoder")
    for task in others:
        assert real(task, "text_encoder") == real(others[0], "text_encoder") != real("text2img", "text_encoder")
        assert not train.ships_own_text(str(out), task)
    assert train.own_text_encoder(str(out)) == real("text2img", "text_encoder")

    monkeypatch.setattr(train, "RUNS", str(tmp_path / "fresh"))  # a fresh clone of that set
    for task in ("text", "text2img", "layout", "inpaint"):
        assert train.state_from_shipped(task, str(out))
    assert [t for t in ("layout", "inpaint") if train.reads_own_text(t)] == list(readers)
    again = train.ema_text_weights(train.shared_text_state())
    assert all(torch.allclose(again[k], shared[k].half().float()) for k in shared)


def test_export_writes_only_the_pipelines_that_have_a_state(tmp_path, monkeypatch):
    """An experiment's runs folder may hold text2img's state alone: export writes that
    pipeline and skips the others, instead of failing on their missing states."""
    import os
    monkeypatch.setattr(train, "RUNS", str(tmp_path / "runs"))
    for task in ("vae", "text2img"):
        assert train.state_from_shipped(task, train.WEIGHTS)
    out = tmp_path / "weights"
    train.export(argparse.Namespace(weights=str(out)))
    assert sorted(p.name for p in out.iterdir()) == ["text2img", "training.json"]
    assert not os.path.islink(out / "text2img" / "text_encoder")
    with open(out / "training.json") as f:
        assert sorted(json.load(f)["steps"]) == ["text2img", "vae"]


def test_cell_words_only_trains_the_cell_words_rows_and_leaves_the_object_words_outputs(monkeypatch):
    """--cell-words-only: one optimiser step changes only the cell words' input embeddings,
    so the encoder's outputs at the words before the cell phrase stay exactly the same."""
    torch.manual_seed(0)
    tok = models.build_tokenizer()
    te = models.build_text_encoder(tok)
    before_table = te.get_input_embeddings().weight.detach().clone()
    before_weights = {k: v.clone() for k, v in te.state_dict().items()}
    train.train_only_cell_words(te, tok)
    ids = train.tokens(tok, ["a red circle in the top left on a white background"], "cpu")
    with torch.no_grad():
        before_out = te(ids)[0]
    opt = torch.optim.AdamW([p for p in te.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    te(ids)[0].square().sum().backward()
    opt.step()

    table = te.get_input_embeddings().weight.detach()
    changed = (table != before_table).any(dim=1).nonzero().flatten().tolist()
    assert changed == sorted(tok.convert_tokens_to_ids(["top", "left"]))
    assert set(changed) <= set(train.cell_word_ids(tok))
    for key, value in te.state_dict().items():
        if not key.endswith("embeddings.token_embedding.weight"):
            assert torch.equal(value, before_weights[key]), key
    with torch.no_grad():
        after_out = te(ids)[0]
    first_cell = tok.tokenize("a red circle in the top left").index("top") + 1  # after the start token
    assert torch.equal(after_out[0, :first_cell], before_out[0, :first_cell])  # "a red circle in the"
    assert not torch.allclose(after_out[0, first_cell], before_out[0, first_cell])


def test_quiet_tail_makes_the_outputs_from_sep_on_the_same_for_every_caption():
    """--quiet-tail: with [SEP] and [PAD] embedded 1000 long, the encoder's outputs from [SEP]
    on no longer tell two captions apart, the words' outputs stay bit for bit, and the EMA
    gets the same rows (asking twice changes nothing)."""
    torch.manual_seed(0)
    tok = models.build_tokenizer()
    te = models.build_text_encoder(tok).eval()
    ema = train.Ema(te, 0.999)
    captions = ["a large blue circle in the top left and a small yellow square", "a red triangle"]
    ids = train.tokens(tok, captions, "cpu")
    words = len(tok.tokenize(captions[0])) + 1  # the start token too
    with torch.no_grad():
        before = te(ids)[0]
        train.quieten_tail(te, tok, 1000.0, ema)
        train.quieten_tail(te, tok, 1000.0, ema)
        after = te(ids)[0]
    assert torch.equal(after[0, :words], before[0, :words])
    tail_gap = lambda out: (out[0, words + 1:] - out[1, words + 1:]).norm(dim=-1).mean()
    assert tail_gap(after) < 0.01 * tail_gap(before)
    table = te.get_input_embeddings().weight
    ids_tail = tok.convert_tokens_to_ids(list(train.TAIL_TOKENS))
    assert torch.allclose(table[ids_tail].norm(dim=1), torch.tensor([1000.0, 1000.0]))
    assert torch.equal(ema.shadow[train.embedding_key(ema)], table)


def shipped_step(task: str) -> int:
    with open(train.os.path.join(train.WEIGHTS, "training.json")) as f:
        return json.load(f)["steps"][task]


@pytest.mark.parametrize("unet_held", [["--freeze-unet"], ["--unet-lr-scale", "0"]])
def test_text2img_with_a_frozen_unet_and_cell_words_only_changes_only_the_cell_words_rows(
        tmp_path, monkeypatch, unet_held):
    """`train text2img --own-text --cell-words-only --freeze-unet` (or a UNet learning
    rate of 0), two steps from the shipped state: the UNet stays as shipped, and of text2img's own encoder only cell words'
    embedding rows move; the shared encoder is kept in runs/text."""
    monkeypatch.setattr(train, "RUNS", str(tmp_path))
    train.main(["text2img", "--own-text", "--cell-words-only", *unet_held, "--cell-attention-loss", "1",
                "--high-noise-share", "1", "--cache", "16", "--batch", "4", "--lr", "1e-2",
                "--max-steps", str(shipped_step("text2img") + 2), "--prefetch", "0"])
    after = load_file(str(tmp_path / "text2img" / "state.safetensors"))
    shared = train.ema_text_weights(str(tmp_path / "text" / "state.safetensors"))
    own = train.ema_text_weights(str(tmp_path / "text2img" / "state.safetensors"))
    same = lambda a, b: torch.allclose(a, b, rtol=1e-5, atol=1e-7)  # the EMA's rounding only
    assert all(same(own[k], v) for k, v in shared.items() if not k.endswith("token_embedding.weight"))
    key = next(k for k in own if k.endswith("token_embedding.weight"))
    moved = ((own[key] - shared[key]).abs() > 1e-5).any(dim=1).nonzero().flatten().tolist()
    assert moved and set(moved) <= set(train.cell_word_ids(models.build_tokenizer()))
    unet = train.ema_unet_weights("text2img")
    fresh = tmp_path / "fresh"
    monkeypatch.setattr(train, "RUNS", str(fresh))
    assert train.state_from_shipped("text2img", train.WEIGHTS)
    assert all(same(unet[k], v) for k, v in train.ema_unet_weights("text2img").items())


def test_anneal_to_lowers_the_rate_linearly_over_the_run(tmp_path, monkeypatch):
    assert train.annealed(3e-4, 0.0, 0.1) == 3e-4
    assert train.annealed(3e-4, 2.0, 0.1) == pytest.approx(3e-5)  # never below the end rate
    assert train.annealed(3e-4, 0.5, 0.1) == pytest.approx(3e-4 * 0.55)
    assert train.annealed(3e-4, 0.7, 1.0) == 3e-4  # the default keeps it constant

    monkeypatch.setattr(train, "RUNS", str(tmp_path))
    args = argparse.Namespace(lr=1e-2, anneal_to=0.1, minutes=60, max_steps=500)
    model = two_layers()
    loop = train.Loop("toy", args, {"m": model}, {}, list(model.parameters()))
    loop.step = 300  # resumed: the run's 200 steps are what the rate falls over
    rates = []

    def loss_fn(step):
        rates.append(loop.opt.param_groups[0]["lr"])
        return model(torch.ones(2, 3)).square().mean()

    loop.run(loss_fn)
    assert loop.step == 500 and rates[0] == pytest.approx(1e-2)
    assert rates[100] == pytest.approx(1e-2 * 0.55) and rates[-1] == pytest.approx(1e-2 * (1 - 0.9 * 199 / 200))


def centre_in_a_box(mask: torch.Tensor, objects) -> bool:
    """Whether the centre of the mask's white pixels lies inside one of the objects' boxes."""
    ys, xs = np.nonzero(mask[0].numpy() > 0.5)
    cx, cy = xs.mean() / 64, ys.mean() / 64
    return any(x0 - 0.02 <= cx <= x1 + 0.02 and y0 - 0.02 <= cy <= y1 + 0.02
               for x0, y0, x1, y1 in (o.box for o in objects))


def test_binding_share_hides_one_object_of_a_crowded_scene():
    import random

    from playground.starter.train import inpaint_batch
    from playground.starter.world import random_scene

    rng = random.Random(3)
    scenes = [random_scene(rng, n_objects=1 + i % 3) for i in range(30)]
    crowded = [i for i, s in enumerate(scenes) if len(s.objects) > 1]
    idx, masks, _, _ = inpaint_batch(rng, scenes, crowded, 64, binding_share=1.0)
    assert masks.shape == (64, 1, 64, 64) and set(idx) <= set(crowded)
    for i, mask in zip(idx, masks):
        assert centre_in_a_box(mask, scenes[i].objects)  # the mask hides one of the objects
    idx, _, _, _ = inpaint_batch(random.Random(4), scenes, crowded, 64, binding_share=0.0)
    assert set(idx) - set(crowded)  # without it, one-object scenes come too


def test_article_share_captions_an_orange_object_on_a_stated_background():
    import random

    from playground.starter.captions import parse
    from playground.starter.train import (an_object_and_a_background, captioned_batch, captions_for,
                                          with_an_orange_object)
    from playground.starter.world import random_scene

    rng = random.Random(5)
    scenes = [random_scene(rng) for _ in range(300)]
    orange = with_an_orange_object(scenes)
    idx, texts = captioned_batch(random.Random(6), scenes, 64, orange, article_share=1.0)
    assert set(idx) <= set(orange)
    for i, text in zip(idx, texts):
        read = parse(text)
        assert " an orange " in f" {text} " and not text.endswith("an orange background"), text
        assert read["background"] == scenes[i].background, text
        assert "orange" in [o["colour"] for o in read["objects"]], text
    assert an_object_and_a_background("an orange circle on a white background")
    assert not an_object_and_a_background("an orange circle")
    assert not an_object_and_a_background("a red circle on an orange background")
    # at share 0 the batch is drawn exactly as before the share existed: text2img's with 10%
    # empty captions, layout's with 30%
    for seed, p_empty in ((7, 0.1), (8, 0.3)):
        old = random.Random(seed)
        old_idx = [old.randrange(len(scenes)) for _ in range(32)]
        assert captioned_batch(random.Random(seed), scenes, 32, orange, 0.0, p_empty) == (
            old_idx, captions_for([scenes[i] for i in old_idx], old, p_empty))


def test_inpaint_article_share_hides_an_orange_object_called_an_orange_shape():
    import random

    from playground.starter.captions import parse
    from playground.starter.train import captions_for, inpaint_batch, random_mask, with_an_orange_object
    from playground.starter.world import random_scene

    rng = random.Random(8)
    scenes = [random_scene(rng) for _ in range(300)]
    crowded = [i for i, s in enumerate(scenes) if len(s.objects) > 1]
    orange = with_an_orange_object(scenes)
    idx, masks, texts, _ = inpaint_batch(random.Random(9), scenes, crowded, 48, 0.6, orange, article_share=1.0)
    assert set(idx) <= set(orange)
    for i, mask, text in zip(idx, masks, texts):
        assert centre_in_a_box(mask, [o for o in scenes[i].objects if o.colour == "orange"])
        assert " an orange " in f" {text} " and not text.endswith("an orange background"), text
        assert "orange" in [o["colour"] for o in parse(text)["objects"]], text
    # at article share 0 the batch is drawn exactly as before that share existed
    old = random.Random(10)
    old_idx, old_masks = [], []
    for _ in range(32):
        binding = old.random() < 0.6
        old_idx.append(old.choice(crowded) if binding else old.randrange(len(scenes)))
        old_masks.append(random_mask(old, scenes[old_idx[-1]], over_object=binding))
    old_texts = captions_for([scenes[i] for i in old_idx], old)
    idx, masks, texts, told = inpaint_batch(random.Random(10), scenes, crowded, 32, 0.6, orange, 0.0)
    assert (idx, texts) == (old_idx, old_texts) and torch.equal(masks, torch.stack(old_masks))
    assert told == [scenes[i] for i in idx]  # every caption tells of its whole scene


def test_focus_share_hides_one_object_and_names_only_it():
    import random

    from playground.starter.captions import parse
    from playground.starter.train import inpaint_batch
    from playground.starter.world import random_scene

    rng = random.Random(11)
    scenes = [random_scene(rng) for _ in range(200)]
    crowded = [i for i, s in enumerate(scenes) if len(s.objects) > 1]
    idx, masks, texts, told = inpaint_batch(random.Random(12), scenes, crowded, 48, 0.6, (), 0.0,
                                            focus_share=1.0)
    assert set(idx) <= set(crowded)
    for i, mask, text, scene in zip(idx, masks, texts, told):
        (hidden,) = scene.objects  # the caption tells of one object of the crowded scene ...
        assert hidden in scenes[i].objects and scene.background == scenes[i].background
        assert centre_in_a_box(mask, [hidden])  # ... the one the mask hides ...
        read = parse(text)
        assert len(read["objects"]) == 1 and read["objects"][0]["shape"] == hidden.shape, text
        assert read["objects"][0]["colour"] in (None, hidden.colour), text  # ... and never empty
    # at focus share 0 the batch is drawn exactly as without it
    assert inpaint_batch(random.Random(13), scenes, crowded, 16, 0.6, (), 0.0, 0.0)[2] == \
        inpaint_batch(random.Random(13), scenes, crowded, 16, 0.6)[2]


def test_every_stage_of_train_all_sh_parses_with_trains_own_options():
    import re
    import shlex
    from pathlib import Path

    script = Path(train.__file__).with_name("train_all.sh").read_text().replace("\\\n", " ")
    stages = [line.split(None, 1)[1] for line in script.splitlines() if line.startswith("$T ")]
    assert [s.split()[0] for s in stages] == ["vae", "text2img", "layout", "inpaint", "text2img", "text2img",
                                              "layout", "layout", "upscale", "vae", "export"]
    # an unknown or misspelt flag makes the parser exit
    parsed = [train.parser().parse_args(shlex.split(re.sub(r'"\$\(m ([\d.]+)\)"', r"\1", stage).rstrip("& ")))
              for stage in stages]
    assert all(args.minutes > 0 for args in parsed)
    layout = parsed[2]  # the shipped layout recipe (MODEL_CARD, Training, "on a GPU")
    assert (layout.gated_lr_scale, layout.open_gates, layout.grounding_loss, layout.x0_weight_floor) == (10, 0.1, 0.05, 0.5)
    cells, held = parsed[4:6]  # the shipped cell-word recipe (MODEL_CARD, Training, "Cell words")
    assert cells.own_text and cells.cell_words_only and held.own_text and held.cell_words_only
    assert (cells.hold_tail, held.hold_tail, held.unet_lr_scale, held.cell_attention_loss) == (0, 10, 0.03, 1)
    rebase, more = parsed[6:8]  # layout on text2img's layers and encoder (MODEL_CARD, Training, "Layout and
    # inpainting on text-to-image's own text encoder"): the once-only flags on the first stage alone
    assert rebase.base_from_text2img and rebase.text_of_text2img
    assert not (more.base_from_text2img or more.text_of_text2img)
    assert (rebase.lr, rebase.gated_lr_scale, more.lr, more.gated_lr_scale) == (3e-5, 100, 3e-5, 100)


def test_layout_gives_gated_layers_and_cross_attention_queries_and_keys_their_own_rates():
    args = train.parser().parse_args(["layout", "--lr", "3e-5", "--gated-lr-scale", "100",
                                      "--cross-attention-lr-scale", "10"])
    unet = models.build_unet("layout")
    base, gated, places = train.layout_param_groups(unet, args)
    names = {id(p): n for n, p in unet.named_parameters()}
    # the three groups share out every parameter once
    assert sorted(map(id, base["params"] + gated["params"] + places["params"])) == sorted(names)
    assert (gated["lr_scale"], places["lr_scale"]) == (100, 10) and "lr_scale" not in base
    assert all(".fuser." in names[id(p)] or names[id(p)].startswith("position_net.") for p in gated["params"])
    place_names = [names[id(p)] for p in places["params"]]
    assert place_names and all(".attn2.to_q." in n or ".attn2.to_k." in n for n in place_names)
    assert not any(".attn2.to_v." in names[id(p)] for p in places["params"] + gated["params"])
    # by default they learn at the base layers' rate, as every run before the option did
    assert train.layout_param_groups(unet, train.parser().parse_args(["layout"]))[2]["lr_scale"] == 1.0


def test_layout_takes_text2imgs_base_keeps_its_gated_layers_and_can_open_or_hold_its_gates(tmp_path, monkeypatch):
    from types import SimpleNamespace

    monkeypatch.setattr(train, "RUNS", str(tmp_path))
    (tmp_path / "layout").mkdir()
    torch.manual_seed(1)
    text2img = models.build_unet("text2img")
    (tmp_path / "text2img").mkdir()
    train.save_state(str(tmp_path / "text2img" / "state.safetensors"), {"unet": text2img},
                     {"unet": train.Ema(text2img, 0.999)}, torch.optim.AdamW(text2img.parameters()), 5)
    torch.manual_seed(2)
    layout = models.build_unet("layout")
    gated_before = {n: p.detach().clone() for n, p in layout.named_parameters() if ".fuser." in n}
    loop = SimpleNamespace(modules={"unet": layout}, emas={"unet": train.Ema(layout, 0.999)},
                           opt=torch.optim.AdamW(layout.parameters()), step=7)

    def gated(name):
        return ".fuser." in name or name.startswith("position_net.")

    train.base_from_text2img(loop, gated)
    base = dict(text2img.named_parameters())
    for name, p in layout.named_parameters():
        if gated(name):
            continue
        assert torch.equal(p, base[name]) and torch.equal(loop.emas["unet"].shadow[name], base[name])
    assert all(torch.equal(dict(layout.named_parameters())[n], v) for n, v in gated_before.items())

    train.open_gates(loop, 0.1)
    gates = [p for n, p in layout.named_parameters() if n.endswith((".alpha_attn", ".alpha_dense"))]
    assert gates and all(torch.allclose(torch.tanh(g), torch.tensor(0.1)) for g in gates)

    train.hold_gates(loop, 0.2)
    layout(torch.randn(1, 4, 16, 16), 500, torch.randn(1, 16, layout.config.cross_attention_dim),
           cross_attention_kwargs={"gligen": {"boxes": torch.rand(1, 30, 4), "masks": torch.ones(1, 30),
                                              "positive_embeddings": torch.randn(1, 30, models.TEXT_WIDTH)}}
           ).sample.square().mean().backward()
    loop.opt.step()
    assert all(torch.allclose(torch.tanh(g), torch.tensor(0.2)) and g.grad is None for g in gates)
    assert loop.emas["unet"].shadow[[n for n, _ in layout.named_parameters() if n.endswith(".alpha_attn")][0]] \
        == pytest.approx(float(np.arctanh(0.2)))


@pytest.mark.parametrize("task, extra", [("layout", ["--base-from-text2img"]),
                                         ("inpaint", ["--cell-attention-loss", "1", "--high-noise-share", "1"])])
def test_layout_and_inpaint_runs_can_read_text2imgs_own_text_encoder(tmp_path, monkeypatch, task, extra):
    """Two steps of `train <task> --text-of-text2img` from the shipped state: the run keeps
    the choice in its state, a resumed run without the flag keeps reading that encoder, and
    inpaint's cell-word loss is measured on its cross-attention."""
    from safetensors import safe_open

    monkeypatch.setattr(train, "RUNS", str(tmp_path))
    read, labels = [], []
    trained_text = train.trained_text
    monkeypatch.setattr(train, "trained_text", lambda device, trainable, path=None: (
        read.append(path), trained_text(device, trainable, path))[1])
    tracked = train.tracked
    monkeypatch.setattr(train, "tracked", lambda history, value, step, task, label, *a: (
        labels.append(label), tracked(history, value, step, task, label, *a))[1])
    start = shipped_step(task)
    common = ["--cache", "16", "--batch", "4", "--prefetch", "0", "--attention-loss", "0.01"]
    train.main([task, "--text-of-text2img", *extra, *common, "--max-steps", str(start + 2)])
    with safe_open(str(tmp_path / task / "state.safetensors"), "pt") as f:
        assert f.metadata()["step"] == str(start + 2) and json.loads(f.metadata()["text"]) == "text2img"
    train.main([task, *common, "--max-steps", str(start + 3)])  # resumed, no flag
    assert read == [train.state_path("text2img")] * 2 and train.reads_own_text(task)
    assert "attention outside the boxes" in labels
    assert ("cell words' attention outside the boxes at high noise" in labels) == (task == "inpaint")


def test_layout_decoy_captions_tell_each_look_of_another_object_in_the_same_places():
    from playground.starter.captions import parse
    from playground.starter.world import Obj, Scene
    pair = Scene("white", [Obj("red", "circle", (0.05, 0.05, 0.3, 0.3)),
                           Obj("yellow", "square", (0.65, 0.05, 0.95, 0.35))])
    one = Scene("blue", [Obj("green", "triangle", (0.4, 0.4, 0.6, 0.6))])
    scenes = [pair, pair, pair, one]
    texts = ["a red circle in the top left and a yellow square in the top right", "", "x", "a green triangle"]
    boxed = [True, True, False, True]
    # share 0: nothing changes and nothing is drawn, so runs without the flag draw as before
    rng = random.Random(5)
    assert train.with_decoys(rng, scenes, texts, boxed, 0.0) == (texts, scenes)
    assert rng.random() == random.Random(5).random()
    for seed in range(20):
        decoys, told = train.with_decoys(random.Random(seed), scenes, texts, boxed, 1.0)
        # only a captioned scene of two or more objects with its boxes given gets a decoy
        assert decoys[1:] == texts[1:] and told[1:] == scenes[1:]
        said = told[0]
        assert said.background == pair.background
        assert [o.box for o in said.objects] == [o.box for o in pair.objects]
        # every colour is told of the other object; the shapes of either
        assert [o.colour for o in said.objects] == ["yellow", "red"]
        assert sorted(o.shape for o in said.objects) == ["circle", "square"]
        # the caption is one of the told scene, which the attention targets then follow
        named = parse(decoys[0])["objects"]
        assert len(named) == 2
        assert all(n["colour"] in (o.colour, None) and n["shape"] == o.shape
                   for n, o in zip(named, said.objects))
    # new looks: each object told a colour neither its own nor the background's
    for seed in range(20):
        decoys, told = train.with_decoys(random.Random(seed), scenes, texts, boxed, 1.0, new_looks=True)
        assert decoys[1:] == texts[1:]
        assert [o.box for o in told[0].objects] == [o.box for o in pair.objects]
        assert all(d.colour not in (o.colour, "white") for d, o in zip(told[0].objects, pair.objects))


def test_layout_phrase_gain_amplifies_what_sets_a_phrase_apart_and_keeps_the_mean_and_absent_objects():
    torch.manual_seed(0)
    unet = models.build_unet("layout")
    weights = {k: v.detach().clone() for k, v in unet.state_dict().items() if k in train.PHRASE_LAYER}
    n = weights["position_net.null_positive_feature"].numel()
    mean = torch.randn(n) * 10
    phrase, box = mean + torch.randn(n), torch.rand(weights["position_net.linears.0.weight"].shape[1] - n)

    def first_layer(w, e):
        return w["position_net.linears.0.weight"] @ torch.cat([e, box]) + w["position_net.linears.0.bias"]

    new = train.amplified_phrases(weights, mean, 5.0)
    before = first_layer(weights, phrase) - first_layer(weights, mean)
    assert torch.allclose(first_layer(new, mean), first_layer(weights, mean), atol=1e-3)
    assert torch.allclose(first_layer(new, phrase) - first_layer(new, mean), 5 * before, atol=1e-3)
    null = weights["position_net.null_positive_feature"]
    assert torch.allclose(first_layer(new, new["position_net.null_positive_feature"]),
                          first_layer(weights, null), atol=1e-3)
    # gain 1 changes nothing
    same = train.amplified_phrases(weights, mean, 1.0)
    assert all(torch.allclose(same[k], weights[k]) for k in weights)
    assert len(set(train.every_layout_phrase())) == len(train.every_layout_phrase()) > 100


def test_layout_phrase_gain_changes_the_model_and_its_ema_alike_and_forgets_their_moments(tmp_path, monkeypatch):
    from types import SimpleNamespace
    monkeypatch.setattr(train, "RUNS", str(tmp_path))
    (tmp_path / "layout").mkdir()

    from transformers import AutoTokenizer, CLIPTextModel
    shipped = "playground/starter/weights/text2img"
    tok = AutoTokenizer.from_pretrained(f"{shipped}/tokenizer")
    te = CLIPTextModel.from_pretrained(f"{shipped}/text_encoder").float()
    torch.manual_seed(0)
    unet = models.build_unet("layout")
    ema = train.Ema(unet, 0.999)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-3)
    params = dict(unet.named_parameters())
    for k in train.PHRASE_LAYER:
        opt.state[params[k]] = {"exp_avg": torch.ones(1)}
    before = {k: params[k].detach().clone() for k in train.PHRASE_LAYER}
    loop = SimpleNamespace(modules={"unet": unet}, emas={"unet": ema}, opt=opt, step=7)
    train.amplify_phrases(loop, te, tok, "cpu", 4.0)
    ids = tok(train.every_layout_phrase(), padding=True, return_tensors="pt").input_ids
    with torch.no_grad():
        want = train.amplified_phrases(before, te(ids).pooler_output.mean(0), 4.0)
    for k in train.PHRASE_LAYER:
        assert torch.allclose(params[k], want[k], atol=1e-4)
        assert torch.allclose(ema.shadow[k].float(), want[k], atol=1e-4)
        assert params[k] not in opt.state
