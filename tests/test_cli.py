"""CLI dispatcher behaviour: help, version, and one-line errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys

from geneinfer import __version__
from geneinfer.cli import main


def test_version_and_help(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out
    out = subprocess.run(
        [sys.executable, "-m", "geneinfer", "--version"], capture_output=True, text=True, check=True
    )
    assert __version__ in out.stdout


def test_unknown_command_is_usage_error(capsys):
    try:
        main(["frobnicate"])
    except SystemExit as exc:
        assert exc.code == 2
    assert "invalid choice" in capsys.readouterr().err
