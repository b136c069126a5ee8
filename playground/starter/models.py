"""Architectures of the starter models: one tokenizer, text encoder and VAE shared by
four small UNets (text-to-image ships a copy of the text encoder whose cell words trained
apart: MODEL_CARD.md, "Cell words"). Everything is a stock diffusers/transformers class built from a config,
so the saved folders load with `from_pretrained` exactly like hub models."""
from __future__ import annotations

import os
import tempfile

from .captions import vocabulary

MAX_TOKENS = 77
TEXT_WIDTH = 128
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_tokenizer():
    """A word-level WordPiece tokenizer: every caption word is one token and any other
    word becomes [UNK] (no sub-word pieces exist to split it into)."""
    from transformers import BertTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "vocab.txt")
        with open(path, "w") as f:
            f.write("\n".join(SPECIAL_TOKENS + vocabulary()) + "\n")
        tok = BertTokenizer(path, do_lower_case=True, model_max_length=MAX_TOKENS)
        tok.vocab_file = None  # the file is gone after this block; save_pretrained writes its own
    return tok


def build_text_encoder(tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=TEXT_WIDTH, intermediate_size=2 * TEXT_WIDTH,
        num_hidden_layers=3, num_attention_heads=4, max_position_embeddings=MAX_TOKENS,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id, projection_dim=TEXT_WIDTH)
    return CLIPTextModel(config)


def build_vae():
    """Factor-4 VAE (64 px -> 16 x 16 x 4 latents); fully convolutional (no mid attention),
    so it also decodes the upscaler's 64 x 64 latents into 256 px pictures."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(32, 64, 64), layers_per_block=1, norm_num_groups=16,
        sample_size=64, mid_block_add_attention=False)


def unet_config(task: str) -> dict:
    base = dict(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(48, 96, 128), norm_num_groups=16,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_WIDTH, attention_head_dim=4)
    if task == "text2img":
        return base
    if task == "layout":
        return dict(base, attention_type="gated")
    if task == "inpaint":
        return dict(base, in_channels=9)
    if task == "upscale":
        # runs on 64 x 64 latents: narrower, attention only at the two coarse levels
        return dict(
            sample_size=64, in_channels=7, out_channels=4, layers_per_block=1,
            block_out_channels=(32, 64, 64), norm_num_groups=16,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=TEXT_WIDTH, attention_head_dim=4, num_class_embeds=1000)
    raise ValueError(f"unknown starter task {task!r}")


def build_unet(task: str):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**unet_config(task))


def build_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear",
                         beta_start=0.00085, beta_end=0.012, prediction_type="epsilon",
                         clip_sample=False, steps_offset=1)


def build_default_scheduler(task: str = "text2img"):
    """The scheduler a shipped pipeline starts with: DPM++ 2M, except Euler for the upscaler,
    which is about 0.1 dB closer to the true picture with it at 20 steps (MODEL_CARD.md)."""
    from diffusers import DPMSolverMultistepScheduler, EulerDiscreteScheduler

    kind = EulerDiscreteScheduler if task == "upscale" else DPMSolverMultistepScheduler
    return kind.from_config(build_scheduler().config)
