"""train/__main__.py: the command line wires each command's module up, and errors a user can fix
become one line and exit status 2."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from train_helpers import fit_args, logging_restored

from train.__main__ import COMMANDS, main


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    with logging_restored():
        yield


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_documents_its_options(command: str, capsys: pytest.CaptureFixture) -> None:
    module, _ = COMMANDS[command]
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m train {command}")
    assert module.add_arguments.__module__ == module.__name__ and module.run.__module__ == module.__name__


def test_cli_reports_config_errors_in_one_line_before_reading_data(tmp_path: Path, capsys) -> None:
    args = fit_args(tmp_path / "run", [{"type": "folder", "root": str(tmp_path / "nowhere")}])
    assert main(args + ["--set", "schedule.name=linear"]) == 2
    assert capsys.readouterr().err.startswith("error: Unknown schedule 'linear'")


def test_cli_reports_data_errors_in_one_line(tmp_path: Path, capsys) -> None:
    assert main(fit_args(tmp_path / "run", [{"type": "folder", "root": str(tmp_path / "nowhere")}])) == 2
    assert capsys.readouterr().err == f"error: Data folder {tmp_path / 'nowhere'} does not exist.\n"


def test_cli_reports_checkpoint_errors_in_one_line(tmp_path: Path, capsys) -> None:
    assert main(["evaluate", "--checkpoint", str(tmp_path), "--trials", "t.txt"]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path} has no config.json: not a speakerdemo checkpoint.\n"


def test_resuming_a_folder_that_is_not_a_run_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="has no config.yaml: not a run folder to resume"):
        main(["fit", "--resume", str(tmp_path)])
