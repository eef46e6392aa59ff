"""The one exception type that stance raises for problems a user can fix."""

from collections.abc import Callable


class StanceError(Exception):
    """A user-facing error: its message is one line that says what is wrong and what to do.

    The CLI prints it without a traceback; the service turns it into a 4xx response.
    """


def exit_code(action: Callable[[], object]) -> int:
    """Run `action()` for a command-line script: 0 when it succeeds; a StanceError is printed
    as one `error: ...` line on stderr (no traceback) and gives 2."""
    import sys

    try:
        action()
    except StanceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
