"""`vipcast demo` refuses clearly what it cannot do, before building anything."""

from __future__ import annotations

import pytest

from vipcast.cli import demo
from vipcast.cli.main import EXIT_PRIVILEGE, main


def test_without_root_it_says_so_and_exits_4(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(demo.os, "geteuid", lambda: 1000)
    assert main(["demo", "--duration", "20"]) == EXIT_PRIVILEGE == demo.EXIT_PRIVILEGE
    assert "needs root: sudo make demo" in capsys.readouterr().err


@pytest.mark.parametrize("duration", ["5", "100000", "soon"])
def test_a_duration_out_of_range_is_a_usage_error(
    duration: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--duration", duration])
    assert exit_.value.code == 2
    assert "--duration" in capsys.readouterr().err
