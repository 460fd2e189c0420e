"""User-facing errors and the one exit-code rule every command follows.

Exit codes: 0 success; 1 an error the user can act on, printed as one ``error: ...`` line on standard error (a
missing or malformed file, a bad option value, label, image, prompt or checkpoint, a full disk, a non-finite loss);
2 a command-line usage error (argparse's: an unknown option, a missing or malformed argument; or a UsageError: options
that exclude or need each other); 130 interrupted (Ctrl-C). ``--verbose`` (where a command has it) or
``PROMPTIQA_DEBUG=1`` prints the traceback as well.
"""
from __future__ import annotations

import os
import sys
import traceback
from typing import Callable, Optional

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class PromptIQAError(Exception):
    """Base of every error a user can act on: the message names the file or option and what was expected."""


class ConfigError(PromptIQAError, ValueError):
    """A setting that cannot be used: an option value out of range, a malformed or mistyped config file."""


class UsageError(PromptIQAError):
    """A command line that does not make a request, found after parsing (options that exclude or need each other):
    one ``error: ...`` line and exit code 2, as argparse's own usage errors."""


def one_line(err: BaseException) -> str:
    """The message of ``err`` as one line: its first line (details follow with --verbose), or, for an OSError
    without a message of ours, "<reason>: <file>"."""
    if isinstance(err, OSError) and not isinstance(err, PromptIQAError) and err.strerror:
        names = " -> ".join(str(n) for n in (err.filename, err.filename2) if n is not None)
        return f"{err.strerror}: {names}" if names else err.strerror
    lines = str(err).strip().splitlines() or [type(err).__name__]
    first = lines[0].rstrip(":")
    return first + (" (--verbose for details)" if len(lines) > 1 else "")


def is_user_error(err: BaseException) -> bool:
    """True for errors reported as one line (ours, and the OS's: missing files, permissions, full disks)."""
    return isinstance(err, (PromptIQAError, OSError))


def run_command(main: Callable[[], Optional[int]], verbose: bool = False) -> int:
    """Run an entry point's ``main`` under the exit-code rule; returns the exit code (argparse's own exits pass
    through). Errors that are not the user's (bugs) keep their traceback."""
    verbose = verbose or os.environ.get("PROMPTIQA_DEBUG", "") not in ("", "0")
    try:
        code = main()
    except SystemExit as exit_:  # argparse: --help (0) and usage errors (2); a string code is a message
        if isinstance(exit_.code, str):
            print(exit_.code, file=sys.stderr)
            return EXIT_ERROR
        return int(exit_.code or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:
        if not is_user_error(err):
            raise
        if verbose:
            traceback.print_exc()
        print(f"error: {str(err) if verbose else one_line(err)}", file=sys.stderr)
        return EXIT_USAGE if isinstance(err, UsageError) else EXIT_ERROR
    return EXIT_OK if code is None else int(code)


def exit_with(main: Callable[[], Optional[int]], verbose: bool = False) -> None:
    """``sys.exit(run_command(main))``: the last line of every script."""
    sys.exit(run_command(main, verbose))
