"""Configuration: safe defaults, and every field overridable from the environment."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from securechat import datadir
from securechat.config import Config
from tests.livesrv import LiveServer


def test_defaults_are_the_safe_ones() -> None:
    """Defaults: FULL durability, OWASP-strength argon2id, 600k PBKDF2, 2048-bit RSA floor."""
    config = Config()
    assert config.db_synchronous == "FULL"
    assert config.argon2_memory_kib >= 19 * 1024
    assert config.argon2_time_cost >= 2
    assert config.kdf_min_iterations >= 600_000
    assert config.rsa_min_bits >= 2048
    assert config.key_backup_max_bytes == 16 * 1024
    assert config.admin_token is None
    assert config.allowed_origins == ()
    assert config.public_origin == ()  # loopback hosts only (securechat/web/origins.py)
    assert config.request_body_timeout == 10.0


def test_environment_overrides_each_type() -> None:
    """SECURECHAT_* variables override ints, floats, paths, strings and lists."""
    config = Config.from_env(
        {
            "SECURECHAT_DATA_DIR": "/tmp/elsewhere",
            "SECURECHAT_WS_QUEUE_FRAMES": "7",
            "SECURECHAT_WS_FRAMES_PER_S": "2.5",
            "SECURECHAT_ADMIN_TOKEN": "t",
            "SECURECHAT_ALLOWED_ORIGINS": "https://a.example, https://b.example",
            "SECURECHAT_PUBLIC_ORIGIN": "https://chat.example",
        }
    )
    assert config.data_dir == Path("/tmp/elsewhere")
    assert config.ws_queue_frames == 7
    assert config.ws_frames_per_s == 2.5
    assert config.admin_token == "t"
    assert config.allowed_origins == ("https://a.example", "https://b.example")
    assert config.public_origin == ("https://chat.example",)


def test_data_dir_and_secret_are_private(tmp_path: Path) -> None:
    """The data directory is 0700 and the server secret 0600; a second start reuses it."""
    data = tmp_path / "data"
    first = datadir.prepare(data)
    second = datadir.prepare(data)
    assert first == second
    assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(data / datadir.SERVER_SECRET_FILE).st_mode) == 0o600


def test_database_files_are_private(live_server: LiveServer) -> None:
    """The SQLite file and its WAL are readable by the server's user only."""
    files = list(live_server.database_path.parent.glob("securechat.db*"))
    assert files
    for path in files:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path


def test_server_secrets_never_show_in_a_repr(tmp_path: Path) -> None:
    """A log line or traceback that prints the app's state shows no key."""
    secrets = datadir.prepare(tmp_path / "data")
    shown = repr(secrets)
    for key in (secrets.cookie_key, secrets.decoy_salt_key, secrets.device_token_key):
        assert key.hex() not in shown and repr(key) not in shown


def test_settings_that_may_hold_passwords_never_show_in_a_repr(tmp_path: Path) -> None:
    """The admin token, the key passphrase and URLs with credentials stay out of logs."""
    config = Config(
        data_dir=tmp_path,
        admin_token="token-7f3a",
        directory_key_passphrase="passphrase-7f3a",
        redis_url="redis://:pw-7f3a@127.0.0.1/0",
        database_url="postgresql://chat:pw-7f3b@db/chat",
    )
    assert "7f3a" not in repr(config) and "7f3b" not in repr(config)
