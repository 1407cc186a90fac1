"""`python -m securechat init`: what it tells the operator before the server starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from securechat import __main__ as cli


@pytest.mark.parametrize(
    ("public_origin", "said"),
    [
        ("", "only 127.0.0.1, localhost and [::1] are answered"),
        ("https://chat.example.org, http://10.0.0.5:8000", "http://10.0.0.5:8000, https://chat"),
    ],
    ids=["unset", "set"],
)
def test_init_says_which_hosts_are_answered(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    public_origin: str,
    said: str,
) -> None:
    """Unset, the note says only loopback is answered and names the setting; set, the origins."""
    monkeypatch.setenv("SECURECHAT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SECURECHAT_PUBLIC_ORIGIN", public_origin)
    assert cli.main(["init"]) == 0
    out = capsys.readouterr().out
    assert said in out
    assert ("SECURECHAT_PUBLIC_ORIGIN" in out) == (public_origin == "")


def test_init_refuses_a_malformed_public_origin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A public origin with a path is named in one line on stderr, and init exits 2."""
    monkeypatch.setenv("SECURECHAT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SECURECHAT_PUBLIC_ORIGIN", "https://chat.example.org/app")
    assert cli.main(["init"]) == 2
    assert "public_origin 'https://chat.example.org/app'" in capsys.readouterr().err
