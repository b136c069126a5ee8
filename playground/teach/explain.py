"""Explain cells: short explanations for students, with the key equations in LaTeX
(`$...$` inline, `$$...$$` display; gr.Markdown renders them with LATEX_DELIMITERS)."""
from __future__ import annotations

LATEX_DELIMITERS = [{"left": "$$", "right": "$$", "display": True},
                    {"left": "$", "right": "$", "display": False}]

FORWARD = r"""
### The forward process: how training pictures are noised
Training takes a clean picture (for latent models: its VAE latent) $x_0$, a random
step $t$ and Gaussian noise $\epsilon \sim \mathcal{N}(0, I)$, and makes in one go

$$q(x_t \mid x_0) = \mathcal{N}\big(\sqrt{\bar\alpha_t}\,x_0,\ (1-\bar\alpha_t)\,I\big),
\qquad x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon,$$

where $\bar\alpha_t = \prod_{s \le t} (1-\beta_s)$ falls from about 1 (clean) to about 0
(pure noise) along the model's noise schedule $\beta_1 \dots \beta_T$.
The signal-to-noise ratio is $\mathrm{SNR}(t) = \bar\alpha_t / (1-\bar\alpha_t)$;
samplers written in the k-diffusion style use $\sigma_t = \sqrt{(1-\bar\alpha_t)/\bar\alpha_t}
= 1/\sqrt{\mathrm{SNR}(t)}$ instead. Every scheduler in the list shares the model's
training schedule; they differ in which $t$ they visit (red dots) and how they step.
"""

OBJECTIVE = r"""
### What the network learns: predict the noise
The UNet $\epsilon_\theta(x_t, t, c)$ sees the noisy $x_t$, the step $t$ and the text
condition $c$ (the prompt's token embeddings), and is trained to recover the noise:

$$\mathcal{L} = \mathbb{E}_{x_0, c, t, \epsilon}\,\big\|\epsilon - \epsilon_\theta(x_t, t, c)\big\|^2 .$$

A noise guess is also a guess of the clean picture, by solving the forward equation
for $x_0$:

$$\hat x_0 = \frac{x_t - \sqrt{1-\bar\alpha_t}\,\epsilon_\theta(x_t, t, c)}{\sqrt{\bar\alpha_t}} .$$

That is the *predicted x0* row of the filmstrip: blurry early (little signal is left),
sharp late. Sampling starts from pure noise and walks $t$ down; the scheduler decides
how far each of the *steps* goes and how it mixes the current and earlier guesses.
"""

GUIDANCE = r"""
### Classifier-free guidance
The same network is also trained with the prompt dropped ($\varnothing$, the empty
prompt). At sampling time both predictions are made and pushed apart by the
*guidance* scale $w$:

$$\tilde\epsilon = \epsilon_\theta(x_t, t, \varnothing) + w\,\big(\epsilon_\theta(x_t, t, c) - \epsilon_\theta(x_t, t, \varnothing)\big).$$

$w = 1$ is the plain conditional model (the playground then skips the second pass);
larger $w$ follows the prompt more closely at the cost of variety, and too large
over-saturates. A *negative prompt* takes the place of $\varnothing$: the picture is
pushed away from it.
"""

ATTENTION = r"""
### Where the words go: cross-attention
In each cross-attention layer every latent pixel $i$ asks a query $q_i$ of the prompt's
token keys $k_j$ and takes a softmax over the tokens,
$A_{ij} = \mathrm{softmax}_j\big(q_i \cdot k_j / \sqrt{d}\big)$, then mixes their
values. The map of token $j$ is $A_{\cdot j}$ averaged over heads, layers and the chosen
steps: where in the picture that word acted. A well-trained model puts a colour word
on its object; a flat map means the model reads the prompt as a whole there.
"""

BINDING = r"""
### When two objects trade looks
Every pixel reads the same prompt, so in "a red circle in the top left and a blue square in
the bottom right" nothing but the learned attention ties *red* to the top left. A small
model ties them loosely, and the two objects trade colours and shapes (the starter model
gets both right in 2 of 50 held-out prompts). The playground's options cut the ties it
cannot make: *Regional prompts* let each placed cell read only its own object's words, and
*Compose object by object* paints each object in a pass of its own with the model's
inpainter, so every pass reads one object (41 of those 50 right). Tick it below to watch
the passes in the filmstrip.
"""

TASKS = {
    "text_to_image": r"""
**Text to image** conditions only on the prompt. It starts from pure noise
$x_T \sim \mathcal{N}(0, I)$ (fixed by the *seed*), and runs *steps* denoising steps with
the chosen *scheduler*, each using the guided noise prediction (*guidance* $w$).
""",
    "layout_to_image": r"""
**Layout to image** (GLIGEN) adds boxes: each phrase's embedding and its box
coordinates become grounding tokens read by extra gated self-attention layers, which
steer the first part of sampling (the *Grounding* share of the steps: diffusers' default
is the first 30%, the starter model's every step) so objects land in their boxes.
""",
    "inpaint": r"""
**Inpainting** conditions on the picture and the mask too: the UNet sees the noisy
latent, the mask and the latent of the masked picture (9 input channels), and only the
masked part is made anew. *Strength* < 1 starts from a noised copy of the picture
($x_t$ with $t$ = strength $\times T$) instead of pure noise.
""",
    "upscale": r"""
**Super-resolution** conditions on the small picture: it is noised by *noise level*
(the model is told how much) and fed beside the latent; the model adds the detail the
small picture lacks, so higher noise levels let it invent more.
""",
}


def task_explanation(task: str) -> str:
    """The explain cell for one task, with the equations every task shares."""
    return TASKS[task].strip() + "\n" + OBJECTIVE + GUIDANCE


def all_cells() -> str:
    """Everything, in reading order, for the Learn tab."""
    return "\n".join([FORWARD, OBJECTIVE, GUIDANCE, ATTENTION, BINDING,
                      "### The four tasks", *[TASKS[t] for t in TASKS]])
