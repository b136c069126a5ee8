"""Teaching views over any registered model: the forward noising process, a denoising
filmstrip, cross-attention maps, runnable code for a result, and short explanations
(plus compare grids, quality vs cost and notebook export, each in its own module).
Everything here is reached through `Playground` methods, which the UI and HTTP API call."""
