"""The workflow engine: what the queue consumers run."""
