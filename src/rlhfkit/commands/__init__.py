"""One module per command group; each exposes ``register(app)`` and imports heavy libraries lazily."""
