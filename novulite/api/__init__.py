"""The HTTP API: one module per resource, in Novu's shapes."""
