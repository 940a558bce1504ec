"""`python -m repeval`: the same command as `repeval`."""

from repeval.app.cli import console

console()
