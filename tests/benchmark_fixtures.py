"""Tiny copies of the papers' benchmarks in their sources' real schemas (column names, types and answer
formats as the Hugging Face releases hold them), written by the tests into a folder, each in the format a user
would save it in: ``write_fixtures(folder)`` returns what each benchmark's rows must read as."""

from __future__ import annotations

import json
from pathlib import Path

import datasets

# what each fixture row must become: (question text, gold answer) for math, (question, options, correct) for choices
MATH = {
    "aime24": [("Find the sum $1+2+3$.", "6"), ("Find $7\\cdot 8$.", "56")],
    "aime25": [("Find $2^5$.", "32"), ("Find $10-3$.", "7")],
    "amc23": [("What is $12 \\times 12$?", "144"), ("What is $1/2+1/2$?", "1")],
    "math500": [("Compute $\\frac{28}{6}$.", "\\frac{14}{3}"),
                ("Convert $(0,3)$ to polar coordinates.", "\\left( 3, \\frac{\\pi}{2} \\right)")],
    "minerva": [("Give the speed of light in m/s.", "3 \\times 10^8"), ("What is 0.5 as a fraction?", "\\frac{1}{2}")],
    "olympiadbench": [("Find $x$ if $2x=1$.", "\\frac{1}{2}"), ("Find all $n$ with $n^2=4$.", "2, -2")],
}
CHOICE = {
    "arc_c": [("Which is a gas?", ("rock", "air", "wood", "iron"), 1),
              ("Which is warm?", ("ice", "snow", "sun", "hail"), 2)],
    "gpqa_diamond": [("Which particle has no charge?", ("neutron", "proton", "electron", "positron"), 0),
                     ("Which gas is noble?", ("argon", "oxygen", "nitrogen", "chlorine"), 0),
                     ("Which is a lepton?", ("muon", "proton", "neutron", "pion"), 0)],
    "mmlu_pro": [("2+2=?", tuple(str(i) for i in range(10)), 4), ("Which is prime?", ("4", "6", "7", "8", "9"), 2)],
}


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _parquet(path: Path, rows: list[dict]) -> Path:
    datasets.Dataset.from_list(rows).to_parquet(str(path))
    return path


def write_fixtures(folder: Path) -> dict[str, Path]:
    """One file (or saved folder) per built-in paper benchmark in ``folder``, named ``<benchmark>.<suffix>``
    (``--data-dir``'s convention); returns each benchmark's path."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    # HuggingFaceH4/aime_2024: id, problem, solution, answer (a string), url, year
    paths["aime24"] = _parquet(folder / "aime24.parquet", [
        {"id": 60 + i, "problem": q, "solution": "...", "answer": a, "url": "https://artofproblemsolving.com/x",
         "year": "2024"} for i, (q, a) in enumerate(MATH["aime24"])])
    # math-ai/aime25 (its test.jsonl): problem, answer (a string), id
    paths["aime25"] = _jsonl(folder / "aime25.jsonl", [{"problem": q, "answer": a, "id": str(i)}
                                                        for i, (q, a) in enumerate(MATH["aime25"])])
    # AI-MO/aimo-validation-amc: id, problem, answer (float64: 144.0), url
    paths["amc23"] = _parquet(folder / "amc23.parquet", [{"id": i, "problem": q, "answer": float(a), "url": "u"}
                                                         for i, (q, a) in enumerate(MATH["amc23"])])
    # HuggingFaceH4/MATH-500 (its test.jsonl): problem, solution, answer (LaTeX), subject, level, unique_id
    paths["math500"] = _jsonl(folder / "math500.jsonl", [
        {"problem": q, "solution": f"so $\\boxed{{{a}}}$", "answer": a, "subject": "Precalculus", "level": 2,
         "unique_id": f"test/precalculus/{i}.json"} for i, (q, a) in enumerate(MATH["math500"])])
    # math-ai/minervamath: question, answer
    paths["minerva"] = _parquet(folder / "minerva.parquet", [{"question": q, "answer": a} for q, a in MATH["minerva"]])
    # Hothan/OlympiadBench, OE_TO_maths_en_COMP: final_answer a list of $...$ strings, many other columns
    paths["olympiadbench"] = _parquet(folder / "olympiadbench.parquet", [
        {"id": 2000 + i, "question": q, "solution": ["..."],
         "final_answer": [f"${part.strip()}$" for part in a.split(",")],
         "context": None, "image_1": None, "modality": "Text-only", "difficulty": "Competition",
         "is_multiple_answer": "," in a, "unit": None, "answer_type": "Numerical", "error": None,
         "question_type": "Open-ended", "subfield": "Algebra", "subject": "Math", "language": "English"}
        for i, (q, a) in enumerate(MATH["olympiadbench"])])
    # allenai/ai2_arc, ARC-Challenge: choices {text, label}; labels are letters, or digits in some rows
    arc = []
    for i, (q, options, correct) in enumerate(CHOICE["arc_c"]):
        labels = list("ABCD") if i == 0 else ["1", "2", "3", "4"]
        arc.append({"id": f"Mercury_{i}", "question": q, "choices": {"text": list(options), "label": labels},
                    "answerKey": labels[correct]})
    paths["arc_c"] = _parquet(folder / "arc_c.parquet", arc)
    # Idavidrein/gpqa, gpqa_diamond (a csv on the hub): the correct answer first, saved here with save_to_disk
    gpqa = datasets.Dataset.from_list([
        {"Pre-Revision Question": q, "Question": q, "Correct Answer": options[0], "Incorrect Answer 1": options[1],
         "Incorrect Answer 2": options[2], "Incorrect Answer 3": options[3], "Explanation": "...",
         "Record ID": f"rec{i}", "High-level domain": "Physics"}
        for i, (q, options, _) in enumerate(CHOICE["gpqa_diamond"])])
    paths["gpqa_diamond"] = folder / "gpqa_diamond"
    datasets.DatasetDict({"train": gpqa}).save_to_disk(str(paths["gpqa_diamond"]))
    # TIGER-Lab/MMLU-Pro: options (up to ten), answer (a letter), answer_index
    paths["mmlu_pro"] = _parquet(folder / "mmlu_pro.parquet", [
        {"question_id": 70 + i, "question": q, "options": list(options), "answer": "ABCDEFGHIJ"[correct],
         "answer_index": correct, "cot_content": "", "category": "math", "src": "ori_mmlu-x"}
        for i, (q, options, correct) in enumerate(CHOICE["mmlu_pro"])])
    return paths
