"""User-facing error type: one readable line, no traceback (CLI exit code 2, UI message)."""

from __future__ import annotations


class AEVisError(Exception):
    """An error caused by user input (bad model path, bad image, bad option).

    The message is a single line meant for the user; the CLI prints it and exits with code 2,
    the dashboard shows it in place of the result.
    """


class ModelLoadError(AEVisError):
    """A model could not be found, built, loaded with its weights or traced."""


class ImageLoadError(AEVisError):
    """An image file could not be decoded safely (format, size, corruption)."""
