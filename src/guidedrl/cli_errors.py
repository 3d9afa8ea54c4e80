"""How every ``guidedrl`` command ends when it cannot do what it was asked: one ``error:`` line and exit 2 for a
fault of the input or the environment (a config, a file, a path, a full disk, the user's own code), with Rich
markup escaped so ``guidedrl[vllm]`` prints as written; a traceback and a line saying so, exit 1, only for a
bug in guidedrl itself.
"""

from __future__ import annotations

import importlib
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from guidedrl.errors import GuidedError, storage_fault

BUG_EXIT = 1
FAULT_EXIT = 2


def fail(message: str, console: Console | None = None) -> NoReturn:
    """Print ``error: message`` (markup escaped, one line) and exit 2."""
    (console or Console()).print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(FAULT_EXIT)


def fault_message(err: BaseException) -> str | None:
    """The one line for an error that is the input's or the environment's fault; None for a bug of guidedrl."""
    if isinstance(err, GuidedError):
        return str(err)
    fault = storage_fault(err)
    if isinstance(err, OSError) or fault is not None:
        where = getattr(err, "filename", None)
        what = fault or getattr(err, "strerror", None) or str(err)
        return f"{where}: {what}" if where else what
    return None


def _click_exceptions() -> Any:
    """The exceptions of the click typer runs on: its own copy (typer >= 0.2x), or the click package."""
    return importlib.import_module(TyperGroup.__bases__[0].__module__.rsplit(".", 1)[0] + ".exceptions")


_CLICK = _click_exceptions()


class GuardedGroup(TyperGroup):
    """The command group whose every command ends in one line on a fault (see the module's docstring)."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except getattr(_CLICK, "NoArgsIsHelpError", ()):
            raise
        except _CLICK.UsageError as err:  # a command's options, parsed here: an out-of-range value, a typo
            fail(err.format_message())
        except (typer.Exit, typer.Abort, _CLICK.ClickException):
            raise
        except Exception as err:  # noqa: BLE001 - sorted into a fault (one line) or a bug (a traceback) here
            message = fault_message(err)
            if message is not None:
                fail(message)
            Console(stderr=True).print_exception()
            Console().print(f"[red]error:[/red] this is a bug in guidedrl ({escape(type(err).__name__)}: "
                            f"{escape(str(err))}); please report it with the traceback above",
                            highlight=False, soft_wrap=True)
            raise typer.Exit(BUG_EXIT) from None
