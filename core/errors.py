"""The one error hierarchy of ModelDeck.

Every failure a user can act on is a :class:`ModelDeckError` with a one-line
``message`` and an optional ``hint`` saying what to do about it. The CLI prints
``error: <message>`` (+ hint) and exits non-zero; the GUI shows it in the window
that caused it. This module is stdlib-only because the serving runtime ships it.
"""

from __future__ import annotations


class ModelDeckError(Exception):
    """Base of every error ModelDeck raises on purpose."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message

    def one_line(self) -> str:
        """Message and hint on one line, as the CLI prints it."""
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message


class ConfigError(ModelDeckError):
    """Bad settings file, flag or environment variable."""


class RegistryError(ModelDeckError):
    """Anything that went wrong talking to a model registry."""


class RegistryUnreachable(RegistryError):
    """The tracking server did not answer (down, wrong host/port, TLS failure)."""


class BadTrackingURI(RegistryError):
    """The tracking URI is malformed or names an unsupported scheme."""


class NotFound(RegistryError):
    """A model, version, alias or run does not exist."""


class PermissionDenied(RegistryError):
    """The server refused the credentials (HTTP 401/403)."""


class BundleError(ModelDeckError):
    """A bundle could not be built, or a bundle on disk is invalid."""


class ConversionError(BundleError):
    """A model flavor cannot be converted to ONNX."""


class ParityError(BundleError):
    """The ONNX model's outputs differ from the original model's beyond tolerance."""


class TamperedBundle(BundleError):
    """A bundle's files do not match the sha256 sums in its manifest."""


class DeployError(ModelDeckError):
    """A deployment step failed; the previous release is left serving."""


class TargetError(ModelDeckError):
    """A target URL is invalid or the target cannot be reached."""


class Cancelled(ModelDeckError):
    """The user cancelled a long operation."""

    def __init__(self, message: str = "cancelled") -> None:
        super().__init__(message)
