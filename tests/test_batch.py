"""Reading files of prompts for `submit --from`, and the tables the CLI prints."""

from __future__ import annotations

from pathlib import Path

import pytest

from webhook_app.tools.batch import BatchFileError, Line, Outcome, outcomes_table, read_batch, tally


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_text_file_is_one_prompt_a_line(tmp_path: Path) -> None:
    path = write(tmp_path, "prompts.txt", "# a comment\na lighthouse\n\n  a red kite  \n")
    assert read_batch(path) == [
        Line(2, {"prompt": "a lighthouse"}),
        Line(4, {"prompt": "a red kite"}),
    ]


def test_csv_columns_and_blank_cells(tmp_path: Path) -> None:
    text = (
        "prompt,aspect_ratio,medium,metadata\n"
        'a lighthouse,16:9,,"{""team"": ""design""}"\n'
        ",,,\n"
        '"a kite, red",,art,\n'
    )
    assert read_batch(write(tmp_path, "jobs.csv", text)) == [
        Line(2, {"prompt": "a lighthouse", "aspect_ratio": "16:9", "metadata": {"team": "design"}}),
        Line(4, {"prompt": "a kite, red", "medium": "art"}),
    ]


def test_json_lines(tmp_path: Path) -> None:
    text = (
        '{"prompt": "a lighthouse", "metadata": {"n": 1}}\n'
        "\n"
        '{"prompt": "a kite", "medium": "art"}\n'
    )
    assert read_batch(write(tmp_path, "jobs.jsonl", text)) == [
        Line(1, {"prompt": "a lighthouse", "metadata": {"n": 1}}),
        Line(3, {"prompt": "a kite", "medium": "art"}),
    ]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("empty.txt", "\n# nothing\n", "no prompts"),
        ("jobs.csv", "title\nx\n", ":1: the header must name a prompt column"),
        ("jobs.csv", "prompt,colour\nx,red\n", ":2: unknown column 'colour'"),
        ("jobs.csv", "prompt\nx,extra\n", ":2: more cells than columns"),
        ("jobs.csv", "prompt,metadata\nx,{oops\n", ":2: metadata is not JSON"),
        ("jobs.csv", "prompt,metadata\nx,[1]\n", ":2: metadata must be a JSON object"),
        ("jobs.jsonl", '{"prompt": "x"}\nnot json\n', ":2: not JSON"),
        ("jobs.jsonl", '["x"]\n', ":1: must be a JSON object"),
        ("jobs.jsonl", '{"medium": "art"}\n', ":1: prompt is missing"),
    ],
)
def test_what_cannot_be_read_names_the_line(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    with pytest.raises(BatchFileError, match=message):
        read_batch(write(tmp_path, name, text))


def test_the_summary_table_lines_up_and_counts(tmp_path: Path) -> None:
    job = {
        "id": "j-1",
        "status": "completed",
        "created_at": "2026-01-01T12:00:00.123Z",
        "prompt": "a lighthouse " * 10,
        "items": [{"dp_item_id": 1}, {"dp_item_id": None}],
    }
    outcomes = [
        Outcome(Line(1, {"prompt": "a lighthouse"}), job=job),
        Outcome(Line(2, {"prompt": "x"}), error={"message": "medium must be one of art"}),
    ]
    lines = outcomes_table(outcomes).splitlines()
    assert lines[0].split() == ["line", "id", "status", "images", "created", "prompt"]
    assert lines[2].split()[:5] == ["1", "j-1", "completed", "1/2", "2026-01-01"]
    assert lines[2].endswith("…") and len(lines[2]) < 140
    assert (
        lines[3].split()[:3] == ["2", "-", "refused"] and "(medium must be one of art)" in lines[3]
    )
    assert lines[0].index("status") == lines[2].index("completed") == lines[3].index("refused")
    assert tally(outcomes) == "2 lines: 1 completed, 1 refused"
