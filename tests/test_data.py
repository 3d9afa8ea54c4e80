"""Dataset loading, validation, prompt rendering and atomic writing, on real files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guidedrl.data import (
    DatasetError,
    encode_prompts,
    filter_split,
    load_rows,
    render_prompt,
    validate_rows,
    write_jsonl,
)

ROWS = [
    {"prompt": "1+2\n", "answer": "3", "hint": "add", "split": "train"},
    {"prompt": [{"role": "user", "content": "2*3"}], "answer": 6, "split": "test",
     "teacher_solutions": [{"teacher": "t0", "text": "\\boxed{6}"}], "level": 2},
]


@pytest.fixture(scope="module")
def tokenizer():
    from guidedrl.world.tokenizer import build_tokenizer

    tok = build_tokenizer()
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    return tok


def test_jsonl_json_round_trips(tmp_path: Path) -> None:
    """Through datasets' loader, mixed-type columns included (answers both text and numbers, prompts both text
    and messages); a column a row lacks is absent from it, as written."""
    expected = validate_rows(ROWS, "rows")
    write_jsonl(tmp_path / "d.jsonl", ROWS)
    assert validate_rows(load_rows(tmp_path / "d.jsonl"), "d.jsonl") == expected
    (tmp_path / "d.json").write_text(json.dumps(ROWS))
    assert validate_rows(load_rows(str(tmp_path / "d.json")), "d.json") == expected
    assert "hint" not in load_rows(tmp_path / "d.jsonl")[1]


def test_parquet_and_save_to_disk(tmp_path: Path) -> None:
    from datasets import Dataset, DatasetDict

    rows = [{"prompt": "1+2\n", "answer": "3"}, {"prompt": "2*3\n", "answer": "6"}]
    ds = Dataset.from_list(rows)
    ds.to_parquet(str(tmp_path / "d.parquet"))
    assert load_rows(tmp_path / "d.parquet") == rows
    ds.save_to_disk(str(tmp_path / "single"))
    assert load_rows(tmp_path / "single") == rows
    DatasetDict({"train": ds, "test": ds.select([1])}).save_to_disk(str(tmp_path / "dict"))
    assert load_rows(tmp_path / "dict", "test") == rows[1:]
    with pytest.raises(DatasetError, match="test, train"):
        load_rows(tmp_path / "dict")
    with pytest.raises(DatasetError, match="no split 'dev'"):
        load_rows(tmp_path / "dict", split="dev")
    DatasetDict({"only": ds}).save_to_disk(str(tmp_path / "one"))
    assert load_rows(tmp_path / "one") == rows


def test_split_column(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "d.jsonl", ROWS)
    assert load_rows(tmp_path / "d.jsonl", "test") == ROWS[1:]
    assert filter_split(ROWS, "train") == ROWS[:1]
    with pytest.raises(DatasetError, match="no rows with split 'dev'; found: test, train"):
        filter_split(ROWS, "dev")
    with pytest.raises(DatasetError, match="no 'split' column"):
        filter_split([{"prompt": "x"}], "train")


def test_missing_unsupported_and_bad_json(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="nope.jsonl: no such file"):
        load_rows(tmp_path / "nope.jsonl")
    (tmp_path / "d.csv").write_text("a,b\n")
    with pytest.raises(DatasetError, match="unsupported format"):
        load_rows(tmp_path / "d.csv")
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a", "answer": "1"}\n\n{"prompt": "b", answer: 2}\n')
    with pytest.raises(DatasetError) as info:
        load_rows(tmp_path / "bad.jsonl")
    assert "bad.jsonl: row 1 (0-based): line 3: not valid JSON at column 17 (Expecting property name" in str(info.value)
    (tmp_path / "obj.json").write_text('{"prompt": "a"}')  # one object is one row, which lacks its answer
    with pytest.raises(DatasetError, match=r"obj.json: row 0 \(0-based\): field 'answer': missing"):
        validate_rows(load_rows(tmp_path / "obj.json"), str(tmp_path / "obj.json"))
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DatasetError, match="empty.jsonl: no rows"):
        load_rows(tmp_path / "empty.jsonl")
    (tmp_path / "notsaved").mkdir()
    with pytest.raises(DatasetError, match="save_to_disk"):
        load_rows(tmp_path / "notsaved")


def test_validate_normalizes_and_copies() -> None:
    rows = [dict(r) for r in ROWS] + [{"prompt": "p", "answer": "1", "hint": None, "teacher_solutions": None}]
    out = validate_rows(rows, "d.jsonl")
    assert out[1]["answer"] == "6" and out[1]["level"] == 2 and rows[1]["answer"] == 6
    assert "hint" not in out[2] and "teacher_solutions" not in out[2]
    out[1]["prompt"][0]["content"] = "changed"
    assert ROWS[1]["prompt"][0]["content"] == "2*3"


@pytest.mark.parametrize("row, row_no, field, problem", [
    ({"prompt": "p"}, 1, "answer", "missing"),
    ({"prompt": "  ", "answer": "1"}, 1, "prompt", "empty"),
    ({"prompt": "p", "answer": 1.5}, 1, "answer", "expected a string or an integer"),
    ({"prompt": "p", "answer": True}, 1, "answer", "expected a string or an integer"),
    ({"prompt": [{"role": "user"}], "answer": "1"}, 1, "prompt[0].content", "missing"),
    ({"prompt": 5, "answer": "1"}, 1, "prompt", "expected a string or a non-empty list"),
    ({"prompt": "p", "answer": "1", "hint": 3}, 1, "hint", "expected a string"),
    ({"prompt": "p", "answer": "1", "teacher_solutions": "x"}, 1, "teacher_solutions", "expected a list"),
    ({"prompt": "p", "answer": "1", "teacher_solutions": [{"teacher": "t", "text": "a"}, {"teacher": "t", "text": 4}]},
     1, "teacher_solutions[1].text", "expected a string, got int"),
    ({"prompt": "p", "answer": "1", "teacher_solutions": ["a"]}, 1, "teacher_solutions[0]", "expected a {teacher"),
])
def test_validate_errors_name_file_row_field(row: dict, row_no: int, field: str, problem: str) -> None:
    with pytest.raises(DatasetError) as info:
        validate_rows([{"prompt": "ok", "answer": "1"}, row], "data/train.jsonl")
    assert str(info.value).startswith(f"data/train.jsonl: row {row_no} (0-based): field '{field}': {problem}")
    assert (info.value.row, info.value.field) == (row_no, field)


def test_validate_from_file_and_extra_required(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "train.jsonl", [{"prompt": "p", "answer": "1"}, {"prompt": "q", "answer": ""}])
    with pytest.raises(DatasetError, match=r"train.jsonl: row 1 \(0-based\): field 'answer': empty"):
        validate_rows(load_rows(tmp_path / "train.jsonl"), str(tmp_path / "train.jsonl"))
    with pytest.raises(DatasetError, match="row 0 .*field 'hint': missing"):
        validate_rows([{"prompt": "p", "answer": "1"}], "x", required=("prompt", "answer", "hint"))
    with pytest.raises(DatasetError, match="x: no rows"):
        validate_rows([], "x")


def test_render_and_encode_prompts(tokenizer) -> None:
    assert render_prompt("1+2\n", tokenizer) == "1+2\n"
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "1+2"}]
    assert render_prompt(chat, tokenizer) == "be brief\n1+2\n"
    ids = encode_prompts(tokenizer, ["1+2\n", [{"role": "user", "content": "1+2"}]])
    assert ids[0] == [tokenizer.bos_token_id, *ids[1]]
    assert tokenizer.decode(ids[1]) == "1+2\n"


def test_render_without_chat_template() -> None:
    from guidedrl.world.tokenizer import build_tokenizer

    tok = build_tokenizer()
    assert render_prompt("x", tok) == "x"
    with pytest.raises(ValueError, match="chat template"):
        render_prompt([{"role": "user", "content": "x"}], tok)


def test_write_jsonl_is_atomic(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "d.jsonl"
    write_jsonl(target, ROWS)

    def failing():
        yield {"prompt": "new", "answer": "1"}
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_jsonl(target, failing())
    assert [json.loads(line) for line in target.read_text().splitlines()] == ROWS
    assert [p.name for p in target.parent.iterdir()] == ["d.jsonl"]
    with pytest.raises(TypeError):
        write_jsonl(target, [{"x": object()}])
    assert [p.name for p in target.parent.iterdir()] == ["d.jsonl"]
