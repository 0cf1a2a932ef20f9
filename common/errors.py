"""The one exception type for bad user input, shared by every package.

Library code raises `InputError` (a `ValueError`) for a bad config key, a malformed system file or a bad
argument; the CLI turns it into one line on stderr and exit status 2.
"""


class InputError(ValueError):
    """Input a user can fix; the message names what to change."""
