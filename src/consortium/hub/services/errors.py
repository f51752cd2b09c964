"""Errors that services raise; the app turns each into an HTTP status with the message as ``detail``."""

from typing import Any


class ServiceError(Exception):
    status_code = 400

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields
        """Machine-readable details sent beside ``detail`` (e.g. the run that ended), for clients to act
        on."""


class BadRequest(ServiceError):
    status_code = 422


class Unauthorized(ServiceError):
    status_code = 401


class Forbidden(ServiceError):
    status_code = 403


class NotFound(ServiceError):
    status_code = 404


class Conflict(ServiceError):
    status_code = 409


class Gone(ServiceError):
    status_code = 410


class TooLarge(ServiceError):
    status_code = 413


class PaymentRequired(ServiceError):
    """An action whose credit cost the org's balance does not cover."""

    status_code = 402
