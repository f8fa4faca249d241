"""The project's expected errors: what a person or a caller did wrong, said in one line.

Every error a user can cause (an unknown id, a value outside its vocabulary, an action the consent
does not allow) derives from :class:`DossierError`, so the command line and the web service answer
it with its message and a documented status instead of a traceback. Anything else is a bug.

>>> issubclass(DossierError, Exception)
True
"""

from __future__ import annotations


class DossierError(Exception):
    """An expected failure whose message alone tells the user what was wrong and how to fix it."""


class InputError(DossierError, ValueError):
    """A value given by a person that is malformed or outside its vocabulary (the message lists what is valid)."""
