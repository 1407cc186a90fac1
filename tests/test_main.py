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


def test_init_cluster_names_the_files_to_copy_never_their_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``init --cluster`` names the secret file and the directory key, with fingerprints and
    the settings that point at them; neither file's content reaches stdout."""
    data = tmp_path / "data"
    monkeypatch.setenv("SECURECHAT_DATA_DIR", str(data))
    assert cli.main(["init", "--cluster"]) == 0
    out = capsys.readouterr().out
    secret, key = data / "server.secret", data / "directory.key"
    assert f"{secret.resolve()}  (server secret" in out
    assert f"{key.resolve()}  (directory key" in out
    assert "SECURECHAT_SERVER_SECRET_FILE" in out and "SECURECHAT_DIRECTORY_KEY_FILE" in out
    assert secret.read_bytes().hex() not in out
    assert "PRIVATE KEY" not in out


def test_init_uses_the_configured_secret_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the *_FILE settings, init creates the secrets there, mode 0600, not in the data
    directory."""
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o700)
    monkeypatch.setenv("SECURECHAT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SECURECHAT_SERVER_SECRET_FILE", str(shared / "secret"))
    monkeypatch.setenv("SECURECHAT_DIRECTORY_KEY_FILE", str(shared / "key.pem"))
    assert cli.main(["init", "--cluster"]) == 0
    assert str((shared / "secret").resolve()) in capsys.readouterr().out
    for path in (shared / "secret", shared / "key.pem"):
        assert path.stat().st_mode & 0o777 == 0o600
    assert not (tmp_path / "data" / "server.secret").exists()
    assert not (tmp_path / "data" / "directory.key").exists()


def test_init_on_one_sqlite_file_accepts_a_replaced_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One process over its own file has no cluster to disagree with: an operator who
    replaces the directory key on purpose gets a server that starts, with the new key's
    fingerprint printed (clients flag the change themselves)."""
    data = tmp_path / "data"
    monkeypatch.setenv("SECURECHAT_DATA_DIR", str(data))
    assert cli.main(["init"]) == 0
    first = capsys.readouterr().out
    (data / "directory.key").unlink()
    assert cli.main(["init"]) == 0
    again = capsys.readouterr().out
    assert "Key directory fingerprint" in again and again != first
