"""JSON API (Bearer tokens) and the dependencies shared with the web pages."""
