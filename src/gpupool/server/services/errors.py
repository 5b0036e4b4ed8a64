"""Errors of the use cases, each with the HTTP status the API answers with."""

from __future__ import annotations


class ServiceError(Exception):
    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(ServiceError):
    status = 404


class Forbidden(ServiceError):
    status = 403


class Unauthorized(ServiceError):
    status = 401


class Invalid(ServiceError):
    status = 422


class Conflict(ServiceError):
    status = 409


class TooLarge(ServiceError):
    status = 413
