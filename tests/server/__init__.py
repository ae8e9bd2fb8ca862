"""API tests: a real uvicorn server on 127.0.0.1, spoken to over HTTP."""
