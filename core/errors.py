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


class HostKeyError(TargetError):
    """An SSH host's key is not one ModelDeck may trust; nothing was executed on the host."""


class UnknownHostKey(HostKeyError):
    """The host presented a key found in no known_hosts file; the user must accept its fingerprint."""

    def __init__(self, host: str, key_type: str, fingerprint: str) -> None:
        super().__init__(
            f"unknown host key for {host}: {key_type} {fingerprint}",
            hint=f"check the fingerprint out of band, then accept it with --accept-host-key {fingerprint}",
        )
        self.host = host
        self.key_type = key_type
        self.fingerprint = fingerprint


class HostKeyChanged(HostKeyError):
    """The host presented a key other than the one on record: possibly an attack, never accepted silently."""

    def __init__(self, host: str, key_type: str, expected: str, presented: str) -> None:
        super().__init__(
            f"HOST KEY CHANGED for {host}: {key_type} on record is {expected}, the host presented {presented}",
            hint="if the host was really re-installed, re-pin it: modeldeck hosts trust HOST --replace "
            f"--fingerprint {presented}",
        )
        self.host = host
        self.key_type = key_type
        self.expected = expected
        self.presented = presented


class SshAuthError(TargetError):
    """The SSH host refused every credential offered."""


class HostUnreachable(TargetError):
    """An SSH host did not answer within the connect timeout or dropped the connection."""
