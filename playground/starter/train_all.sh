#!/usr/bin/env bash
# Train every starter model in order, then export the shipped folders.
# Each stage resumes from runs/<task>/state.safetensors, so rerunning continues training;
# raise the minutes to train longer. Usage: bash playground/starter/train_all.sh [scale]
# (scale multiplies every stage's minutes; on a CUDA machine the same commands use the GPU).
# Every stage trains with offset noise (--offset-noise 0.1, the default); text2img and
# inpaint also keep each object's words' cross-attention inside its box (--attention-loss 0.01);
# text2img draws a tenth of its samples as "an orange <shape> ... on a <colour> background" (--article-share 0.1);
# layout trains its gated layers ten times faster, opens their gates to 0.1 at the start and
# keeps each box's attention in them inside the box (--gated-lr-scale 10 --open-gates 0.1
# --grounding-loss 0.05), weighing the predicted picture's error at least half (--x0-weight-floor 0.5),
# and draws a fifth of its samples as text2img's "an orange <shape>" ones (--article-share 0.2);
# inpaint draws a tenth of its samples as a hidden orange object called "an orange <shape>"
# (--article-share 0.1), 30% of the rest as one hidden object of a 2-3-object scene captioned
# by that object alone, as people prompt an inpainter (--focus-share 0.3), and 60% of what is
# left as such a hidden object with the whole scene captioned (--binding-share 0.6); the
# upscaler weighs its predicted picture's error at every noise level (--x0-weight-floor 1)
# and trains half its samples near the default noise level 20; the VAE's decoder is then
# sharpened alone (--decoder-only: the encoder, and so every latent, stays). Each UNet
# stage ends with its learning rate falling to a tenth (--anneal-to 0.1). The shipped
# weights were made in more, shorter sessions: see MODEL_CARD.md, Training. Once layout and
# inpaint exist, text2img learns the cell words with a text encoder of its own (--own-text; the
# shared one stays as they were trained against it): only the cell words' embeddings learn
# (--cell-words-only), the UNet at a thirtieth of their rate (--unet-lr-scale 0.03), the cell
# words' attention is pushed into their object's box at high noise (--cell-attention-loss 1
# --high-noise-share 0.3), and in the second part the encoder's outputs after the words are
# held at the shared encoder's, where the UNet reads the object's look (--hold-tail 10;
# MODEL_CARD, "Cell words"). Layout then takes text2img's non-gated UNet layers and reads its own
# text encoder from then on (--base-from-text2img --text-of-text2img, once), its base layers at
# 3e-5 and its gated ones a hundred times faster (MODEL_CARD, "Layout and inpainting on
# text-to-image's own text encoder").
set -euo pipefail
cd "$(dirname "$0")/../.."
s=${1:-1}
m() { python -c "print($1 * $s)"; }
export OMP_WAIT_POLICY=PASSIVE
T="python -m playground.starter.train"
$T vae      --minutes "$(m 18)" --batch 32 --crop 32
$T text2img --minutes "$(m 70)" --batch 32 --attention-loss 0.01 --article-share 0.1 --anneal-to 0.1
$T layout   --minutes "$(m 30)" --batch 32 --attention-loss 0.01 --gated-lr-scale 10 --grounding-loss 0.05 \
            --open-gates 0.1 --x0-weight-floor 0.5 --article-share 0.2 --anneal-to 0.1 &
$T inpaint  --minutes "$(m 30)" --batch 32 --threads 1 --attention-loss 0.01 --binding-share 0.6 \
            --article-share 0.1 --focus-share 0.3 --anneal-to 0.1
wait
$T text2img --minutes "$(m 84)" --batch 32 --own-text --cell-words-only --unet-lr-scale 0.03 \
            --attention-loss 0.01 --cell-attention-loss 1 --high-noise-share 0.3 --x0-weight-floor 0.5 \
            --article-share 0.1 --lr 3e-3 --anneal-to 0.1
$T text2img --minutes "$(m 229)" --batch 32 --own-text --cell-words-only --unet-lr-scale 0.03 \
            --attention-loss 0.01 --cell-attention-loss 1 --high-noise-share 0.3 --x0-weight-floor 0.5 \
            --article-share 0.1 --lr 3e-3 --anneal-to 0.1 --hold-tail 10
$T layout   --minutes "$(m 24)" --batch 32 --lr 3e-5 --gated-lr-scale 100 --attention-loss 0.01 \
            --grounding-loss 0.05 --x0-weight-floor 0.5 --article-share 0.2 --anneal-to 0.1 \
            --base-from-text2img --text-of-text2img
$T layout   --minutes "$(m 342)" --batch 32 --lr 3e-5 --gated-lr-scale 100 --attention-loss 0.01 \
            --grounding-loss 0.05 --x0-weight-floor 0.5 --article-share 0.2 --anneal-to 0.1
$T upscale  --minutes "$(m 20)" --batch 16 --x0-weight-floor 1 --low-noise-share 0.5 --cache-up 6000 \
            --anneal-to 0.1
$T vae      --minutes "$(m 10)" --batch 32 --crop 64 --decoder-only --lr 3e-4
$T export
