"""The annotation server: FastAPI app factory (``app.create_app``), JSON API and web pages."""
