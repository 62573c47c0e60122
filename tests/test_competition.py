"""trainLabels.csv, the one parser: labels must be the competition's classes (or the ones given), one-line errors."""

import pytest

from kagglecifar import competition
from kagglecifar.errors import KaggleCifarError
from kagglecifar.kaggle_io import submission_csv


def labels_file(tmp_path, *rows, encoding="utf-8"):
    path = tmp_path / "trainLabels.csv"
    path.write_text("id,label\n" + "".join(f"{row}\n" for row in rows), encoding=encoding)
    return path


def test_the_competition_labels_are_read(tmp_path):
    path = labels_file(tmp_path, "1,cat", "2,truck", "3,airplane")
    assert competition.read_labels(path) == {1: "cat", 2: "truck", 3: "airplane"}


@pytest.mark.parametrize("label, hint", [("unicorn", ""), ("Cat", "did you mean 'cat'?")])
def test_a_label_that_is_not_a_competition_class_is_an_error_naming_file_and_line(tmp_path, label, hint):
    path = labels_file(tmp_path, "1,cat", "2,dog", f"3,{label}", "4,frog")
    with pytest.raises(KaggleCifarError) as err:
        competition.read_labels(path)
    message = str(err.value)
    assert message.startswith(f"{path}: line 4: {label!r} is not a CIFAR-10 class (airplane, automobile,")
    assert hint in message and "--classes" in message and "\n" not in message


def test_a_class_list_given_replaces_the_competition_s(tmp_path):
    path = labels_file(tmp_path, "1,unicorn", "2,cat")
    assert competition.read_labels(path, ["unicorn", "cat"]) == {1: "unicorn", 2: "cat"}
    with pytest.raises(KaggleCifarError, match=r"line 3: 'cat' is not one of the classes given \(unicorn, dog\)"):
        competition.read_labels(path, ["unicorn", "dog"])


@pytest.mark.parametrize("classes", [["cat"], ["cat", "cat"], ["cat", ""], ["cat", " dog"], ["a,b", "c"]])
def test_a_class_list_must_be_two_or_more_distinct_plain_names(classes):
    with pytest.raises(KaggleCifarError, match=r"^classes .*: .*; give distinct names, e.g. --classes cat,dog$"):
        competition.check_classes(classes)


def test_a_utf16_labels_file_is_one_line_naming_the_file_and_what_to_do(tmp_path):
    path = labels_file(tmp_path, "1,cat", encoding="utf-16")
    with pytest.raises(KaggleCifarError, match=r"trainLabels.csv: not UTF-8 text .*; save it as UTF-8 CSV"):
        competition.read_labels(path)


def test_a_missing_labels_file_says_to_fetch(tmp_path):
    with pytest.raises(KaggleCifarError, match=r"trainLabels.csv: not found; run `kagglecifar fetch`"):
        competition.read_labels(tmp_path / "trainLabels.csv")


def test_train_classes_without_a_cache_are_the_competition_s_and_check_the_labels(tmp_path):
    labels_file(tmp_path, "1,cat", "2,dog")
    assert submission_csv.submission_classes(tmp_path) == competition.CIFAR10_CLASSES
    labels_file(tmp_path, "1,cat", "2,unicorn")
    with pytest.raises(KaggleCifarError, match=r"line 3: 'unicorn' is not a CIFAR-10 class"):
        submission_csv.submission_classes(tmp_path)
