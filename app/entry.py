"""The console entry point around the `repeval` app (`repeval.app.cli`): a user error prints one
line and exits with code 2, no traceback. Torch-free, like the app."""

from __future__ import annotations

import logging
import sys

import typer
from typer.exceptions import TyperException

from repeval.errors import NonFiniteLossError, RepevalError, one_line


def main(argv: list[str] | None = None) -> int:
    """Console entry point: user errors print one line and exit with code 2, no traceback."""
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger("repeval").setLevel(logging.INFO)  # other libraries stay at WARNING
    args = sys.argv[1:] if argv is None else list(argv)
    from repeval.app.cli import app

    try:
        result = app(args=args or ["--help"], standalone_mode=False, prog_name="repeval")
    except TyperException as e:  # typer's (vendored click) usage errors: bad option, bad value
        message = e.format_message() if hasattr(e, "format_message") else str(e)
        print(f"error: {message}", file=sys.stderr)
        return getattr(e, "exit_code", 2) or 2
    except NonFiniteLossError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 1
    except RepevalError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    except (typer.Abort, KeyboardInterrupt):
        print("aborted", file=sys.stderr)
        return 130
    return result if isinstance(result, int) else 0


def console() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console()
