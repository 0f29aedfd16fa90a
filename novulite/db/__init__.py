"""The job store: models, engines and migrations."""
