"""`python -m repeval`: the same command as `repeval`."""

from repeval.cli import console

console()
