"""Messages name the option of the command the user ran.

Library code raises errors that tell the user what to change; the same setting is
``data.on_bad_image=skip`` for ``conr train`` and ``--on-bad-image skip`` for
``conr cluster``. Code that writes such a message asks :func:`option` for the
spelling; a command maps the config keys it exposes as its own options with
:func:`command_options` while it runs.
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["option", "command_options"]

_NAMES: ContextVar[dict] = ContextVar("conr_option_names", default={})


def option(key: str, value=None) -> str:
    """How the running command spells ``key`` (a config key such as ``run.out_dir`` or a
    flag such as ``--run-dir``), with ``value`` appended when given."""
    flag = _NAMES.get().get(key)
    if flag is None:
        if value is None:
            return key
        return f"{key} {value}" if key.startswith("-") else f"{key}={value}"
    return flag if value is None or flag.isupper() else f"{flag} {value}"


@contextmanager
def command_options(mapping: dict[str, str]):
    """Within the block, :func:`option` answers with ``mapping``'s flags."""
    token = _NAMES.set({**_NAMES.get(), **mapping})
    try:
        yield
    finally:
        _NAMES.reset(token)
