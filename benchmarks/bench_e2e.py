"""The README's `make run` from a fresh clone, timed as a whole, against the loopback fake Kaggle serving a
full-size replica of the competition download, and scored as Kaggle scores it.

    python benchmarks/bench_e2e.py                          # builds the held-out replica once (~11 min here)
    python benchmarks/bench_e2e.py --venv .venv             # reuse an installed environment: no `make install`
    python benchmarks/bench_e2e.py --make-args "ARGS='-y --epochs 1'"   # a quick try of the harness
    python benchmarks/bench_e2e.py --keep --work /tmp      # keep the clone's data/ and runs/ afterwards
    KAGGLECIFAR_CPU_BF16=0 python benchmarks/bench_e2e.py --result end_to_end_fp32   # as without bf16 arithmetic

The competition withholds its test labels and so does shared/data/cifar10. So this benchmark builds its replica
from a held-out copy of the fixture: train ids 1-45,000 stay train; the last 5,000 become the test set's real
images (under opaque names, as test.zip's), among 295,000 junk pictures, 300,000 test ids in all. The fake
scores the 5,000 real ones, as Kaggle scores its 10,000 among the junk. Accuracy is therefore from a model
trained on 45,000 images instead of 50,000.

Steps: `git clone` this checkout (committed work only), `make install` (skipped with --venv), then
`make run ARGS=-y` with HOME and the Kaggle client pointed at the fake. Nothing else may run on the machine.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT / "tests")]
import common  # noqa: E402
from fake_kaggle import FakeKaggle  # noqa: E402

FIXTURE = ROOT.parent / "shared" / "data" / "cifar10"
HELD_OUT = 5000
TEST_IDS = 300_000


def opaque_name(train_id: int) -> str:
    return hashlib.sha256(f"held-out-{train_id}".encode()).hexdigest()[:16]


def held_out_fixture(out: Path) -> dict[str, str]:
    """A copy of shared/data/cifar10 whose test.zip holds its last HELD_OUT train images; returns name -> label."""
    with open(FIXTURE / "trainLabels.csv", newline="") as f:
        labels = {int(row["id"]): row["label"] for row in csv.DictReader(f)}
    keep = len(labels) - HELD_OUT
    out.mkdir(parents=True, exist_ok=True)
    named = {opaque_name(i): i for i in range(keep + 1, len(labels) + 1)}
    with (
        zipfile.ZipFile(FIXTURE / "train.zip") as source,
        zipfile.ZipFile(out / "train.zip", "w", zipfile.ZIP_STORED) as train,
        zipfile.ZipFile(out / "test.zip", "w", zipfile.ZIP_STORED) as test,
    ):
        members = {Path(n).stem: n for n in source.namelist() if n.endswith(".jpg")}
        for i in range(1, keep + 1):
            train.writestr(f"{i}.jpg", source.read(members[str(i)]))
        for name in sorted(named):
            test.writestr(f"{name}.jpg", source.read(members[str(named[name])]))
    with open(out / "trainLabels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "label"])
        writer.writerows((i, labels[i]) for i in range(1, keep + 1))
    return {name: labels[i] for name, i in named.items()}


def train_count(fixture: Path) -> int:
    return len((fixture / "trainLabels.csv").read_text().split()) - 1


def ensure_replica(out: Path) -> tuple[dict[int, str], set[int]]:
    """The held-out replica in `out` (built once); returns (scored test id -> label, every test id)."""
    id_map = out / "id-map.csv"
    if not id_map.exists():
        with tempfile.TemporaryDirectory(prefix="held_out_fixture_") as fixture:
            label_of_name = held_out_fixture(Path(fixture))
            (Path(fixture) / "labels.csv").write_text("".join(f"{n},{label}\n" for n, label in label_of_name.items()))
            subprocess.run(
                [
                    sys.executable,
                    str(common.REPLICA_TOOL),
                    "--out",
                    str(out),
                    "--data",
                    fixture,
                    "--train-limit",
                    str(train_count(Path(fixture))),
                    "--real-test",
                    str(HELD_OUT),
                    "--junk",
                    str(TEST_IDS - HELD_OUT),
                    "--id-map",
                    str(out / "id-map.partial"),
                ],
                check=True,
            )
            shutil.copy(Path(fixture) / "labels.csv", out / "held-out-labels.csv")
        os.replace(out / "id-map.partial", id_map)
    label_of_name = dict(line.split(",") for line in (out / "held-out-labels.csv").read_text().split())
    with open(id_map, newline="") as f:
        rows = [(int(row["id"]), row["name"]) for row in csv.DictReader(f)]
    return {i: label_of_name[name] for i, name in rows if name != "junk"}, {i for i, _ in rows}


def timed(argv: list[str], cwd: Path, env: dict, log: Path) -> float:
    started = time.perf_counter()
    with open(log, "ab") as out:
        done = subprocess.run(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode:
        raise SystemExit(f"{' '.join(argv)} failed with exit {done.returncode}; see {log}")
    return round(time.perf_counter() - started, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--replica",
        type=Path,
        default=common.DEFAULT_DATA / "held-out",
        help="where the held-out replica is (built there when missing)",
    )
    p.add_argument("--venv", type=Path, help="an installed environment to use instead of `make install`")
    p.add_argument("--work", type=Path, help="scratch folder for the clone and HOME (default: temporary)")
    p.add_argument("--make-args", default="ARGS=-y", help="what follows `make run` (default: %(default)s)")
    p.add_argument("--result", default="end_to_end", help="results/NAME.json (default: %(default)s)")
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the clone, with its data/ cache and runs/, for later benchmarks (bench_gate_full.py)",
    )
    args = p.parse_args()
    solution, test_ids = ensure_replica(args.replica.resolve())

    if args.work:
        args.work.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench_e2e_", dir=args.work))
    clone, home, log = work / "kagglecifar", work / "home", work / "make.log"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True).stdout.strip()
    # With --venv, make must not reinstall: the clone's files are newer than the environment's marker, and
    # `make install` would point the shared environment at this temporary clone (and time the reinstall).
    venv = args.venv.resolve() if args.venv else None
    make_vars = [f"VENV={venv}", "-o", f"{venv}/.installed"] if venv else []
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    load_before = os.getloadavg()
    install_seconds = None if args.venv else timed(["make", "install"], clone, env, log)
    with FakeKaggle(args.replica.resolve(), solution=solution, test_ids=test_ids) as fake:
        env.update(fake.client_env(home))
        env.pop("KAGGLE_API_TOKEN", None)
        run_seconds = timed(["make", "run", *make_vars, *args.make_args.split()], clone, env, log)
        scores = [s.public_score for s in fake.submissions]
    text = log.read_text(errors="replace")
    stages = {
        m[1]: {"status": m[2], "seconds": float(m[3])}
        for m in re.finditer(r"^(fetch|train|predict|submit)\s+(done|skipped)\s+([\d.]+) s", text, re.M)
    }
    common.write_result(
        args.result,
        {
            "what": "`make run` from a fresh `git clone` on this machine (no GPU), the real kaggle client talking to "
            "tests/fake_kaggle.py serving a full-size held-out replica; the fake scores the 5,000 real test "
            "images among 300,000 ids",
            "clone_commit": commit,
            "make_args": args.make_args,
            "load_average_before_after": [round(x, 2) for x in (*load_before, *os.getloadavg())],
            "install_seconds": install_seconds,
            "make_run_seconds": run_seconds,
            "stages": stages,
            "public_score": float(scores[-1]) if scores and scores[-1] else None,
            "log_tail": text.splitlines()[-25:],
        },
        command=" ".join(["python", "benchmarks/bench_e2e.py", *sys.argv[1:]]),
    )
    if args.keep:
        print(f"kept: {clone} (its data/ and runs/)")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
