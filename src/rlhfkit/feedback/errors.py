"""The store's error types, which the API maps to HTTP statuses and the commands to one-line errors."""

from __future__ import annotations


class CrudError(Exception):
    """Base of the errors the API maps to HTTP statuses."""


class NotFoundError(CrudError):
    """The object does not exist or the caller may not see it (404)."""


class ConflictError(CrudError):
    """The request contradicts the stored state (409)."""


class InvalidError(CrudError, ValueError):
    """The input is malformed; the message names the field (422)."""


class TooLargeError(InvalidError):
    """The input is over a size limit (413); the message names the limit."""
