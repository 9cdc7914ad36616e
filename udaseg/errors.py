"""Errors that reach the user as one clear message (the CLI prints them and exits with 2)."""


class UdasegError(Exception):
    """Base class: a problem with the user's input, files or configuration, not a bug."""


class DataError(UdasegError):
    """A dataset problem: missing root/split, unpaired or unreadable file, size or id mismatch.
    The message names the file or folder and says what was expected."""


class ConfigError(UdasegError):
    """A configuration problem: unknown key, wrong type, bad value. The message names the key and file."""
