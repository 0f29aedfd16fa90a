"""novulite: a self-hosted notification server that speaks Novu's public API."""

__version__ = "0.1.0"
