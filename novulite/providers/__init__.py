"""Transports that deliver channel messages, one module per provider."""
