"""Every text file a user gives is read by one rule: strictly UTF-8, a bad file one error that
names the file and its first bad line (the inputs themselves are covered in test_cli.py)."""
import pytest

from maskgil_jax.errors import UserError
from maskgil_jax.text_files import TextFileError, read_lines


def test_utf8_lines_with_or_without_a_byte_order_mark(tmp_path):
  f = tmp_path / "prompts.txt"
  f.write_bytes("\ufeffcafé au lait\r\n一只猫\n\nlast".encode("utf-8"))
  assert read_lines(f, "--prompts") == ["café au lait", "一只猫", "", "last"]


@pytest.mark.parametrize("data, line, column, byte", [
    (b"caf\xe9", 1, 4, 0xe9),  # Latin-1
    (b"one\ntwo\nthr\xff\xfeee\n", 3, 4, 0xff),
    ("ok é\n".encode() + b"\x80", 2, 1, 0x80),  # a stray continuation byte
    ("été\n".encode("utf-16"), 1, 1, 0xff),  # UTF-16 with its byte-order mark
])
def test_a_file_that_is_not_utf8_is_one_error_naming_file_and_line(tmp_path, data, line,
                                                                    column, byte):
  f = tmp_path / "names.txt"
  f.write_bytes(data)
  with pytest.raises(TextFileError) as e:
    read_lines(f, "--class-names")
  assert isinstance(e.value, UserError)
  assert str(e.value) == (f"--class-names {f}: line {line} is not UTF-8 text (byte "
                          f"0x{byte:02x} at character {column}); save the file as UTF-8")
