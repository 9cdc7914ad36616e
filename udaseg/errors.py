"""Errors that reach the user as one clear message (the CLI prints them and exits with 2)."""


class UdasegError(Exception):
    """Base class: a problem with the user's input, files or configuration, not a bug.

    An error raised in a DataLoader worker process (an unreadable training image …) reaches the
    main process as ``type(err)(text)``, where torch's ``text`` is "Caught X in DataLoader worker
    process N. Original Traceback … X: <message>". The class is kept; the constructor takes the
    original message back out of that text, so the CLI still prints it as one line.
    """

    def __init__(self, *args):
        if len(args) == 1 and isinstance(args[0], str):
            args = (_worker_message(args[0], type(self)),)
        super().__init__(*args)


def _worker_message(text: str, cls: type) -> str:
    """The original message in the text torch builds for an exception from a worker process, or
    ``text`` itself when it is not such a text."""
    if not (text.startswith(f"Caught {cls.__name__} ") and "\nOriginal Traceback" in text):
        return text
    head, sep, message = text.rpartition(f"{cls.__module__}.{cls.__qualname__}: ")
    return message.rstrip("\n") if sep else text


class DataError(UdasegError):
    """A dataset problem: missing root/split, unpaired or unreadable file, size or id mismatch.
    The message names the file or folder and says what was expected."""


class ConfigError(UdasegError):
    """A configuration problem: unknown key, wrong type, bad value. The message names the key and file."""
