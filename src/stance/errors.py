"""The one exception type that stance raises for problems a user can fix."""


class StanceError(Exception):
    """A user-facing error: its message is one line that says what is wrong and what to do.

    The CLI prints it without a traceback; the service turns it into a 4xx response.
    """
