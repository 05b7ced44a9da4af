"""The one exception type that means "the user's input is wrong"."""

from __future__ import annotations


class InputError(ValueError):
    """Malformed input: the message names the file, column or value at fault and how to fix it.

    The CLI prints it as one line and exits with :data:`EXIT_BAD_INPUT`; anything else is a bug.
    """


EXIT_BAD_INPUT = 2
EXIT_GATE_FAILED = 3
EXIT_INTERNAL = 1
