"""Loading, validating and writing prompt/answer datasets, and turning prompts into token ids.

A dataset is a list of rows with a ``prompt`` (a string, or a TRL-style conversation: a list of
``{"role", "content"}`` messages) and an ``answer``; ``hint`` and ``teacher_solutions`` are optional and
any other column is passed through to reward functions. Every error names the file, the row and the field.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

Prompt = str | list[dict[str, str]]
SUFFIXES = (".jsonl", ".json", ".parquet")


class DatasetError(ValueError):
    """A dataset problem, located as precisely as known: ``file: row N (0-based): field 'x': problem``."""

    def __init__(self, source: str | Path, problem: str, row: int | None = None, field: str | None = None):
        self.source, self.problem, self.row, self.field = str(source), problem, row, field
        where = [self.source]
        if row is not None:
            where.append(f"row {row} (0-based)")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(": ".join([*where, problem]))


def load_rows(path: str | Path, split: str | None = None) -> list[dict]:
    """Rows of a ``.jsonl``, ``.json`` or ``.parquet`` file, or of a ``save_to_disk`` directory.

    ``split`` picks a split of a saved ``DatasetDict`` (needed when it has several); for any other source
    it keeps the rows whose ``split`` column equals it, as in the embedded world's files.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(path, "no such file or directory")
    if path.is_dir():
        return _load_saved(path, split)
    if path.suffix == ".jsonl":
        rows = _load_jsonl(path)
    elif path.suffix == ".json":
        rows = _load_json(path)
    elif path.suffix == ".parquet":
        rows = _load_parquet(path)
    else:
        raise DatasetError(path, f"unsupported format; expected one of {', '.join(SUFFIXES)} "
                                 "or a directory written by datasets' save_to_disk")
    return rows if split is None else filter_split(rows, split, str(path))


def _load_jsonl(path: Path) -> list[dict]:
    """One JSON object per non-blank line; row numbers count objects, line numbers count lines."""
    rows: list[dict] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DatasetError(path, f"line {lineno}: invalid JSON: {err.msg} (column {err.colno})",
                                   row=len(rows)) from None
            if not isinstance(row, dict):
                raise DatasetError(path, f"line {lineno}: expected a JSON object, got {type(row).__name__}",
                                   row=len(rows))
            rows.append(row)
    return rows


def _load_json(path: Path) -> list[dict]:
    """A JSON array of objects."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DatasetError(path, f"invalid JSON: {err.msg} (line {err.lineno}, column {err.colno})") from None
    if not isinstance(data, list):
        raise DatasetError(path, f"expected a JSON array of objects, got {type(data).__name__}")
    for i, row in enumerate(data):
        if not isinstance(row, dict):
            raise DatasetError(path, f"expected a JSON object, got {type(row).__name__}", row=i)
    return data


def _load_parquet(path: Path) -> list[dict]:
    """All rows of a parquet file as Python values."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as err:
        raise DatasetError(path, f"cannot read parquet: {err}") from None


def _load_saved(path: Path, split: str | None) -> list[dict]:
    """A ``Dataset`` or ``DatasetDict`` written by ``save_to_disk``; a dict needs a split unless it has one."""
    from datasets import DatasetDict, load_from_disk

    try:
        data = load_from_disk(str(path))
    except FileNotFoundError:
        raise DatasetError(path, "directory was not written by datasets' save_to_disk") from None
    if isinstance(data, DatasetDict):
        names = sorted(data)
        if split is None:
            if len(names) != 1:
                raise DatasetError(path, f"has splits {', '.join(names)}; choose one (dataset_split / split=)")
            split = names[0]
        if split not in data:
            raise DatasetError(path, f"no split {split!r}; available: {', '.join(names)}")
        return data[split].to_list()
    rows = data.to_list()
    return rows if split is None else filter_split(rows, split, str(path))


def filter_split(rows: Iterable[dict], split: str, source: str = "<rows>") -> list[dict]:
    """Rows whose ``split`` column equals ``split``, for files that hold several splits side by side."""
    rows = list(rows)
    if not any("split" in row for row in rows):
        raise DatasetError(source, f"split {split!r} requested but the rows have no 'split' column")
    kept = [row for row in rows if row.get("split") == split]
    if not kept:
        found = sorted({str(row.get("split")) for row in rows})
        raise DatasetError(source, f"no rows with split {split!r}; found: {', '.join(found)}")
    return kept


def validate_rows(rows: Iterable[Any], source: str, required: Sequence[str] = ("prompt", "answer")) -> list[dict]:
    """Checked, normalized copies of ``rows``: answers become strings, null optional fields are dropped.

    Raises :class:`DatasetError` at the first problem, naming ``source``, the row and the field.
    """
    out: list[dict] = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DatasetError(source, f"expected a mapping of fields, got {type(row).__name__}", row=i)
        row = copy.deepcopy(row)
        for key in ("hint", "teacher_solutions"):
            if key not in required and key in row and row[key] is None:
                del row[key]
        for key in required:
            if key not in row:
                raise DatasetError(source, "missing", row=i, field=key)
            if _is_empty(row[key]):
                raise DatasetError(source, "empty", row=i, field=key)
        if "prompt" in row:
            _check_prompt(row["prompt"], source, i)
        if "answer" in row:
            answer = row["answer"]
            if isinstance(answer, bool) or not isinstance(answer, (str, int)):
                raise DatasetError(source, f"expected a string or an integer, got {type(answer).__name__}",
                                   row=i, field="answer")
            row["answer"] = str(answer)
        if "hint" in row and not isinstance(row["hint"], str):
            raise DatasetError(source, f"expected a string, got {type(row['hint']).__name__}", row=i, field="hint")
        if "teacher_solutions" in row:
            _check_solutions(row["teacher_solutions"], source, i)
        out.append(row)
    if not out:
        raise DatasetError(source, "no rows")
    return out


def _is_empty(value: Any) -> bool:
    """None, a blank string or an empty collection: values that cannot stand for a required field."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    return isinstance(value, (list, dict)) and not value


def _check_prompt(prompt: Any, source: str, row: int) -> None:
    """A prompt is a string or a non-empty list of messages with string ``role`` and ``content``."""
    if isinstance(prompt, str):
        return
    if not isinstance(prompt, list) or not prompt:
        raise DatasetError(source, "expected a string or a non-empty list of {role, content} messages, "
                                   f"got {type(prompt).__name__}", row=row, field="prompt")
    for j, message in enumerate(prompt):
        if not isinstance(message, dict):
            raise DatasetError(source, f"expected a {{role, content}} message, got {type(message).__name__}",
                               row=row, field=f"prompt[{j}]")
        for key in ("role", "content"):
            if not isinstance(message.get(key), str):
                problem = "missing" if key not in message else f"expected a string, got {type(message[key]).__name__}"
                raise DatasetError(source, problem, row=row, field=f"prompt[{j}].{key}")


def _check_solutions(solutions: Any, source: str, row: int) -> None:
    """``teacher_solutions`` is a list of ``{"teacher": str, "text": str}``."""
    if not isinstance(solutions, list):
        raise DatasetError(source, f"expected a list of {{teacher, text}} objects, got {type(solutions).__name__}",
                           row=row, field="teacher_solutions")
    for j, solution in enumerate(solutions):
        if not isinstance(solution, dict):
            raise DatasetError(source, f"expected a {{teacher, text}} object, got {type(solution).__name__}",
                               row=row, field=f"teacher_solutions[{j}]")
        for key in ("teacher", "text"):
            if not isinstance(solution.get(key), str):
                problem = "missing" if key not in solution else f"expected a string, got {type(solution[key]).__name__}"
                raise DatasetError(source, problem, row=row, field=f"teacher_solutions[{j}].{key}")


def render_prompt(prompt: Prompt, tokenizer: PreTrainedTokenizerBase) -> str:
    """The text the policy is conditioned on: a string as is, a conversation through the chat template."""
    if isinstance(prompt, str):
        return prompt
    if not isinstance(prompt, list):
        raise TypeError(f"prompt must be a string or a list of messages, got {type(prompt).__name__}")
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("a conversational prompt (list of messages) needs a tokenizer with a chat template; "
                         f"{type(tokenizer).__name__} has none: set tokenizer.chat_template or use string prompts")
    return tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)


def encode_prompts(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Prompt]) -> list[list[int]]:
    """Token ids of each prompt, in order.

    String prompts get the tokenizer's special tokens (e.g. BOS); rendered conversations do not, since a chat
    template already writes them.
    """
    ids: list[list[int]] = [[] for _ in prompts]
    for is_chat in (False, True):
        index = [i for i, p in enumerate(prompts) if isinstance(p, list) == is_chat]
        if index:
            texts = [render_prompt(prompts[i], tokenizer) for i in index]
            encoded = tokenizer(texts, add_special_tokens=not is_chat)["input_ids"]
            for i, seq in zip(index, encoded):
                ids[i] = list(seq)
    return ids


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    """Write one JSON object per line, atomically: a crash leaves the old file (or none), never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
