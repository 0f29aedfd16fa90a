"""The admin web UI: server-rendered pages under /admin behind a sign-in."""
