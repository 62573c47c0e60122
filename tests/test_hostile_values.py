"""What a careful and a hostile user give: the resume guard, secrets in storage URLs, values taken on trust.
Each answer is one line (`kagglecifar: error: ...`), a non-zero exit, no secret, and no run folder changed."""

import hashlib
import math
import random

import pytest
import torch
from test_train import make_cache, small_config

from kagglecifar.inference.predict import parse_weights
from kagglecifar.training.train import train
from kagglecifar.tune import storage

pytestmark = pytest.mark.usefixtures("one_torch_thread")
MAX_LINE = 1000  # an error line quotes at most a short excerpt of what it rejects (lists of choices aside)


def folder_hashes(folder):
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def one_error_line(code, err):
    """Exit 1, no traceback, and one error line, the last (a line saying which device trains may come first)."""
    lines = err.strip().splitlines()
    assert code == 1 and "Traceback" not in err, err
    assert lines and lines[-1].startswith("kagglecifar: error: "), err
    assert sum("error" in line for line in lines) == 1 and len(lines) <= 2, err
    assert len(lines[-1]) <= MAX_LINE, lines[-1][:500]
    return lines[-1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A finished mlp run `base` and a stopped (time budget) simplecnn run `other`, on a tiny cache."""
    root = tmp_path_factory.mktemp("hostile")
    data = make_cache(root / "data", count=120)
    train(small_config(data, root / "runs", name="base", epochs=1))
    return root, data, root / "runs"


def train_args(data, runs_dir, *args):
    return ("train", *args, "--device", "cpu", "--data-dir", data, "--runs-dir", runs_dir)


# ---- 1. the resume guard ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args,differs",
    [
        (["--set", "resume=base", "--set", "epochs=2"], "epochs 1 there, 2 now"),
        (["--set", "resume=base", "--set", "lr=0.01"], "lr 0.05 there, 0.01 now"),
        (["--set", "session.resume=base", "--set", "model=simplecnn"], "model 'mlp' there, 'simplecnn' now"),
        (["--set", "resume=RUNS/base", "--set", "seed=3"], "seed 0 there, 3 now"),
        (["--set", "resume=base", "--set", "ema=true"], "ema False there, True now"),
    ],
)
def test_set_resume_goes_through_the_guard(runs, run_cli, args, differs):
    root, data, runs_dir = runs
    base = runs_dir / "base"
    before = folder_hashes(base)
    args = [a.replace("RUNS", str(runs_dir)) for a in args]
    code, _, err = run_cli(*train_args(data, runs_dir, "--config", base / "config.yaml", *args))
    line = one_error_line(code, err)
    assert "was trained with another recipe" in line and differs in line, line
    assert folder_hashes(base) == before


@pytest.mark.parametrize(
    "recipe",
    ["epochs: 2", "lr: 0.01", "model: simplecnn", "batch_size: 64\n  epochs: 3", "optimizer: adamw"],
)
def test_a_recipe_file_that_resumes_goes_through_the_guard(runs, run_cli, tmp_path, recipe):
    root, data, runs_dir = runs
    base = runs_dir / "base"
    before = folder_hashes(base)
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(f"recipe:\n  {recipe}\nsession:\n  resume: {base}\n")
    code, _, err = run_cli(*train_args(data, runs_dir, "mlp", "--preset", "cpu", "--config", recipe_file))
    line = one_error_line(code, err)
    assert "was trained with another recipe" in line
    assert folder_hashes(base) == before


def test_a_last_pt_of_another_model_or_recipe_is_one_line(runs, run_cli, tmp_path, capsys):
    import shutil

    root, data, runs_dir = runs
    other = small_config(data, tmp_path, name="other", model="simplecnn", epochs=1)
    train(other)
    wider = small_config(data, tmp_path, name="wider", epochs=1, lr=0.1)
    train(wider)
    capsys.readouterr()
    for source, expected in (
        (tmp_path / "other" / "last.pt", "holds a 'simplecnn' model"),
        (tmp_path / "wider" / "last.pt", "another recipe (lr 0.1 there, 0.05 now)"),
        (runs_dir / "base" / "best.pt", "holds no training state"),
    ):
        victim = tmp_path / f"copy-{source.parent.name}-{source.name}"
        shutil.copytree(runs_dir / "base", victim)
        shutil.copy(source, victim / "last.pt")
        before = folder_hashes(victim)
        code, _, err = run_cli(*train_args(data, tmp_path, "--resume", victim))
        line = one_error_line(code, err)
        assert expected in line, line
        assert folder_hashes(victim) == before


def test_a_last_pt_whose_tensors_do_not_fit_is_one_line(runs, run_cli, tmp_path):
    import shutil

    root, data, runs_dir = runs
    victim = tmp_path / "victim"
    shutil.copytree(runs_dir / "base", victim)
    payload = torch.load(victim / "last.pt", weights_only=True)
    rng = random.Random(0)
    for damage in range(6):
        broken = {**payload, "train_state": dict(payload["train_state"])}
        key = rng.choice(sorted(broken["state_dict"]))
        if damage == 0:
            broken["state_dict"] = {**broken["state_dict"], key: torch.zeros(3, 3, 3)}
            broken["train_state"].pop("model_state", None)
        elif damage == 1:
            broken["train_state"]["optimizer"] = {"state": {}, "param_groups": []}
        elif damage == 2:
            broken["train_state"]["progress"] = {"epoch": 1, "no_such_field": 3}
        elif damage == 3:
            broken["train_state"]["rng"] = {"torch": torch.zeros(2)}
        elif damage == 4:
            broken["classes"] = ["a", "b"]
        else:
            broken["train_state"] = [1, 2]
        torch.save(broken, victim / "last.pt")
        before = folder_hashes(victim)
        code, _, err = run_cli(*train_args(data, tmp_path, "--resume", victim))
        one_error_line(code, err)
        assert folder_hashes(victim) == before


# ---- 2. secrets in error messages ---------------------------------------------------------------------------

SECRET = "S3cr#tPW"


def storage_urls(secret):
    keys = ["password", "passwd", "pwd", "sslpassword", "PASSWORD", "api_token", "secret", "auth_key"]
    return [
        f"postgresql://127.0.0.1/db?user=me&password={secret}",
        f"me:{secret}@db-host/optuna",
        f"postgresql://me:{secret}@db-host/optuna",
        f"postgresql://me:{secret}@db-host:notaport/optuna",
        f"postgresql://me:{secret}@[::1/optuna",
        f"mysql+pymysql://me:{secret}@db-host/optuna?charset=utf8",
        f"postgresql+psycopg2://me:{secret}@db-host/optuna?sslmode=require&sslpassword={secret}",
        f"//me:{secret}@db-host/optuna",
        f"me@db-host/optuna?password={secret}",
        f"postgresql://{secret}@db-host/optuna",
        f"postgresql://me:{secret}@",
        f"postgresql://:{secret}@db-host",
        f"nosuchdb://me:{secret}@db-host/optuna",
        f"postgresql://me:{secret}/x@db-host/optuna",
        f"postgresql://me:{secret}?@db-host/optuna",
        f"db-host/optuna?password={secret}",
        f"sqlite:////no/such/folder/x.db?password={secret}",
        *(f"postgresql://127.0.0.1/db?{key}={secret}" for key in keys),
        *(f"postgresql://127.0.0.1/db?{key}={secret}&user=me" for key in keys),
    ]


@pytest.mark.parametrize("secret", [SECRET, "p%40ss%2Fw0rd!", "hunter2hunter2", "a:b@c"])
def test_no_storage_url_is_shown_with_its_password(secret):
    decoded = __import__("urllib.parse").parse.unquote(secret)
    for url in storage_urls(secret):
        shown = storage.shown_url(url)
        assert secret not in shown and decoded not in shown, (url, shown)


def test_no_storage_error_shows_a_password(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    secret = decoded = SECRET
    for url in storage_urls(secret):
        if url.startswith("sqlite"):
            continue  # SQLite retries a failed open for seconds (two workers may be creating the file)
        code, out, err = run_cli("tune", "mlp", "--trials", "1", "--storage", url, "--data-dir", tmp_path)
        assert code == 1, (url, err)
        assert secret not in out + err and decoded not in out + err, (url, err)
        assert len(err.strip().splitlines()) == 1, (url, err)


def test_redaction_hides_every_secret_piece_in_arbitrary_driver_messages():
    rng = random.Random(1)
    alphabet = "abcdefgXYZ0123456789!#$%^&*()_-+=~[]{}|;,.<>"
    for _ in range(300):
        secret = "".join(rng.choice(alphabet) for _ in range(rng.randint(4, 24)))
        # the URLs where the password is exactly `secret` (in the others it is `secret` and more)
        url = rng.choice([u for u in storage_urls(secret) if f"{secret}@" in u or u.endswith(f"={secret}")])
        message = rng.choice(
            [f"could not parse {url}", f"password authentication failed for {secret}", f"bad URL '{url}' ({secret})"]
        )
        assert secret not in storage.redacted(message, url), (url, message)
        assert secret not in storage.shown_url(url), url


# ---- 4. values taken on trust --------------------------------------------------------------------------------

ALIAS_BOMB = "\n".join(
    ["a: &a [x, x, x, x, x, x, x, x, x]"]
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)]
    + ["recipe:", "  augment: *i"]
)


@pytest.mark.parametrize(
    "sets,message",
    [
        (["lr=.inf"], "--lr inf: must be a finite"),
        (["lr=-.inf"], "--lr -inf: must be a finite"),
        (["lr=.nan"], "--lr nan: must be a finite"),
        (["lr=1e400"], "--lr inf: must be a finite"),
        (["lr=-0.1"], "--lr -0.1: must be positive"),
        (["lr=0"], "--lr 0.0: must be positive"),
        (["muon_lr=.inf"], "--muon-lr inf"),
        (["weight_decay=.nan"], "--weight-decay nan"),
        (["warmup_epochs=1e309"], "--warmup-epochs inf"),
        (["momentum=-1"], "--momentum -1.0"),
        (["label_smoothing=.inf"], "--label-smoothing inf"),
        (["time_budget=.inf"], "--time-budget inf"),
        (["epochs=1.0e+30"], "--epochs 1000000000000000019884624838656: must be at least 1 (and at most"),
        (["batch_size=99999999999"], "--batch-size 99999999999: must be at least 2 (and at most"),
        (["seed=-1"], "--seed -1: must be 0 or more"),
        (["epochs=100001"], "--epochs 100001: must be at least 1 (and at most 100,000)"),
        (["workers=100000"], "--workers 100000: must be 0 or more (and at most 256)"),
        (["batch_size=1.0e+9"], "--batch-size 1000000000: must be at least 2"),
        (["seed=1.0e+100"], "out of range"),
        (["freeze_stages=1"], "--freeze-stages 1: model simplecnn has no freeze_stages option"),
        (["width=.inf"], "--width inf: must be a finite"),
        (["epochs=" + "9" * 5000], "expected an integer"),
        (["augment=" + "x" * 5000], "--augment"),
        (["epochs=[" + ", ".join(["1"] * 5000) + "]"], "expected an integer, got a list of 5000 items"),
        (["epochs=" + "{a: 1, " * 3 + "}" * 3], "expected an integer"),
        (["lr=&a [*a]"], "--set lr"),
        (["x" * 10_000 + "=1"], "unknown train option"),
    ],
)
def test_values_are_finite_in_range_and_quoted_short(tmp_path, run_cli, sets, message):
    args = [a for s in sets for a in ("--set", s)]
    code, _, err = run_cli("train", "simplecnn", "--preset", "cpu", "--device", "cpu", *args, "--data-dir", tmp_path)
    line = one_error_line(code, err)
    assert message in line, line
    assert not (tmp_path / "runs").exists()


def test_a_model_option_given_is_kept_or_refused_never_saved_as_null(tmp_path, run_cli):
    from kagglecifar.recipes import make_config

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("recipe:\n  width: 0.5\n  dropout: 0.1\n")
    for model in ("simplecnn", "mlp", "resnet18"):  # the cpu preset's model is another one, with its own width
        assert make_config(model, "cpu", sets=["width=2"], device="cpu").recipe.width == 2
        from_file = make_config(model, "cpu", config_file=recipe, device="cpu").recipe
        assert (from_file.width, from_file.dropout) == (0.5, 0.1)
        assert make_config(model, "cpu", width=0.75, device="cpu").recipe.width == 0.75
    for args in (["simplecnn", "--freeze-stages", "2"], ["mlp", "--set", "freeze_stages=1"]):
        code, _, err = run_cli("train", *args, "--preset", "cpu", "--device", "cpu", "--data-dir", tmp_path)
        line = one_error_line(code, err)
        assert "has no freeze_stages option" in line, line


@pytest.mark.parametrize(
    "text",
    [
        ALIAS_BOMB,
        ALIAS_BOMB.replace("augment: *i", "lr: *i"),
        ALIAS_BOMB.replace("recipe:\n  augment: *i", "recipe: *i"),
        ALIAS_BOMB.replace("recipe:\n  augment: *i", "session:\n  name: *i"),
        "a: &a\n  - *a\nrecipe:\n  augment: *a",
        "recipe:\n  augment: " + "[" * 5000 + "]" * 5000,
        "recipe:\n  augment: '" + "x" * 200_000 + "'",
        "recipe: &r {lr: &l [" + ", ".join(["*r"] * 3) + "]}",
        "- " * 3000 + "1",
        "\x00\x01\x02binary",
        "recipe:\n  lr: [" + "1, " * 100_000 + "1]",
    ],
)
def test_recipe_files_built_to_explode_are_one_short_line(tmp_path, run_cli, text):
    recipe = tmp_path / "bomb.yaml"
    recipe.write_text(text)
    code, _, err = run_cli(
        "train", "mlp", "--preset", "cpu", "--device", "cpu", "--config", recipe, "--data-dir", tmp_path
    )
    one_error_line(code, err)


@pytest.mark.parametrize(
    "text,count",
    [("1e308,1e308", 2), ("1e308,1e308,1e308", 3), ("1.7e308,1e-300", 2), ("5e-324,5e-324", 2), ("3,1", 2)],
)
def test_ensemble_weights_normalise_without_overflow(text, count):
    from kagglecifar.inference.predict import normalised_weights

    weights = normalised_weights(parse_weights(text, count))
    assert all(math.isfinite(w) and 0 <= w <= 1 for w in weights)
    assert math.isclose(sum(weights), 1.0)
    raw = [float(p) for p in text.split(",")]
    for a, b in zip(raw, raw[1:]):  # the proportions are kept
        assert (weights[0] > 0 and weights[1] > 0) or a / b > 1e300 or b / a > 1e300


@pytest.mark.parametrize("text", ["inf,1", "nan,1", "1,-1", "0,1", "1e309,1", "x" * 10_000])
def test_non_finite_or_absurd_weights_are_one_short_line(text):
    from kagglecifar.errors import KaggleCifarError

    with pytest.raises(KaggleCifarError) as caught:
        parse_weights(text, 2)
    assert len(str(caught.value)) < MAX_LINE


def test_excerpt_is_short_for_any_value():
    from kagglecifar.errors import excerpt

    rng = random.Random(2)
    nested = [1]
    for _ in range(50):
        nested = [nested] * 9
    values = ["x" * 10**6, b"\x00" * 10**6, nested, {"a": nested}, 10**5000, float("inf"), "\n" * 1000, None]
    values += ["".join(chr(rng.randint(0, 0x10FFFF)) for _ in range(rng.randint(0, 400))) for _ in range(200)]
    for value in values:
        text = excerpt(value)
        assert len(text) <= 120 and "\n" not in text
