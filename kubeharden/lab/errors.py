"""Errors the lab reports to its user as one clear message."""


class LabError(RuntimeError):
    """A lab operation could not be done; the message says why and what to do."""
