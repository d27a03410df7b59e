"""SSH passwords, kept only in the OS keyring (never in the inventory or any other file).

Entries are filed under the service ``modeldeck-ssh`` with the inventory host name as the
user name, so the keyring's own UI shows which host a password belongs to. Without a usable
keyring backend, setting a password is refused: the user is told to use keys or ssh-agent
rather than have ModelDeck fall back to a plain-text store.
"""

from __future__ import annotations

import logging

from modeldeck.core.errors import ConfigError

log = logging.getLogger(__name__)

SERVICE = "modeldeck-ssh"
NO_BACKEND_HINT = "use an SSH key or ssh-agent instead (ModelDeck never stores passwords in a file)"


def _backend_usable() -> bool:
    import keyring
    from keyring.backends import fail

    backend = keyring.get_keyring()
    return not isinstance(backend, fail.Keyring) and getattr(backend, "priority", 1) > 0


def _no_backend(exc: BaseException | None = None) -> ConfigError:
    detail = f": {exc}" if exc is not None else ""
    return ConfigError(f"no OS keyring is available to hold SSH passwords{detail}", hint=NO_BACKEND_HINT)


def set_password(host: str, password: str) -> None:
    """Store ``password`` for inventory host ``host`` in the OS keyring. ConfigError without a keyring."""
    import keyring
    from keyring.errors import KeyringError

    if not password:
        raise ConfigError("the password is empty")
    if not _backend_usable():
        raise _no_backend()
    try:
        keyring.set_password(SERVICE, host, password)
    except KeyringError as exc:
        raise _no_backend(exc) from exc
    log.info("stored the SSH password of %s in the OS keyring", host)


def password_for(host: str) -> str | None:
    """The keyring's password for ``host`` (None: none stored). ConfigError without a keyring."""
    import keyring
    from keyring.errors import KeyringError

    if not _backend_usable():
        raise _no_backend()
    try:
        return keyring.get_password(SERVICE, host)
    except KeyringError as exc:
        raise _no_backend(exc) from exc


def password_if_any(host: str) -> str | None:
    """Like :func:`password_for`, but "no keyring" means "no password" (key-based hosts need none)."""
    try:
        return password_for(host)
    except ConfigError:
        log.debug("no keyring backend: no password for %s", host)
        return None


def delete_password(host: str) -> bool:
    """Forget ``host``'s password; False if none was stored."""
    import keyring
    from keyring.errors import KeyringError, PasswordDeleteError

    if not _backend_usable():
        raise _no_backend()
    try:
        keyring.delete_password(SERVICE, host)
    except PasswordDeleteError:
        return False
    except KeyringError as exc:
        raise _no_backend(exc) from exc
    return True
