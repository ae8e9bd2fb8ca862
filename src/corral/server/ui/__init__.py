"""The web UI: server-rendered pages (Jinja2), small hand-written JS, live updates over SSE."""
