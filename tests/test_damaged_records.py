"""Files of our own, damaged: arbitrary bytes (random, truncated, empty, binary, JSON of the wrong type, the
right type with wrong fields) as each record kagglecifar writes, fed to every command that reads it. Each
answer is one line (`kagglecifar: error: ...`, or a warning and a clean skip), exit 0 or 1, never a
traceback, and no record changed."""

import hashlib
import io
import json
import random
import shutil
import zipfile

import numpy as np
import pytest
import torch
from test_train import CLASSES, make_cache, small_config

from kagglecifar import cache, provenance
from kagglecifar.kaggle_io.submissions import SubmissionResult
from kagglecifar.training.train import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")
EVALUATE_OUTPUTS = ("confusion_matrix.png", "confusion_matrix_test.png", "per_class.csv", "per_superclass.csv")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """data/ (train and test caches), runs/r and runs/r2 (one epoch of mlp each, evaluated), subs/ with
    r-none.csv, its .sources.json and .submitted.json, and p.npz (saved probabilities)."""
    from kagglecifar.inference import predict

    root = tmp_path_factory.mktemp("records")
    data = make_cache(root / "data", count=120)
    rng = np.random.default_rng(1)
    cache.write_split(data, "test", rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8), np.arange(1, 21), CLASSES)
    (data / "sampleSubmission.csv").write_text("id,label\n" + "".join(f"{i},{CLASSES[0]}\n" for i in range(1, 21)))
    for name in ("r", "r2"):
        train(small_config(data, root / "runs", name=name, epochs=1))
    csv = root / "subs" / "r-none.csv"
    predict.predict_to_submission([root / "runs" / "r"], data, csv, tta="none", device="cpu")
    predict.save_probs(predict.predict([root / "runs" / "r"], data, device="cpu"), root / "p.npz")
    provenance.record_submission(csv, SubmissionResult(1, csv.name, "complete", 0.5), "m", "cifar-10")
    return root


def commands(w, out):
    run, data = w / "runs" / "r", w / "data"
    device = ("--device", "cpu")
    return {
        "compare": ("compare", w / "runs", "--submissions-dir", w / "subs"),
        "evaluate": ("evaluate", run, "--tta", "none", "--data-dir", data, *device),
        "evaluate last.pt": ("evaluate", run / "last.pt", "--tta", "none", "--data-dir", data, *device),
        "predict": ("predict", run, "--tta", "none", "--out", out / "a.csv", "--data-dir", data, *device),
        "predict last.pt": ("predict", run / "last.pt", "--tta", "none", "--out", out / "b.csv", "--data-dir", data),
        "predict npz": ("predict", w / "p.npz", "--tta", "none", "--out", out / "c.csv", "--data-dir", data, *device),
        "train --resume": ("train", "--resume", run, "--data-dir", data, *device),
    }


READERS = {  # record (relative to the workspace) -> the commands that read it
    "runs/r/metrics.csv": ["compare"],
    "runs/r/config.yaml": ["compare", "train --resume"],
    "runs/r/run.json": ["compare", "evaluate"],
    "runs/r/result.json": ["compare"],
    "runs/r/evaluation.json": ["compare", "evaluate"],
    "subs/r-none.submitted.json": ["compare"],
    "runs/r/last.pt": ["evaluate last.pt", "predict last.pt", "train --resume"],
    "runs/r/best.pt": ["evaluate", "predict"],
    "p.npz": ["predict npz"],
}


def damaged_versions(original: bytes, suffix: str, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    versions = [
        b"",
        original[: len(original) // 2],
        original[: rng.randrange(1, max(2, len(original)))],
        rng.randbytes(rng.randint(1, 4096)),
        b"\x00\xff\xfe" * 50 + original,
        original.replace(b"1", b"\x00", 3),
        b"[]",
        b'"text"',
        b"3",
        b"null",
        b"{}",
    ]
    if suffix == ".json":
        versions += [
            b'{"runs": 5, "public_score": "high", "status": []}',
            b'{"runs": [1, 2], "run": {"a": 1}}',
            b'{"accuracy": [1], "confusion": {"counts": [[1, 2]]}, "classes": "cat"}',
            b'{"accuracy": {"flip": "x"}, "per_class": 3}',
            b'{"confusion": {"counts": [[1, -2], [3, 4]]}, "classes": ["a"]}',
            b'{"created_by": "kagglecifar", "environment": []}',
            b'{"created_by": "kagglecifar", "environment": {"world_size": "x", "device": 5}}',
            b'{"stopped_reason": ["completed"]}',
            b"[" * 100_000 + b"]" * 100_000,
        ]
    if suffix == ".csv":
        lines = original.decode().splitlines()
        versions += [
            b"abc",
            (original.decode() + "1,2,3,4,5,6,7,8,9,10\n").encode(),
            "\n".join([lines[0], lines[1] + ",extra"]).encode(),
            "\n".join([lines[0], "x" * 10 + lines[1][10:]]).encode(),
            "\n".join([lines[0].replace("epoch", "nonsense"), *lines[1:]]).encode(),
            "\n".join([lines[0], ",".join([""] * len(lines[0].split(",")))]).encode(),
            b'epoch,"unclosed\n1,2',
        ]
    if suffix == ".yaml":
        versions += [
            b"recipe: [1, 2]",
            b"- a\n- b",
            b"recipe:\n  model: 5\n  epochs: abc",
            b"recipe:\n  nosuchoption: 1",
            b"a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
            b"c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
            b"e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nrecipe: {augment: *e}",
            b"recipe: {}\nsession: [1]",
            b"recipe:\n  " + b"{" * 2000 + b"}" * 2000,
            original.replace(b"epochs: 1", b"epochs: 1.0e+400"),
        ]
    if suffix in (".pt", ".npz"):
        for payload in ([1, 2], {"model": "mlp"}, {"model": 5, "state_dict": {}}, {"model": "mlp", "state_dict": []}):
            buffer = io.BytesIO()
            torch.save(payload, buffer)
            versions.append(buffer.getvalue())
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as z:
            z.writestr("archive/data.pkl", b"garbage")
            z.writestr("ids.npy", b"\x93NUMPY\x01\x00" + b"\xff" * 20)
        versions.append(buffer.getvalue())
    return versions


def copy_workspace(workspace, w):
    """A copy whose submission records name the copy's run folders (they hold absolute paths)."""
    shutil.copytree(workspace, w)
    for record in (w / "subs").glob("*.json"):
        record.write_text(record.read_text().replace(str(workspace.resolve()), str(w.resolve())))


def record_hashes(folder, skip=()):
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in skip
    }


def check_answer(code, out, err, what):
    lines = err.strip().splitlines()
    assert code in (0, 1), (what, code, err)
    assert "Traceback" not in out + err, what
    errors = [line for line in lines if "error:" in line]
    if code == 1:
        assert len(errors) == 1 and lines[-1].startswith("kagglecifar: error: "), (what, err)
    else:
        assert not errors, (what, err)
    assert all(len(line) < 1500 for line in lines), what


@pytest.mark.parametrize("record", sorted(READERS))
def test_damaged_records_are_one_line_and_change_nothing(workspace, run_cli, tmp_path, capsys, record):
    capsys.readouterr()
    copy_workspace(workspace, tmp_path / "pristine")
    original = (tmp_path / "pristine" / record).read_bytes()
    suffix = "." + record.rsplit(".", 1)[-1]
    for i, damaged in enumerate(damaged_versions(original, suffix, seed=len(record))):
        w = tmp_path / f"w{i}"
        copy_workspace(workspace, w)
        (w / record).write_bytes(damaged)
        for name in READERS[record]:
            out = tmp_path / f"out{i}-{name.replace(' ', '_')}"
            out.mkdir()
            skip = EVALUATE_OUTPUTS if name.startswith("evaluate") else ()
            before = record_hashes(w, skip)
            code, stdout, stderr = run_cli(*commands(w, out)[name])
            what = f"{name} with {record} version {i} ({damaged[:40]!r})"
            check_answer(code, stdout, stderr, what)
            assert record_hashes(w, skip) == before, what
            if name == "compare":  # one damaged run does not stop the other from being compared
                assert code == 0 and "r2" in stdout, (what, stderr)
        shutil.rmtree(w)


def test_pristine_records_are_read_as_written(workspace, run_cli, tmp_path, capsys):
    """The same commands on the undamaged workspace succeed (so the test above damages, not the setup)."""
    capsys.readouterr()
    w = tmp_path / "w"
    copy_workspace(workspace, w)
    out = tmp_path / "out"
    out.mkdir()
    for name, args in commands(w, out).items():
        if name == "train --resume":
            continue  # the run is finished; resuming it trains nothing
        code, stdout, stderr = run_cli(*args)
        assert code == 0 and "warning" not in stderr, (name, stderr)
    code, stdout, _ = run_cli("compare", w / "runs", "--submissions-dir", w / "subs")
    assert "0.50000" in stdout  # the submission record was read


def test_submit_and_run_read_their_records_safely(workspace, tmp_path, capsys):
    """submit reads NAME.sources.json for the runs behind a CSV: damaged, it is one warning and no runs."""
    csv = tmp_path / "s.csv"
    csv.write_text("id,label\n")
    for damaged in damaged_versions(b'{"runs": ["/x"]}', ".json", seed=3):
        provenance.sources_path(csv).write_bytes(damaged)
        capsys.readouterr()
        provenance.record_submission(csv, SubmissionResult(1, csv.name, "complete", 0.5), "m", "cifar-10")
        record = json.loads(provenance.record_path(csv).read_text())
        assert record["runs"] in ([], ["/x"]) or all(isinstance(r, str) for r in record["runs"])
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) <= 1 and "Traceback" not in err
