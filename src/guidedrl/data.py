"""Loading, validating and writing prompt/answer datasets, and turning prompts into token ids.

A dataset is a list of rows with a ``prompt`` (a string, or a TRL-style conversation: a list of
``{"role", "content"}`` messages) and an ``answer``; ``hint`` and ``teacher_solutions`` are optional and
any other column is passed through to reward functions. Every error names the file, the row and the field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, StrictStr, ValidationError, field_validator

from guidedrl.errors import GuidedError
from guidedrl.files import write_text

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

Prompt = str | list[dict[str, str]]
SUFFIXES = (".jsonl", ".json", ".parquet")


class DatasetError(GuidedError, ValueError):
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
    """Rows of a ``.jsonl``, ``.json`` or ``.parquet`` file (``datasets.load_dataset``), or of a ``save_to_disk``
    directory (``datasets.load_from_disk``).

    ``split`` picks a split of a saved ``DatasetDict`` (needed when it has several); for any other source
    it keeps the rows whose ``split`` column equals it, as in the embedded world's files.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(path, "no such file or directory")
    if path.is_dir():
        return _load_saved(path, split)
    if path.suffix not in SUFFIXES:
        raise DatasetError(path, f"unsupported format; expected one of {', '.join(SUFFIXES)} "
                                 "or a directory written by datasets' save_to_disk")
    rows = _load_file(path)
    return rows if split is None else filter_split(rows, split, str(path))


def _load_file(path: Path) -> list[dict]:
    """A JSON-lines, JSON-array or parquet file through ``datasets.load_dataset``; a malformed file is a
    :class:`DatasetError` naming the row Arrow stopped at."""
    import datasets
    import pyarrow
    from datasets import load_dataset
    from datasets.exceptions import DatasetGenerationError

    datasets.disable_progress_bars()
    verbosity = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # its "Failed to load JSON" line would precede ours
    try:
        data = load_dataset("parquet" if path.suffix == ".parquet" else "json", data_files=str(path), split="train")
        rows = data.to_list()  # strings are decoded here: a file that is not UTF-8 fails here
    except StopIteration:  # an empty file
        raise DatasetError(path, "no rows") from None
    except (DatasetGenerationError, UnicodeDecodeError, pyarrow.ArrowException) as err:
        located = _jsonl_damage(path) if path.suffix == ".jsonl" else None
        if located is not None:
            raise located from None
        if isinstance(err, UnicodeDecodeError):
            raise DatasetError(path, f"not UTF-8 text (byte {err.start}); the file is damaged") from None
        cause = " ".join(str(err.__cause__ or err).split())
        row = re.search(r"in row (\d+)", cause)
        raise DatasetError(path, f"cannot read: {cause}", row=int(row.group(1)) if row else None) from None
    finally:
        datasets.logging.set_verbosity(verbosity)
    # Arrow gives every row every column: a column a row does not have comes back as None, so drop those
    return [{k: v for k, v in row.items() if v is not None} for row in rows]


def _jsonl_damage(path: Path) -> DatasetError | None:
    """The first row of a JSON-lines file that is not a JSON object (not UTF-8, not JSON, another value), as an
    error naming its row and line; None if every line is one (the reader failed for another reason)."""
    row = 0
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                value = json.loads(raw.strip().decode("utf-8"))
            except UnicodeDecodeError as err:
                return DatasetError(path, f"line {number}: not UTF-8 text (byte {err.start})", row=row)
            except json.JSONDecodeError as err:
                return DatasetError(path, f"line {number}: not valid JSON at column {err.colno} ({err.msg})", row=row)
            if not isinstance(value, dict):
                return DatasetError(path, f"line {number}: expected a JSON object, got {type(value).__name__}",
                                    row=row)
            row += 1
    return None


def _load_saved(path: Path, split: str | None) -> list[dict]:
    """A ``Dataset`` or ``DatasetDict`` written by ``save_to_disk``; a dict needs a split unless it has one."""
    import pyarrow
    from datasets import DatasetDict, load_from_disk

    try:
        data = load_from_disk(str(path))
    except FileNotFoundError:
        raise DatasetError(path, "directory was not written by datasets' save_to_disk") from None
    except (OSError, ValueError, pyarrow.ArrowException) as err:  # a torn arrow file, a damaged state.json
        raise DatasetError(path, f"cannot read: {' '.join(str(err).split())}; the saved dataset is damaged") from None
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


class _Message(BaseModel):
    """One chat message of a conversational prompt."""

    model_config = ConfigDict(extra="allow")
    role: StrictStr
    content: StrictStr


class _Solution(BaseModel):
    """One stored teacher solution."""

    model_config = ConfigDict(extra="allow")
    teacher: StrictStr
    text: StrictStr


class Row(BaseModel):
    """A training or evaluation row: ``prompt`` (text, or TRL's list of messages) and ``answer`` (an integer is
    read as its text); ``hint`` and ``teacher_solutions`` are optional; other columns pass through to rewards."""

    model_config = ConfigDict(extra="allow")
    prompt: StrictStr | list[_Message]
    answer: StrictStr
    hint: StrictStr | None = None
    teacher_solutions: list[_Solution] | None = None

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt(cls, value: Any) -> Any:
        if not isinstance(value, (str, list)) or (isinstance(value, list) and not value):
            raise ValueError("expected a string or a non-empty list of {role, content} messages, got "
                             f"{type(value).__name__}")
        return value

    @field_validator("answer", mode="before")
    @classmethod
    def _answer(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ValueError(f"expected a string or an integer, got {type(value).__name__}")
        return str(value)


_SHAPES = {"_Message": "a {role, content} message", "_Solution": "a {teacher, text} object"}


def _problem(error: dict) -> str:
    """Pydantic's error in the words of the dataset's fields."""
    kind, given = error["type"], type(error.get("input")).__name__
    if kind == "missing":
        return "missing"
    if kind == "string_type":
        return f"expected a string, got {given}"
    if kind == "list_type":
        return f"expected a list of {{teacher, text}} objects, got {given}"
    if kind == "model_type":
        return f"expected {_SHAPES.get(error['ctx']['class_name'], 'an object')}, got {given}"
    return error["msg"].removeprefix("Value error, ")


def validate_rows(rows: Iterable[Any], source: str, required: Sequence[str] = ("prompt", "answer")) -> list[dict]:
    """Checked, normalized copies of ``rows`` (one :class:`Row` model): answers become strings, null optional
    fields are dropped, blank required fields refused.

    Raises :class:`DatasetError` at the first problem, naming ``source``, the row and the field.
    """
    out: list[dict] = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DatasetError(source, f"expected a mapping of fields, got {type(row).__name__}", row=i)
        for key in required:
            if key not in row:
                raise DatasetError(source, "missing", row=i, field=key)
            if _is_empty(row[key]):
                raise DatasetError(source, "empty", row=i, field=key)
        try:
            checked = Row.model_validate(row)
        except ValidationError as err:
            e = max(err.errors(), key=lambda x: len(x["loc"]))  # of a union, the branch that got furthest
            # a union's error carries the branch's name ("str", "list[_Message]") in its location: drop it
            loc = [p for p in e["loc"] if isinstance(p, int) or p in Row.model_fields or p in ("role", "content",
                                                                                                   "teacher", "text")]
            field = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if k else str(p)) for k, p in enumerate(loc))
            raise DatasetError(source, _problem(e), row=i, field=field) from None
        out.append(checked.model_dump(exclude_none=True))
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


_MARK = "\x00guidedrl\x00"


def chat_frame(tokenizer: PreTrainedTokenizerBase) -> tuple[str, str] | None:
    """The text a tokenizer's chat template puts before and after one user message (the generation prompt
    included), or None without a template: how to find the user's words in a pre-rendered prompt."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    text = tokenizer.apply_chat_template([{"role": "user", "content": _MARK}], add_generation_prompt=True,
                                         tokenize=False)
    if text.count(_MARK) != 1:
        return None
    before, after = text.split(_MARK)
    return before, after


def with_hint(prompt: Prompt, hint: str, template: str, frame: tuple[str, str] | None = None) -> Prompt:
    """The prompt with the hint added to the user's turn by the template: into the last user message of a
    conversation, or, for a prompt pre-rendered with the chat template ``frame``, before the template's
    end-of-turn and generation prompt (never inside the assistant's turn)."""
    if isinstance(prompt, str):
        if frame is not None and frame[1] and prompt.endswith(frame[1]):
            body = prompt[:len(prompt) - len(frame[1])]
            return template.format(prompt=body, hint=hint) + frame[1]
        return template.format(prompt=prompt, hint=hint)
    messages = [dict(m) for m in prompt]
    last = max(i for i, m in enumerate(messages) if m["role"] == "user") if any(
        m["role"] == "user" for m in messages) else len(messages) - 1
    messages[last]["content"] = template.format(prompt=messages[last]["content"], hint=hint)
    return messages


def as_messages(prompt: Prompt, tokenizer: PreTrainedTokenizerBase) -> Prompt:
    """A prompt pre-rendered with ``tokenizer``'s chat template as the one user message it renders; any other
    prompt as it is. Lets another model (a teacher) render the question with its own template."""
    frame = chat_frame(tokenizer) if isinstance(prompt, str) else None
    if frame is None or not (prompt.startswith(frame[0]) and prompt.endswith(frame[1])) or not frame[1]:
        return prompt
    return [{"role": "user", "content": prompt[len(frame[0]):len(prompt) - len(frame[1])]}]


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


def encode_rows(tokenizer: PreTrainedTokenizerBase, rows: Sequence[dict], source: str) -> list[list[int]]:
    """Token ids of every row's prompt; a conversation the tokenizer has no chat template for is an error
    naming the first such row."""
    try:
        return encode_prompts(tokenizer, [row["prompt"] for row in rows])
    except ValueError as err:
        first = next(i for i, row in enumerate(rows) if isinstance(row["prompt"], list))
        raise DatasetError(source, str(err), row=first, field="prompt") from None


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    """Write one JSON object per line, atomically: a crash leaves the old file (or none), never half a file."""
    write_text(Path(path), "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
