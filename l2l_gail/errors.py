"""The one exception type the command line turns into a one-line message."""


class L2LError(Exception):
    """A user-facing error: bad input, a name collision, a corrupted file, a diverged loss.

    The message must say what is wrong and what to do about it, in one line; the CLI prints
    it as ``error: <message>`` and exits with status 2 instead of showing a traceback.
    """
