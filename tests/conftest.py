"""Shared fixtures. Tests run on one CPU thread (a training job shares this machine) and
never touch the network: models are the shipped starter folders or tiny pipelines built
here and saved as ordinary diffusers folders, loaded through the same from_pretrained
path as hub models."""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

TINY_TASK_FOLDERS = ("text2img", "layout", "inpaint", "upscale")


def tiny_components(seed: int = 0):
    """Tokenizer, text encoder and VAE far smaller than the starter's, same kinds."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel

    from playground.starter.models import build_tokenizer

    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=77, projection_dim=32,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id))
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(8, 16, 16), layers_per_block=1, norm_num_groups=8,
        sample_size=32, mid_block_add_attention=False)
    return tokenizer, text_encoder, vae


def tiny_unet(kind: str):
    from diffusers import UNet2DConditionModel

    config = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                  block_out_channels=(16, 32), norm_num_groups=8,
                  down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                  up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                  cross_attention_dim=32, attention_head_dim=2)
    if kind == "layout":
        config["attention_type"] = "gated"
    elif kind == "inpaint":
        config["in_channels"] = 9
    elif kind == "upscale":
        config.update(in_channels=7, num_class_embeds=1000)
    return UNet2DConditionModel(**config)


def build_tiny_pipeline(kind: str, seed: int = 0):
    """A tiny random pipeline of one kind: text2img, layout, inpaint or upscale."""
    import diffusers

    from playground.starter.models import build_default_scheduler

    tokenizer, text_encoder, vae = tiny_components(seed)
    unet = tiny_unet(kind)
    parts = dict(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                 scheduler=build_default_scheduler(), safety_checker=None,
                 feature_extractor=None)
    if kind == "upscale":
        from diffusers import DDPMScheduler
        low_res = DDPMScheduler(num_train_timesteps=1000)
        return diffusers.StableDiffusionUpscalePipeline(
            **parts, low_res_scheduler=low_res, watermarker=None, max_noise_level=350)
    cls = {"text2img": diffusers.StableDiffusionPipeline,
           "layout": diffusers.StableDiffusionGLIGENPipeline,
           "inpaint": diffusers.StableDiffusionInpaintPipeline}[kind]
    return cls(**parts, requires_safety_checker=False)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """A folder holding tiny diffusers folders text2img/, layout/, inpaint/, upscale/ (each
    self-contained, safetensors), usable as local model sources."""
    root = tmp_path_factory.mktemp("tiny_models")
    for kind in TINY_TASK_FOLDERS:
        build_tiny_pipeline(kind).save_pretrained(root / kind, safe_serialization=True)
    return root


@pytest.fixture(scope="session")
def tiny_entries(tiny_models):
    """A model entry "tiny" serving all four tasks from the tiny folders."""
    from playground.registry import ModelEntry, Source

    sources = {"text_to_image": "text2img", "layout_to_image": "layout",
               "inpaint": "inpaint", "upscale": "upscale"}
    return [ModelEntry("tiny", {t: Source(str(tiny_models / f)) for t, f in sources.items()},
                       options={"max_boxes": 3})]


@pytest.fixture(scope="session")
def tiny_playground(tiny_models, tiny_entries):
    from playground import Playground, Registry

    return Playground(Registry(tiny_entries, device="cpu", allowed_dirs=[str(tiny_models)]))


@pytest.fixture(scope="session")
def starter():
    """The Playground over the shipped starter models, loaded once for the session."""
    from playground import Playground

    return Playground(device="cpu")


@pytest.fixture(scope="session")
def judge():
    """The Shapes judge (reads background and objects from a picture)."""
    from playground.starter.judge import Judge

    return Judge.load()
