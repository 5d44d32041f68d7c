"""Error types the CLI turns into exit codes.

InputError is anything the user can fix (bad file, bad key, bad option). The CLI prints its message
on stderr and exits 2, never a traceback. Messages name the file and the key or question id.
"""

import os

EXIT_OK = 0
EXIT_REGRESSION = 1
EXIT_BAD_INPUT = 2


class InputError(Exception):
    """A problem with the user's input; `str(err)` is the message shown to them."""

    exit_code = EXIT_BAD_INPUT


def env_choice(name: str, choices: tuple[str, ...]) -> str:
    """Environment variable `name`, case and spaces ignored, one of `choices` (unset or empty: the first)."""
    value = os.environ.get(name, "").strip().lower() or choices[0]
    if value not in choices:
        raise InputError(f"environment variable {name}={os.environ[name]!r}: must be one of {', '.join(choices)}")
    return value
