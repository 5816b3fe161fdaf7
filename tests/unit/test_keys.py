"""Key values as keepalived's auth_hmac spells them; key files and new keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from vipcast import keys

HEX32 = "hex:" + bytes(range(32)).hex()


def test_hex_ascii_and_file_values_give_the_same_bytes(tmp_path: Path) -> None:
    assert keys.parse_key(1, HEX32).secret == bytes(range(32))
    assert keys.parse_key(2, "a" * 40).secret == b"a" * 40
    (tmp_path / "k").write_text(HEX32 + "\r\n")
    key = keys.parse_key(3, "file:k", base=tmp_path)
    assert key.secret == bytes(range(32))
    assert key.path == tmp_path / "k"
    assert "00010203" not in repr(key)  # the secret is never shown


@pytest.mark.parametrize(
    ("key_id", "value", "reason"),
    [
        (0, HEX32, "key id"),
        (256, HEX32, "key id"),
        (1, "hex:00", "1 bytes"),
        (1, "hex:zz", "not hex"),
        (1, "x" * 65, "65 bytes"),
        (1, "é" * 40, "ASCII"),
        (1, "file:/nonexistent/key", "key file"),
    ],
)
def test_bad_values_are_refused_with_the_reason(key_id: int, value: str, reason: str) -> None:
    with pytest.raises(keys.BadKey, match=reason):
        keys.parse_key(key_id, value)


def test_a_written_key_file_is_private_and_reads_back(tmp_path: Path) -> None:
    secret = keys.new_key()
    path = tmp_path / "vrrp.key"
    keys.write_key_file(path, secret)
    assert path.stat().st_mode & 0o777 == 0o600
    assert not keys.readable_by_others(path)
    assert keys.parse_key(1, f"file:{path}").secret == secret
    with pytest.raises(FileExistsError):
        keys.write_key_file(path, secret)
    path.chmod(0o644)
    assert keys.readable_by_others(path)
