"""The shared strict YAML loader and the one-line message helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.messages import brief, escape_controls, key_shown, masked, shown
from exporter.yamlfile import UnreadableFileError, YamlFileError, load_yaml_file


def load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "f.yaml"
    path.write_text(text)
    return load_yaml_file(path)


def test_loads_plain_yaml(tmp_path: Path) -> None:
    assert load(tmp_path, "a: 1\nb: [x, {c: 2}]\n") == {"a": 1, "b": ["x", {"c": 2}]}
    assert load(tmp_path, "") is None
    assert load(tmp_path, "base: &b {x: 1}\nuse:\n  <<: *b\n  y: 2\n") == {
        "base": {"x": 1}, "use": {"x": 1, "y": 2}}


@pytest.mark.parametrize(("text", "message"), [
    ("a: 1\na: 2\n", "not valid YAML: duplicate key 'a' at line 2, column 1"),
    ("x:\n  k: 1\n  k: 1\n", "not valid YAML: duplicate key 'k' at line 3, column 3"),
    ("? [1, 2]\n: x\n", "not valid YAML: a mapping key must be a plain value at line 1"),
    ("? {a: 1}\n: x\n", "not valid YAML: a mapping key must be a plain value at line 1"),
    ("a: [\n", "not valid YAML: "),
    ("a: !!python/object:os.system x\n", "not valid YAML: "),
    ("a: 1\n\x07: 2\n", "not valid YAML: "),
])
def test_errors_are_one_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(YamlFileError) as caught:
        load(tmp_path, text)
    assert str(caught.value).startswith(message)
    assert str(caught.value).isprintable()


def test_unreadable_and_not_utf8(tmp_path: Path) -> None:
    with pytest.raises(UnreadableFileError, match=r"^cannot read: No such file or directory$"):
        load_yaml_file(tmp_path / "absent.yaml")
    with pytest.raises(UnreadableFileError, match=r"^cannot read: Is a directory$"):
        load_yaml_file(tmp_path)
    (tmp_path / "latin1.yaml").write_bytes(b"a: \xff\n")
    with pytest.raises(YamlFileError, match=r"^not UTF-8 text$") as caught:
        load_yaml_file(tmp_path / "latin1.yaml")
    assert not isinstance(caught.value, UnreadableFileError)


@pytest.mark.parametrize(("value", "text"), [
    ("Xq7Rk2LmP9sT4vWz8bN3cF6hJ1dG5yA0eU2iO7pQ4rS9tV3wX8zB6nM1kL5jH2gF",
     "'Xq7R…' (64 characters)"),
    ("/run/secrets/api_secret", "'/r…' (23 characters)"),
    ("short", "'…' (5 characters)"),
    ("", "'…' (0 characters)"),
    ("\x1b[31mXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", "'\\x1b[31…' (35 characters)"),
    (12345, "a int"),
])
def test_masked_shows_a_short_prefix_and_the_length(value: object, text: str) -> None:
    assert masked(value) == text


@pytest.mark.parametrize(("key", "text"), [
    ("pol_interval", "pol_interval"),
    ("extra", "extra"),
    ("api_secret2", "api_secret2"),
    ("Xq7Rk2LmP9sT4vWz8bN3cF6hJ1dG5yA0eU2iO7pQ4rS9tV3wX8zB6nM1kL5jH2gF",
     "'Xq7R…' (64 characters)"),
    ("deadbeef0123456789abcdef", "'dea…' (24 characters)"),
    ("a" * 41, "'aaaa…' (41 characters)"),
    ("Name", "'…' (4 characters)"),
    (3, "3"),
    (None, "None"),
])
def test_key_shown(key: object, text: str) -> None:
    assert key_shown(key) == text


def test_brief_shown_escape() -> None:
    assert brief("x" * 100) == "'" + "x" * 56 + "..."
    assert brief("ok") == "'ok'"
    assert shown("plain") == "plain"
    assert shown("two\nlines") == "'two\\nlines'"
    assert escape_controls("a\nb\x1b[2J\x00c\u2028") == "a\\nb\\x1b[2J\\x00c\\u2028"
    assert escape_controls("Grüße ✓") == "Grüße ✓"
