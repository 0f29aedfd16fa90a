"""One module per step type; each exposes `run(StepContext) -> StepResult`."""
