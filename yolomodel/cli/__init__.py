"""Command-line mains of the yolomodel tools (installed as console scripts; tools/*.py call them too).

Exit statuses shared by the tools: 0 done, 1 anything unexpected (with its traceback), 2 a user error
(one message on stderr starting with ``error:``, no traceback), 130 interrupted (Ctrl-C).
"""
import sys

EXIT_OK, EXIT_UNEXPECTED, EXIT_USER_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130


def report_user_error(error) -> int:
    """Print ``error: <message>`` on stderr; returns EXIT_USER_ERROR."""
    print(f"error: {error}", file=sys.stderr, flush=True)
    return EXIT_USER_ERROR
