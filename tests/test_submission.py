import os

import pytest

from kagglecifar.errors import KaggleCifarError
from kagglecifar.kaggle_io.submission_csv import (
    check_submission,
    newest_submission,
    validate_submission,
    write_submission,
)

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture
def sample(tmp_path):
    path = tmp_path / "sampleSubmission.csv"
    path.write_text("id,label\n" + "".join(f"{i},cat\n" for i in range(1, 7)))
    return path


def problems_of(tmp_path, sample, content: bytes | str):
    path = tmp_path / "sub.csv"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return validate_submission(path, sample, CLASSES)


GOOD = "id,label\n1,cat\n2,dog\n3,frog\n4,ship\n5,truck\n6,bird\n"


def test_valid_file_has_no_problems(tmp_path, sample):
    problems = problems_of(tmp_path, sample, GOOD)
    assert problems == []
    check_submission(tmp_path / "sub.csv", sample, CLASSES)  # does not raise


def test_row_order_does_not_matter(tmp_path, sample):
    problems = problems_of(tmp_path, sample, "id,label\n6,bird\n1,cat\n3,frog\n2,dog\n5,truck\n4,ship\n")
    assert problems == []


def test_header_bom_and_encoding(tmp_path, sample):
    problems = problems_of(tmp_path, sample, GOOD.replace("id,label", "Id,Label"))
    assert [(p.line, "header" in p.message) for p in problems] == [(1, True)]
    problems = problems_of(tmp_path, sample, b"\xef\xbb\xbf" + GOOD.encode())
    assert [(p.line, "byte-order mark" in p.message) for p in problems] == [(1, True)]
    problems = problems_of(tmp_path, sample, GOOD.encode().replace(b"3,frog", b"3,fr\xffg"))
    assert (4, True) in [(p.line, "not UTF-8" in p.message) for p in problems]


def test_mixed_line_endings_point_at_the_odd_line(tmp_path, sample):
    problems = problems_of(tmp_path, sample, GOOD.replace("4,ship\n", "4,ship\r\n"))
    assert [(p.line, p.message) for p in problems] == [(5, "mixed line endings (1 CRLF, 6 LF)")]
    problems = problems_of(tmp_path, sample, GOOD.replace("\n", "\r\n"))  # all CRLF is fine
    assert problems == []


def test_bad_cells_are_reported_with_line_numbers_and_grouped(tmp_path, sample):
    content = "id,label\n1,cat\n2,doge\n3,\nx,frog\n4,ship,extra\n5,kitty\n6,puppy\n,dog\n\n"
    problems = problems_of(tmp_path, sample, content)
    got = {(p.line, p.message.split(" ")[0], p.count) for p in problems}
    assert (3, "unknown", 3) in got  # doge, kitty, puppy: one kind, first on line 3
    assert (4, "empty", 2) in got  # "3," and ",dog"
    assert (5, "id", 1) in got and "not an integer" in next(p.message for p in problems if p.line == 5)
    assert (6, "3", 1) in got  # "3 cells, expected 2"
    assert (10, "blank", 1) in got
    missing = [p for p in problems if "without a row" in p.message]
    assert missing[0].line == 0 and missing[0].message == "sampleSubmission.csv ids without a row: 1, e.g. 4"


def test_duplicate_extra_ids_and_row_count(tmp_path, sample):
    content = GOOD + "2,cat\n2,dog\n99,cat\n"
    problems = problems_of(tmp_path, sample, content)
    duplicate = next(p for p in problems if "again" in p.message)
    assert (duplicate.line, duplicate.count) == (8, 2) and "first on line 3" in duplicate.message
    extra = next(p for p in problems if "not in sampleSubmission" in p.message)
    assert (extra.line, extra.count) == (10, 1)
    assert any(p.message == "9 rows, sampleSubmission.csv has 6" for p in problems)


def test_check_submission_names_file_and_first_problems(tmp_path, sample):
    path = tmp_path / "sub.csv"
    path.write_text(GOOD.replace("2,dog", "2,doge").replace("5,truck", "5,lorry"))
    with pytest.raises(KaggleCifarError) as info:
        check_submission(path, sample, CLASSES)
    message = str(info.value)
    assert str(path) in message and "line 3: unknown label 'doge'" in message and "(and 1 more like it)" in message
    assert "\n" not in message


def test_write_submission_follows_sample_order_and_validates(tmp_path, sample):
    sample.write_text("id,label\n" + "".join(f"{i},cat\n" for i in (4, 2, 6, 1, 5, 3)))
    out = write_submission(
        tmp_path / "subs" / "a.csv",
        [1, 2, 3, 4, 5, 6, 7],
        ["cat", "dog", "frog", "ship", "truck", "bird", "horse"],
        sample,
        CLASSES,
    )
    assert out.read_text() == "id,label\n4,ship\n2,dog\n6,bird\n1,cat\n5,truck\n3,frog\n"
    assert os.listdir(out.parent) == ["a.csv"]


def test_write_submission_refuses_to_overwrite(tmp_path, sample):
    ids, labels = list(range(1, 7)), ["cat"] * 6
    path = write_submission(tmp_path / "a.csv", ids, labels, sample, CLASSES)
    path.write_text("keep me")
    with pytest.raises(KaggleCifarError, match="already exists.*--force.*--out"):
        write_submission(path, ids, labels, sample, CLASSES)
    assert path.read_text() == "keep me"
    write_submission(path, ids, labels, sample, CLASSES, force=True)
    assert path.read_text().startswith("id,label\n1,cat\n")


def test_write_submission_needs_every_sample_id_and_valid_labels(tmp_path, sample):
    with pytest.raises(KaggleCifarError, match="ids without a prediction: 2, e.g. 5, 6"):
        write_submission(tmp_path / "a.csv", [1, 2, 3, 4], ["cat"] * 4, sample, CLASSES)
    with pytest.raises(KaggleCifarError, match="invalid submission.*unknown label 'kitty'"):
        write_submission(tmp_path / "a.csv", range(1, 7), ["kitty"] * 6, sample, CLASSES)
    assert os.listdir(tmp_path) == ["sampleSubmission.csv"]  # nothing half-written left behind


def test_newest_submission(tmp_path):
    with pytest.raises(KaggleCifarError, match="no submission CSV"):
        newest_submission(tmp_path / "submissions")
    folder = tmp_path / "submissions"
    folder.mkdir()
    for age, name in ((30, "old.csv"), (10, "new.csv"), (0, ".new.csv.tmp-1.csv"), (0, "new.bad-ids.txt")):
        (folder / name).write_text("id,label\n")
        os.utime(folder / name, (1_700_000_000 - age, 1_700_000_000 - age))
    assert newest_submission(folder) == folder / "new.csv"


@pytest.mark.parametrize("written", ["01", "+1", " 1", "1 ", "1_0", "١", "0001"])
def test_ids_must_be_written_exactly_as_the_scorer_compares_them(tmp_path, sample, written):
    # Kaggle's scorer compares ids as text: '01' is not '1', although int() takes both.
    problems = problems_of(tmp_path, sample, GOOD.replace("\n1,cat\n", f"\n{written},cat\n"))
    text = " | ".join(map(str, problems))
    assert "line 2:" in text and ("compares ids as text" in text or "is not an integer" in text), text
    assert "ids without a row: 1, e.g. 1" in text


def test_a_sample_submission_with_odd_ids_is_refused(tmp_path):
    sample = tmp_path / "sampleSubmission.csv"
    sample.write_text("id,label\n1,cat\n02,cat\n")
    with pytest.raises(KaggleCifarError, match=r"sampleSubmission.csv: line 3: id '02' is not a plain integer"):
        validate_submission(tmp_path / "sub.csv", sample, CLASSES)


# Files that are valid or nearly so: the fast checks (C-speed, for what predict writes) must agree with the
# row-by-row ones on every one of them, problems and messages included.
NEAR_MISSES = [
    GOOD,
    GOOD.replace("\n", "\r\n"),
    "\ufeff" + GOOD,
    GOOD.replace("2,dog", '"2",dog'),
    GOOD.replace("2,dog", "2,dog,"),
    GOOD.replace("2,dog\n", "2\n"),
    GOOD.replace("2,dog\n", "2,dog\n\n"),
    GOOD.replace("2,dog\n", "2,dog,x\n3\n").replace("3,frog\n", ""),  # the right number of commas overall
    GOOD.replace("2,dog", "02,dog"),
    GOOD.replace("2,dog", "2,Dog"),
    GOOD.replace("2,dog", "1,dog"),
    GOOD.replace("6,bird\n", ""),
    GOOD + "7,cat\n",
    GOOD.replace("2,dog", "2,"),
    GOOD.replace("2,dog", ",dog"),
    GOOD.replace("id,label", "id,labels"),
    GOOD.replace("2,dog\n", "2,dog\u2028"),
    GOOD.replace("\n", "\r"),
    "id,label\n",
    "",
]


@pytest.mark.parametrize("content", NEAR_MISSES)
def test_the_fast_check_agrees_with_the_row_by_row_one(tmp_path, sample, monkeypatch, content):
    from kagglecifar.kaggle_io import submission_csv

    fast = problems_of(tmp_path, sample, content)
    monkeypatch.setattr(submission_csv, "_plainly_valid", lambda *args: False)
    assert list(map(str, fast)) == list(map(str, problems_of(tmp_path, sample, content)))


SAMPLES = [
    "id,label\n1,cat\n2,cat\n",
    "id,label\r\n1,cat\r\n2,cat\r\n",
    "\ufeffid,label\n1,cat\n",
    "id\n1\n2\n",
    " id ,label\n1,cat\n",
    'id,label\n"1",cat\n',
    "id,label\n1,cat\n\n2,cat\n",
    "id,label\n01,cat\n",
    "id,label\n1 ,cat\n",
    "label,id\n1,cat\n",
    "id,label\n",
    "",
    "id,label\n1,cat\u20282,cat\n",
]


@pytest.mark.parametrize("content", SAMPLES)
def test_the_fast_sample_reader_agrees_with_the_csv_module(tmp_path, monkeypatch, content):
    from kagglecifar.kaggle_io import submission_csv

    path = tmp_path / "sampleSubmission.csv"
    path.write_bytes(content.encode())

    def read():
        try:
            return submission_csv.read_sample_ids(path).tolist()
        except KaggleCifarError as exc:
            return str(exc)

    fast = read()
    monkeypatch.setattr(submission_csv, "_plain_ids", lambda text: None)
    assert fast == read()
