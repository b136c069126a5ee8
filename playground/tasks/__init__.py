"""One module per task: validate the inputs, get the pipeline from the registry, run it
through `common.execute`, return pictures that carry their settings."""
