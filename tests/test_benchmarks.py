"""Each benchmark's loader on a tiny copy in its source's real schema (written by the tests, read through
``datasets.load_dataset`` as a local copy or as a hub-shaped folder), the prompt templates, the selection of
benchmarks and groups, where local copies are found, and the docs' table of benchmarks."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import datasets
import pytest

from benchmark_fixtures import CHOICE, MATH, write_fixtures
from guidedrl.choices import INSTRUCTION, LETTERS
from guidedrl.data import DatasetError
from guidedrl.eval.benchmarks import BenchmarkError, answer_text, load_source, markdown_table, problem_rows, select
from guidedrl.eval.suite import SUFFIXES, check_tag, local_copies
from guidedrl.registry import BENCHMARKS, TEMPLATES
from guidedrl.templates import QWEN_MATH_SYSTEM

ROOT = Path(__file__).resolve().parents[1]
PAPERS = ["aime24", "aime25", "amc23", "math500", "minerva", "olympiadbench", "arc_c", "gpqa_diamond", "mmlu_pro"]


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_fixtures(tmp_path_factory.mktemp("benchmarks"))


def read(name: str, path: Path, template: str | None = "plain") -> list[dict]:
    bench = BENCHMARKS.get(name)
    raw, source = load_source(bench, path, Path("no-world"))
    assert source == str(path)
    return problem_rows(bench, raw, source, template)


def options_of(prompt: str) -> dict[str, str]:
    """The lettered option lines of a rendered multiple-choice question."""
    return {line[0]: line[3:] for line in prompt.splitlines() if line[:1] in LETTERS and line[1:3] == ". "}


@pytest.mark.parametrize("name", list(MATH))
def test_a_math_benchmark_reads_question_and_gold_answer_from_its_columns(name: str, fixtures: dict) -> None:
    assert read(name, fixtures[name]) == [{"prompt": q, "answer": a} for q, a in MATH[name]]


@pytest.mark.parametrize("name", list(CHOICE))
def test_a_choice_benchmark_letters_its_shuffled_options_and_the_gold_letter_names_the_correct_one(
        name: str, fixtures: dict) -> None:
    rows = read(name, fixtures[name])
    assert len(rows) == len(CHOICE[name])
    for row, (question, options, correct) in zip(rows, CHOICE[name]):
        shown = options_of(row["prompt"])
        assert row["prompt"].startswith(question + "\n\n") and row["prompt"].endswith(INSTRUCTION)
        assert sorted(shown.values()) == sorted(options) and list(shown) == list(LETTERS[:len(options)])
        assert shown[row["answer"]] == options[correct]
    assert read(name, fixtures[name]) == rows  # the same order on every load: a property of the benchmark


def test_gpqa_s_correct_answer_is_not_always_the_first_option(fixtures: dict) -> None:
    assert {row["answer"] for row in read("gpqa_diamond", fixtures["gpqa_diamond"])} != {"A"}


def test_the_default_template_asks_in_the_models_chat_with_qwen_math_s_system_prompt(fixtures: dict) -> None:
    row = read("math500", fixtures["math500"], template=None)[0]
    assert row["prompt"] == [{"role": "system", "content": QWEN_MATH_SYSTEM},
                             {"role": "user", "content": MATH["math500"][0][0]}]


def test_the_templates_wrap_the_question_as_the_papers_script_does() -> None:
    q = "What is 1+1?"
    assert TEMPLATES.get("plain")(q) == q
    assert TEMPLATES.get("r1_chat")(q) == [{"role": "user", "content": q}]
    assert TEMPLATES.get("r1_zero")(q) == (
        "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. The "
        "assistant first thinks about the reasoning process in the mind and then provides the user with the answer. "
        "The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, "
        "respectively, i.e., <think> reasoning process here </think> <answer> answer here </answer>. "
        "User: What is 1+1?\n\nPresent the answer in LaTex format: \\boxed{Your answer}. Assistant:")
    assert QWEN_MATH_SYSTEM == "Please reason step by step, and put your final answer within \\boxed{}."


def hub_folder(root: Path, config: str | None, split: str, rows: list[dict]) -> Path:
    """A folder shaped like a hub dataset repository (a README declaring the config, data files under it)."""
    (root / "data").mkdir(parents=True)
    datasets.Dataset.from_list(rows).to_parquet(str(root / "data" / f"{split}-00000-of-00001.parquet"))
    if config is not None:
        (root / "README.md").write_text(f"---\nconfigs:\n- config_name: {config}\n  data_files:\n  - split: {split}\n"
                                        f"    path: data/{split}-*\n---\n")
    return root


def test_a_hub_source_is_loaded_by_id_config_and_split(tmp_path: Path) -> None:
    gpqa = [{"Question": "Which?", "Correct Answer": "a", "Incorrect Answer 1": "b", "Incorrect Answer 2": "c",
             "Incorrect Answer 3": "d", "Record ID": "r1"}]
    math500 = [{"problem": "1+1?", "solution": "2", "answer": "2", "subject": "Algebra", "level": 1,
                "unique_id": "test/algebra/1.json"}]
    for name, config, rows in (("gpqa_diamond", "gpqa_diamond", gpqa), ("math500", None, math500)):
        bench = BENCHMARKS.get(name)
        repo = hub_folder(tmp_path / name, config, bench.split, rows)
        got, where = load_source(dataclasses.replace(bench, source=str(repo)), None, Path("no-world"))
        assert got == rows and where == f"{repo}{':' + config if config else ''}, {bench.split}"


def test_an_unreachable_hub_is_one_line_saying_how_to_give_a_local_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_DATASETS_CACHE", "/nonexistent-cache")
    with pytest.raises(BenchmarkError, match=r"^math500: cannot load HuggingFaceH4/MATH-500, test from the Hugging "
                                             r"Face hub \(.+\); give a local copy: --data math500=PATH "):
        load_source(BENCHMARKS.get("math500"), None, Path("no-world"))


def test_a_row_in_another_schema_is_named_with_its_row_and_column(tmp_path: Path) -> None:
    rows = [{"question": "q", "options": ["a", "b"], "answer_index": 1}, {"question": "q2", "options": ["a", "b"]}]
    path = tmp_path / "mmlu.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DatasetError, match=r"mmlu.jsonl: row 1 \(0-based\): field 'answer_index': missing \(a mmlu_pro "
                                           r"row needs question, options, answer_index\)"):
        read("mmlu_pro", path)
    path.write_text(json.dumps({"question": "q", "choices": {"text": ["a", "b"], "label": ["A", "B"]},
                                "answerKey": "E"}) + "\n")
    with pytest.raises(DatasetError, match=r"row 0 \(0-based\): not a arc_c row: column 'answerKey': 'E' is none of"):
        read("arc_c", path)
    path.write_text(json.dumps({"problem": "q", "answer": True}) + "\n")
    with pytest.raises(DatasetError, match="expected a string or a number, got bool"):
        read("aime24", path)
    path.write_text(json.dumps({"problem": " ", "answer": "1"}) + "\n")
    with pytest.raises(DatasetError, match=r"row 0 \(0-based\): field 'prompt': empty"):
        read("aime24", path)


def test_gold_answers_as_text() -> None:
    assert [answer_text(v) for v in (144.0, 7, " \\frac{1}{2} ", 0.5)] == ["144", "7", "\\frac{1}{2}", "0.5"]
    for bad in (None, True, float("nan"), [1]):
        with pytest.raises((TypeError, ValueError)):
            answer_text(bad)


def test_groups_expand_in_the_papers_order_and_each_benchmark_is_taken_once() -> None:
    def names(spec: str) -> list[str]:
        return [b.name for b in select(spec)]

    assert names("math") == PAPERS[:6] and names("ood") == PAPERS[6:] and names("all") == PAPERS
    assert names("world") == ["world_id", "world_ood"]
    assert names("mmlu_pro, math ,aime24") == ["mmlu_pro", *PAPERS[:6]]
    with pytest.raises(BenchmarkError, match=r"--benchmarks: unknown benchmark 'amc' \(did you mean 'amc23'\?\).*"
                                             r"or a group: math, ood, world, all"):
        select("amc")


def test_local_copies_from_data_items_and_a_data_dir(tmp_path: Path) -> None:
    chosen = select("aime24,math500,gpqa_diamond,minerva")
    (tmp_path / "math500.jsonl").write_text("")
    (tmp_path / "math500.parquet").write_text("")  # parquet is looked for first
    (tmp_path / "gpqa_diamond").mkdir()
    found = local_copies(["aime24=/x/a.parquet", "minerva = /y "], tmp_path, chosen)
    assert found == {"aime24": Path("/x/a.parquet"), "minerva": Path("/y"), "math500": tmp_path / "math500.parquet",
                     "gpqa_diamond": tmp_path / "gpqa_diamond"}
    assert SUFFIXES[0] == ".parquet"
    for item, message in (("aime24", "expected NAME=PATH"), ("=p", "expected NAME=PATH"),
                          ("aime=p", "--data: unknown benchmark 'aime'")):
        with pytest.raises(BenchmarkError, match=message):
            local_copies([item], None, chosen)
    with pytest.raises(BenchmarkError, match="--data-dir: .* is not a folder"):
        local_copies([], tmp_path / "none", chosen)


def test_a_tag_cannot_hold_the_separator_of_report_names() -> None:
    assert check_tag("after-3.1") == "after-3.1"
    for bad in ("a_b", "", "x/y"):
        with pytest.raises(BenchmarkError, match="--tag"):
            check_tag(bad)


def test_the_docs_list_every_built_in_benchmark_as_registered() -> None:
    assert markdown_table() in (ROOT / "docs" / "rewards-and-evaluation.md").read_text()
