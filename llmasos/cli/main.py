"""The `llmasos` command: groups are nouns, subcommands verbs.

Errors that a user can cause (`LLMasOSError`) become one line on stderr and exit status 1; usage
errors exit 2 (click's own handling). This is the one place that mapping lives, and where a command
that ends in an error is audited (as the admin app, whose key the local user holds) when no system
call wrote its row already.
"""

from __future__ import annotations

import logging
import sys
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Annotated

import typer

from llmasos.cli import apps as apps_cli
from llmasos.cli import ask, audit, call, chat, processes, run, serve
from llmasos.cli import config as config_cli
from llmasos.cli import data as data_cli
from llmasos.cli import docs as docs_cli
from llmasos.cli import keys as keys_cli
from llmasos.cli import models as models_cli
from llmasos.cli import nodes as nodes_cli
from llmasos.cli import pii as pii_cli
from llmasos.cli import plugins as plugins_cli
from llmasos.cli import top as top_cli
from llmasos.cli import workflow as workflow_cli
from llmasos.errors import AuditIntegrityError, LLMasOSError

logger = logging.getLogger("llmasos.cli")

# `-h` as well as `--help`, as Ollama, git and most CLIs accept it; click hands the setting down to every
# subcommand's context, so the groups and commands below need no setting of their own.
HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}

app = typer.Typer(
    name="llmasos",
    help="LLMasOS: an operating system for LLM applications.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings=HELP_OPTIONS,
)


def _version_text() -> str:
    try:
        return f"llmasos {package_version('llmasos')}"
    except PackageNotFoundError:  # a source tree that was never installed
        return "llmasos (version unknown: not installed as a package)"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(_version_text())
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """LLMasOS: an operating system for LLM applications."""


app.add_typer(models_cli.app, name="models")
app.add_typer(apps_cli.app, name="apps")
app.add_typer(plugins_cli.app, name="plugins")
app.add_typer(workflow_cli.app, name="workflow")
app.add_typer(config_cli.app, name="config")
app.add_typer(nodes_cli.app, name="node")
app.add_typer(docs_cli.docs_app, name="docs")
app.add_typer(docs_cli.kv_app, name="kv")
app.add_typer(data_cli.data_app, name="data")
app.add_typer(keys_cli.app, name="keys")
app.add_typer(pii_cli.app, name="pii")
app.command()(run.run)
app.command()(chat.chat)
app.command()(call.call)
app.command()(ask.ask)
app.command()(ask.voice)
app.command()(serve.serve)
app.command()(processes.ps)
app.command()(top_cli.top)
app.command()(nodes_cli.nodes)
app.command()(audit.audit)

# Ollama's habits: `pull`, `list`, `show`, `rm` at the top level run the `models` verbs themselves (same
# options, same output), listed in their own help panel as aliases.
_ALIASES_PANEL = "Aliases of `llmasos models ...`"
for _verb, _command_fn in (
    ("pull", models_cli.pull),
    ("list", models_cli.list_),
    ("show", models_cli.show),
    ("rm", models_cli.rm),
):
    app.command(
        _verb,
        help=f"Alias of `llmasos models {_verb}`: {_command_fn.__doc__}",
        rich_help_panel=_ALIASES_PANEL,
    )(_command_fn)


def main() -> None:
    """Entry point of the console script."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        # Non-standalone mode returns the code of a `typer.Exit` (Ctrl-C becomes Exit(130)) instead of
        # exiting; pass it on, or every such exit would read as success.
        rc = app(standalone_mode=False)
    except LLMasOSError as err:
        _audit_failure(err.message, err)
        typer.secho(f"error: {err.message}", err=True, fg=typer.colors.RED)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except typer.Abort:
        sys.exit(1)
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    except Exception as err:  # click usage errors arrive here in non-standalone mode
        # typer >= 0.29 vendors click as `typer._click`, so its usage errors are not instances of
        # `click.ClickException`: recognise one by its interface (show() and an int exit_code).
        show, code = getattr(err, "show", None), getattr(err, "exit_code", None)
        if callable(show) and isinstance(code, int):
            show()
            sys.exit(code)
        _audit_failure(f"internal error: {type(err).__name__}")
        raise
    if isinstance(rc, int) and rc:
        sys.exit(rc)


def _command() -> str:
    """The command's name (`apps create`, `run`), never its arguments: a prompt is no audit field."""
    words = [w for w in sys.argv[1:3] if not w.startswith("-")]
    groups = {g.name for g in app.registered_groups}
    return " ".join(words[:2] if words and words[0] in groups else words[:1]) or "(none)"


def _audit_failure(reason: str, err: LLMasOSError | None = None) -> None:
    if err is not None and (err.audited or isinstance(err, AuditIntegrityError)):
        return
    from llmasos.security.admin import ADMIN_APP
    from llmasos.security.audit import AuditLog, AuditRecord

    try:
        AuditLog().record(
            AuditRecord(
                app=ADMIN_APP,
                call=f"cli {_command()}",
                outcome="error",
                reason=reason,
                interface="cli",
            )
        )
    except Exception:  # the user's error message matters more than its audit row
        logger.warning("could not audit the failed command", exc_info=True)


if __name__ == "__main__":
    main()
