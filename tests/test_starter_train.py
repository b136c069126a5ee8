"""Training state: a run saves weights, EMA and the optimiser's moments and resumes from them,
even when it regroups its parameters (the layout run gives its gated layers their own rate)."""
from __future__ import annotations

import torch
from safetensors.torch import load_file, save_file

from playground.starter import train


def two_layers():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))


def one_step(model, opt):
    loss = model(torch.ones(5, 3)).square().mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def test_moments_resume_by_name_when_the_parameters_are_regrouped(tmp_path):
    model = two_layers()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    one_step(model, opt)
    path = str(tmp_path / "state.safetensors")
    train.save_state(path, {"m": model}, {}, opt, step=1)

    again = two_layers()
    first, second = list(again[0].parameters()), list(again[1].parameters())
    regrouped = torch.optim.AdamW([{"params": second}, {"params": first, "lr_scale": 10.0}], lr=1e-2)
    assert train.load_state(path, {"m": again}, {}, regrouped) == 1
    assert torch.equal(again[0].weight, model[0].weight)
    for name, p in again.named_parameters():
        saved = dict(model.named_parameters())[name]
        assert torch.equal(regrouped.state[p]["exp_avg"], opt.state[saved]["exp_avg"]), name


def test_states_saved_by_position_still_load(tmp_path):
    model = two_layers()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    one_step(model, opt)
    path = str(tmp_path / "old.safetensors")
    train.save_state(path, {"m": model}, {}, opt, step=3)
    tensors = load_file(path)  # rewrite the moments the way older runs saved them
    names = [n for n, _ in model.named_parameters()]
    for key in [k for k in tensors if k.startswith("opt.")]:
        name, moment = key[len("opt.m."):].rsplit(".", 1)
        tensors[f"opt.{names.index(name)}.{moment}"] = tensors.pop(key)
    save_file(tensors, path, metadata={"step": "3"})

    again = two_layers()  # and into a regrouped optimiser, as the layout run did
    first, second = list(again[0].parameters()), list(again[1].parameters())
    opt2 = torch.optim.AdamW([{"params": second}, {"params": first, "lr_scale": 10.0}], lr=1e-2)
    assert train.load_state(path, {"m": again}, {}, opt2) == 3
    for (name, p), (_, saved) in zip(again.named_parameters(), model.named_parameters()):
        assert torch.equal(opt2.state[p]["exp_avg_sq"], opt.state[saved]["exp_avg_sq"]), name
