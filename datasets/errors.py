"""The error every dataset raises for a data set that cannot be used as configured."""


class DatasetError(ValueError):
    """A data set that cannot be used as configured; the message is one line for the user."""
