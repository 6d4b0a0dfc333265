"""The one error type of the app layer."""


class WorkbenchError(ValueError):
    """A request that cannot be done as asked (a verb's refusal); the message says why and what would work."""
