"""extract_code, the paper's helper, as improvers see it (`from helpers import extract_code`)."""

from stop_tui.engine.extract import extract_code


def test_longest_outermost_block_without_fences():
    reply = "Idea: x.\n```python\na = 1\n```\nMore:\n```python\nb = 2\nc = 3\n```\n"
    assert extract_code(reply) == "b = 2\nc = 3"


def test_untagged_opening_fence_and_nested_blocks():
    assert extract_code("```\nx = 1\n```") == "x = 1"
    nested = "```python\ns = '''\n```python\ninner\n```\n'''\n```"
    assert extract_code(nested) == "s = '''\n```python\ninner\n```\n'''"


def test_no_block_gives_none_and_lists_map():
    assert extract_code("no code here") is None
    assert extract_code("```python\nunterminated") is None
    assert extract_code(["nothing", "```py\nq = 1\n```"]) == [None, "q = 1"]


def test_fences_must_start_at_column_zero():
    assert extract_code("  ```python\nx\n  ```") is None
