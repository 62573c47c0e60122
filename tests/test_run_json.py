"""run.json records which code trained a run: the version and, from a git checkout, the commit and whether
the tree had uncommitted changes; outside a checkout, or without git, those fields are None and nothing fails."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

import kagglecifar
from kagglecifar import rundir

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(repo: Path, *args: str) -> str:
    command = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def checkout(tmp_path):
    repo = tmp_path / "checkout"
    (repo / "kagglecifar").mkdir(parents=True)
    (repo / "kagglecifar" / "code.py").write_text("x = 1\n")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "first")
    return repo


@needs_git
def test_a_clean_checkout_records_its_commit(checkout):
    info = rundir.code_version(checkout)
    assert info == {
        "kagglecifar": kagglecifar.__version__,
        "git_commit": git(checkout, "rev-parse", "HEAD"),
        "git_dirty": False,
    }


@needs_git
def test_changed_tracked_files_make_the_tree_dirty_and_untracked_ones_do_not(checkout):
    (checkout / "notes.txt").write_text("untracked\n")
    assert rundir.code_version(checkout)["git_dirty"] is False
    (checkout / "kagglecifar" / "code.py").write_text("x = 2\n")
    assert rundir.code_version(checkout)["git_dirty"] is True


@needs_git
def test_a_folder_inside_a_checkout_is_not_that_checkout(checkout):
    """An installed package in a venv inside some project's checkout is not that project's code."""
    inner = checkout / ".venv" / "site-packages"
    inner.mkdir(parents=True)
    assert rundir.code_version(inner)["git_commit"] is None


def test_outside_a_checkout_the_git_fields_are_none(tmp_path):
    info = rundir.code_version(tmp_path)
    assert info["git_commit"] is None and info["git_dirty"] is None
    assert info["kagglecifar"] == kagglecifar.__version__


def test_without_git_the_git_fields_are_none(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no git on the PATH
    info = rundir.code_version(Path(kagglecifar.__file__).parent.parent)
    assert info["git_commit"] is None and info["git_dirty"] is None


def test_run_json_holds_the_code_version(tmp_path):
    path = rundir.create_run(tmp_path, "r", "mlp", {"device": "cpu"})
    environment = json.loads((path / rundir.MARKER).read_text())["environment"]
    assert environment["device"] == "cpu"
    assert environment["kagglecifar"] == kagglecifar.__version__
    assert {"git_commit", "git_dirty"} <= set(environment)
    assert rundir.read_environment(path) == environment


def test_the_installed_version_is_the_packages():
    """pyproject.toml reads its version from kagglecifar.__version__, the one place it is written."""
    from importlib.metadata import version

    assert version("kagglecifar") == kagglecifar.__version__
