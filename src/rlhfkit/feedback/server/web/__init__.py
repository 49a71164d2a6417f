"""Server-rendered pages: sign-in, annotation, admin."""
