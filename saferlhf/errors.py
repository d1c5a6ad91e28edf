"""The two kinds of failure a user should see as one clear line instead of a traceback.

* :class:`UserError` — a mistake in what the user asked for (a config value out of range, a missing
  or wrong model path, a run folder that already holds another run or is in use, an output that is an
  input, a read-only or full output disk, ...). The CLI prints
  ``saferlhf <command>: error: <message>`` (plus ``hint: ...``) and exits with status 2.
* :class:`NumericalError` — training produced a non-finite loss, score, advantage or parameter. The
  run stops before anything non-finite is saved; the last good checkpoint stays in place. The CLI
  prints ``saferlhf <command>: stopped: <message>`` and exits with status 3.

Data-file problems have their own classes in ``saferlhf.data.validate`` (``DataValidationError``,
``UnknownFormatError``); the CLI treats them as user errors too. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A user mistake: one line (``message``) and an optional ``hint`` on how to fix it."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text}\n  hint: {self.hint}" if self.hint else text


class NumericalError(RuntimeError):
    """A non-finite value in training (``step`` and ``tensor`` name where); nothing non-finite is saved."""

    def __init__(self, message: str, step: int | None = None, tensor: str | None = None):
        super().__init__(message)
        self.step, self.tensor = step, tensor
