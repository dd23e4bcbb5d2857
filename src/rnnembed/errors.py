"""The one exception type for errors a user can cause and fix."""


class RnnembedError(Exception):
    """A user-facing error: the message says what went wrong and what to do.

    The CLI prints it without a traceback and exits with status 1.
    """
