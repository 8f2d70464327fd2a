"""The one base class of the mistakes a user can fix.

Every error the package raises for bad input (a config field, a path, a checkpoint of the wrong
kind, data it cannot read, an output that already exists) derives from `UserError`, so each
command reports all of them the same way: one `error:` line and exit status 2
(`maskgil_jax.cli`). This module imports nothing, so every floor of the package may use it.
"""


class UserError(ValueError):
  """A mistake in what the user asked for; the message names the flag, field or file."""


class OutputExistsError(UserError):
  """An output that is already there and was not written by this run (see `--overwrite`)."""


class UsageError(UserError):
  """A flag that is missing, unknown or malformed (or a library argument a flag passes on)."""
