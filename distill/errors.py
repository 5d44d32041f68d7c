"""Error types the CLI turns into exit codes.

InputError is anything the user can fix (bad file, bad key, bad option). The CLI prints its message
on stderr and exits 2, never a traceback. Messages name the file and the key or question id.
"""

EXIT_OK = 0
EXIT_REGRESSION = 1
EXIT_BAD_INPUT = 2


class InputError(Exception):
    """A problem with the user's input; `str(err)` is the message shown to them."""

    exit_code = EXIT_BAD_INPUT
