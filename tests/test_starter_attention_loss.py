"""The training loss (text2img, inpaint) that keeps each object's words' cross-attention inside
that object's box: which words belong to which object, box coverage on a grid, the loss
itself, and a recording processor that computes exactly what diffusers' does."""
import random

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor

from playground.starter import attention_loss as al
from playground.starter.captions import SHAPE_WORDS, SIZE_WORDS, caption
from playground.starter.models import build_tokenizer
from playground.starter.world import COLOURS, random_scene


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def test_every_caption_gives_one_word_group_per_object_with_its_words(tokenizer):
    rng = random.Random(3)
    for _ in range(500):
        scene = random_scene(rng)
        words = tokenizer.tokenize(caption(scene, rng))
        groups = al.object_word_positions(words)
        assert len(groups) == len(scene.objects), words
        for group, obj in zip(groups, scene.objects):
            named = [words[i] for i in group]
            assert any(w in SHAPE_WORDS[obj.shape] for w in named), (words, named)
            assert all(w == obj.colour for w in named if w in COLOURS), (words, named)
            sizes = [w for w in named if w in al.SIZE_WORD_SET]
            assert all(w in SIZE_WORDS[obj.size] for w in sizes), (words, named)
            assert not {"a", "the", "in", "on", "at"} & set(named)


def test_background_and_relation_words_belong_to_no_object(tokenizer):
    words = tokenizer.tokenize("a red circle above a blue square on a green background")
    named = [[words[i] for i in g] for g in al.object_word_positions(words)]
    assert named == [["red", "circle"], ["blue", "square"]]
    words = tokenizer.tokenize("a big yellow triangle in the bottom left")
    assert [[words[i] for i in g] for g in al.object_word_positions(words)] == [
        ["big", "yellow", "triangle", "bottom", "left"]]


@pytest.mark.parametrize("n", [4, 8, 16])
def test_box_coverage_adds_up_to_the_box_area(n):
    box = (0.1, 0.05, 0.63, 0.5)
    cover = al.box_coverage(box, n)
    assert cover.shape == (n, n) and cover.min() >= 0 and cover.max() <= 1
    assert float(cover.sum()) / n ** 2 == pytest.approx(0.53 * 0.45, rel=1e-5)


def test_the_loss_is_the_share_of_attention_outside_the_box(tokenizer):
    from playground.starter.world import Obj, Scene
    scene = Scene("white", [Obj("red", "circle", (0.0, 0.0, 0.5, 0.5))])
    boxes, valid = al.token_targets(tokenizer, ["a red circle in the top left"], [scene], 77)
    assert valid[0].nonzero().flatten().tolist() == [2, 3, 6, 7]  # red circle top left
    inside = al.box_coverage((0.0, 0.0, 0.5, 0.5), 8).flatten()
    focused = torch.zeros(1, 64, 77)
    focused[0, :, :] = inside[:, None]          # every token's mass in the box
    uniform = torch.full((1, 64, 77), 1 / 77)   # mass spread evenly
    assert float(al.outside_box_loss([focused], boxes, valid)) == pytest.approx(0, abs=1e-6)
    assert float(al.outside_box_loss([uniform], boxes, valid)) == pytest.approx(0.75, abs=1e-6)
    nothing = torch.zeros(1, 77)
    assert float(al.outside_box_loss([uniform], boxes, nothing)) == 0


def test_recorded_weights_are_diffusers_attention_with_gradients():
    from playground.teach.attention import RecordingCrossAttention
    torch.manual_seed(0)
    layer = Attention(query_dim=8, cross_attention_dim=6, heads=2, dim_head=4)
    hidden, text = torch.randn(3, 8, 4, 4), torch.randn(3, 5, 6)
    records = al.AttentionRecords()
    out = RecordingCrossAttention(records)(layer, hidden, text)
    assert torch.allclose(out, AttnProcessor()(layer, hidden, text), atol=1e-6)
    (probs,) = records.records
    assert probs.shape == (3, 16, 5)
    assert torch.allclose(probs.sum(-1), torch.ones(3, 16), atol=1e-6)
    probs[:, :, 0].sum().backward()
    assert layer.to_q.weight.grad is not None and layer.to_q.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", ["text2img", "inpaint"])
def test_training_adds_the_weighted_outside_share_and_it_reaches_the_unet(tokenizer, kind):
    """train.AttentionSupervision, as text2img and inpaint training use it: weight 0 leaves
    the loss alone; otherwise the loss grows by weight x the outside share, and that share's
    gradient reaches the cross-attention keys."""
    from conftest import tiny_unet

    from playground.starter.train import AttentionSupervision
    from playground.starter.world import Obj, Scene

    torch.manual_seed(0)
    unet = tiny_unet(kind)
    scenes = [Scene("white", [Obj("red", "circle", (0.0, 0.0, 0.5, 0.5))]),
              Scene("black", [Obj("blue", "square", (0.5, 0.5, 1.0, 1.0)),
                              Obj("green", "triangle", (0.0, 0.5, 0.5, 1.0))])]
    texts = ["a red circle in the top left", "a blue square and a green triangle"]
    cond = torch.randn(2, 16, 32)
    sample = torch.randn(2, unet.config.in_channels, 8, 8)

    off = AttentionSupervision(kind, unet, tokenizer, 0.0)
    assert off.added_to(torch.tensor(1.0), 0, off.targets(texts, scenes, 16)) == 1.0

    supervised = AttentionSupervision(kind, unet, tokenizer, 0.5)
    supervised.start_pass()
    unet(sample, 10, encoder_hidden_states=cond)
    total = supervised.added_to(torch.tensor(0.0), 0, supervised.targets(texts, scenes, 16))
    assert 0 < supervised.history[-1] < 1
    assert total.item() == pytest.approx(0.5 * supervised.history[-1])
    total.backward()
    key = unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2.to_k.weight
    assert key.grad is not None and key.grad.abs().sum() > 0


def test_grounding_loss_reads_the_gated_layers_and_teaches_them_with_shut_gates():
    """train.GroundingSupervision (layout training): the recording processor leaves the
    UNet's output as it was; the loss grows by weight x the share of each box's attention
    from outside the box; and its gradient reaches the gated layers' keys although every
    gate is shut (tanh(alpha) = 0 passes the noise loss no gradient there)."""
    from conftest import tiny_unet

    from playground.starter.train import GroundingSupervision

    torch.manual_seed(0)
    unet = tiny_unet("layout")
    sample, cond = torch.randn(2, 4, 8, 8), torch.randn(2, 16, 32)
    boxes, masks = torch.zeros(2, 30, 4), torch.zeros(2, 30)
    boxes[0, 0] = torch.tensor([0.0, 0.0, 0.5, 0.5])
    boxes[1, :2] = torch.tensor([[0.5, 0.5, 1.0, 1.0], [0.0, 0.5, 0.5, 1.0]])
    masks[0, 0], masks[1, :2] = 1, 1
    gligen = {"boxes": boxes, "positive_embeddings": torch.randn(2, 30, 32), "masks": masks}

    def forward():
        return unet(sample, 10, encoder_hidden_states=cond,
                    cross_attention_kwargs={"gligen": dict(gligen)}).sample

    for name, p in unet.named_parameters():  # open the gates to see the fuser act
        if name.endswith(".alpha_attn"):
            p.data.fill_(0.5)
    before = forward().detach()
    supervised = GroundingSupervision(unet, 0.5)
    supervised.start_pass()
    assert torch.allclose(forward(), before, atol=1e-5)
    fusers = [n for n in unet.attn_processors if ".fuser." in n]
    assert len(supervised.recorder.records) == len(fusers) == 7  # 2 down, 1 mid, 4 up
    assert supervised.recorder.records[0].shape == (2, 64, 30)

    for name, p in unet.named_parameters():
        if name.endswith((".alpha_attn", ".alpha_dense")):
            p.data.zero_()
    supervised.start_pass()
    forward()
    total = supervised.added_to(torch.tensor(0.0), 0, gligen)
    assert 0 < supervised.history[-1] < 1
    assert total.item() == pytest.approx(0.5 * supervised.history[-1])
    total.backward()
    key = unet.down_blocks[0].attentions[0].transformer_blocks[0].fuser.attn.to_k.weight
    assert key.grad is not None and key.grad.abs().sum() > 0


def test_the_cell_word_mask_marks_only_the_object_phrases_cell_words(tokenizer):
    mask = al.cell_word_mask(tokenizer, ["a red circle in the top left",
                                         "a red circle to the left of a blue square",
                                         "two objects: a red circle on the right and a blue square",
                                         ""], 77)
    assert mask[0].nonzero().flatten().tolist() == [6, 7]  # top left, after the start token
    assert mask[1].sum() == 0  # "left" of a relation is no cell
    words = tokenizer.tokenize("two objects: a red circle on the right and a blue square")
    assert [words[i - 1] for i in mask[2].nonzero().flatten().tolist()] == ["right"]
    assert mask[3].sum() == 0


def test_token_objects_index_each_content_word_by_its_object_phrase(tokenizer):
    text = "a blue square in the bottom right and a green triangle in the top"
    objects = al.token_objects(tokenizer, [text, ""], 16)
    words = tokenizer.tokenize(text)
    by_object = [[words[t - 1] for t in (objects[0] == o).nonzero().flatten().tolist()] for o in (0, 1)]
    assert by_object == [["blue", "square", "bottom", "right"], ["green", "triangle", "top"]]
    assert (objects[1] == -1).all()


def test_the_crowding_share_is_the_cell_words_part_of_the_phrases_attention_in_the_box(tokenizer):
    from playground.starter.world import Obj, Scene
    text = "a red circle in the top left"
    scene = Scene("white", [Obj("red", "circle", (0.0, 0.0, 0.5, 0.5))])
    boxes, valid = al.token_targets(tokenizer, [text], [scene], 77)
    cells = al.cell_word_mask(tokenizer, [text], 77)
    objects = al.token_objects(tokenizer, [text], 77)
    even = torch.full((1, 64, 77), 1 / 77)
    assert float(al.cell_share_in_box([even], boxes, valid, cells, objects)) == pytest.approx(0.5)
    inside = al.box_coverage((0.0, 0.0, 0.5, 0.5), 8).flatten().bool()
    crowded = torch.zeros(1, 64, 77)
    crowded[0][inside, 6] = 1.0   # "top" takes the box,
    crowded[0][~inside, 2] = 1.0  # "red" only gets the outside
    assert float(al.cell_share_in_box([crowded], boxes, valid, cells, objects)) == pytest.approx(1.0)
    looks = crowded.clone()
    looks[0][inside, 6], looks[0][inside, 2] = 0.2, 0.8
    share = al.cell_share_in_box([looks, even], boxes, valid, cells, objects)
    assert float(share) == pytest.approx((0.2 + 0.5) / 2)  # a mean over the layers
    no_cell = al.token_objects(tokenizer, ["a red circle"], 77)
    assert float(al.cell_share_in_box([even], boxes, valid, cells * 0, no_cell)) == 0.0


def test_max_grid_keeps_only_the_coarse_layers_in_the_loss(tokenizer):
    from playground.starter.world import Obj, Scene
    scene = Scene("white", [Obj("red", "circle", (0.0, 0.0, 0.5, 0.5))])
    boxes, valid = al.token_targets(tokenizer, ["a red circle in the top left"], [scene], 77)
    fine, coarse = torch.full((1, 64, 77), 1 / 77), torch.zeros(1, 16, 77)
    coarse[0][al.box_coverage((0.0, 0.0, 0.5, 0.5), 4).flatten().bool()] = 1 / 77  # all inside
    both = al.outside_box_loss([fine, coarse], boxes, valid)
    assert float(both) == pytest.approx(0.75 / 2)
    assert float(al.outside_box_loss([fine, coarse], boxes, valid, max_grid=4)) == pytest.approx(0.0)
    assert float(al.outside_box_loss([fine, coarse], boxes, valid, max_grid=8)) == pytest.approx(0.75 / 2)


def test_the_foreign_share_is_what_a_box_reads_of_other_objects_words_and_the_tail(tokenizer):
    from playground.starter.world import Obj, Scene
    text = "a red circle in the top left and a blue square in the bottom right"
    scene = Scene("white", [Obj("red", "circle", (0.0, 0.0, 0.5, 0.5)),
                            Obj("blue", "square", (0.5, 0.5, 1.0, 1.0))])
    boxes, valid = al.object_box_targets(tokenizer, [text], [scene], 3)
    assert valid.tolist() == [[1, 1, 0]] and boxes[0, 1].tolist() == [0.5, 0.5, 1.0, 1.0]
    ids = tokenizer([text], padding="max_length", max_length=77, return_tensors="pt").input_ids
    tail = al.from_sep_on(ids, tokenizer.sep_token_id)[..., 0]
    objects = al.token_objects(tokenizer, [text], 77)
    words = tokenizer.tokenize(text)
    red, blue, sep = words.index("red") + 1, words.index("blue") + 1, len(words) + 1
    assert objects[0, red] == 0 and objects[0, blue] == 1 and tail[0, sep] and not tail[0, sep - 1]
    first = al.box_coverage((0.0, 0.0, 0.5, 0.5), 8).flatten().bool()
    second = al.box_coverage((0.5, 0.5, 1.0, 1.0), 8).flatten().bool()
    own = torch.zeros(1, 64, 77)
    own[0][first, red], own[0][second, blue] = 1.0, 1.0  # each box reads its own colour word
    own[0][~(first | second), 0] = 1.0
    assert float(al.foreign_share_in_boxes([own], boxes, valid, objects, tail)) == 0.0
    swapped = torch.zeros(1, 64, 77)
    swapped[0][first, blue], swapped[0][second, sep] = 1.0, 1.0  # the other's word; the tail
    swapped[0][~(first | second), 0] = 1.0
    assert float(al.foreign_share_in_boxes([swapped], boxes, valid, objects, tail)) == pytest.approx(1.0)
    half = (own + swapped) / 2
    assert float(al.foreign_share_in_boxes([half, own], boxes, valid, objects, tail)) == pytest.approx(0.25)
    # strict (no tail given): everything but the box's own words counts, the start token too
    assert float(al.foreign_share_in_boxes([own], boxes, valid, objects)) == 0.0
    start = own.clone()
    start[0][first, red], start[0][first, 0] = 0.0, 1.0
    assert float(al.foreign_share_in_boxes([start], boxes, valid, objects)) == pytest.approx(0.5)
    assert float(al.foreign_share_in_boxes([start], boxes, valid, objects, tail)) == 0.0
    # a caption that does not name its scene's objects one by one is left out
    assert not al.object_box_targets(tokenizer, ["a red circle"], [scene], 3)[1].any()
