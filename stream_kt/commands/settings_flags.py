"""The settings' click flags: ``settings_options`` declares them from ``StreamSettings``, ``settings_from_options``
loads the settings from what a command received (``stream_kt.settings.load_settings``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import click

from stream_kt.settings import ENV, FLAGS, StreamSettings, load_settings

F = TypeVar("F", bound=Callable[..., Any])


def settings_options(*names: str) -> Callable[[F], F]:
    """Click flags for the settings ``names`` (default: every one) and ``--config FILE.toml``.

    A flag left out is None, so ``settings_from_options`` falls back to the environment,
    the file and the default.  The command receives them as ``setting_<name>`` and
    ``settings_config`` keyword arguments.
    """
    chosen = names or tuple(StreamSettings.model_fields)

    def decorate(command: F) -> F:
        for name in reversed(chosen):
            field = StreamSettings.model_fields[name]
            default = field.default
            shown = repr(default) if default == "" else default
            text = f"{field.description} " if field.description else ""
            text += f"(env {ENV[name]}, default {shown})"
            if field.annotation is bool:
                flag = FLAGS[name]
                command = click.option(f"{flag}/--no-{flag[2:]}", f"setting_{name}", default=None, help=text)(command)
            else:
                command = click.option(FLAGS[name], f"setting_{name}", default=None, metavar=name.upper(), help=text)(
                    command
                )
        return click.option(
            "--config",
            "settings_config",
            metavar="FILE.toml",
            help="settings file: keys named as the settings (batch_size = 64); flags and environment win over it",
        )(command)

    return decorate


def settings_from_options(options: dict[str, Any], environ: Mapping[str, str] | None = None) -> StreamSettings:
    """The settings of a command's ``settings_options`` keyword arguments (popped from ``options``); ``environ``:
    instead of ``os.environ``."""
    flags = {key.removeprefix("setting_"): options.pop(key) for key in list(options) if key.startswith("setting_")}
    return load_settings(flags, environ, options.pop("settings_config", None))
