"""Search spaces for `kagglecifar tune`: which recipe options a search varies, and over what.

A space is a small YAML (or JSON) file, one recipe option per key:

    lr:           {low: 0.01, high: 0.3, log: true}   # a number range; log: sampled on a log scale
    epochs:       {low: 4, high: 8}                   # integers for integer options; optional step
    augment:      {choices: [none, standard, strong]}

Without --space the model family's default (kagglecifar/spaces/FAMILY.yaml, else default.yaml) is used.
The grid sampler takes choices as they are and a range as 3 points: low, middle (geometric with log), high.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kagglecifar import config as train_config
from kagglecifar.errors import KaggleCifarError

SPACES_DIR = Path(__file__).with_name("spaces")
GRID_POINTS = 3
NOT_SEARCHABLE = ("model",)  # one model per study: the study's name and base recipe belong to it


@dataclass(frozen=True)
class Dimension:
    key: str
    kind: type  # int, float, str or bool: the recipe option's type
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple | None = None

    def suggest(self, trial):
        """This dimension's value for an Optuna trial."""
        if self.choices is not None:
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind is int:
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def contains(self, value) -> bool:
        if self.choices is not None:
            return value in self.choices
        return value is not None and self.low <= value <= self.high

    def grid(self) -> list:
        if self.choices is not None:
            return list(self.choices)
        if self.log:
            middle = (self.low * self.high) ** 0.5
        else:
            middle = (self.low + self.high) / 2
        points = [self.low, middle, self.high]
        return list(dict.fromkeys(round(p) for p in points)) if self.kind is int else points

    def to_dict(self) -> dict:
        if self.choices is not None:
            return {"choices": list(self.choices)}
        spec = {"low": self.low, "high": self.high}
        return {**spec, **({"log": True} if self.log else {}), **({"step": self.step} if self.step else {})}


def default_space_path(model: str) -> Path:
    """spaces/FAMILY.yaml for the model's family (the models/ module it is defined in), else default.yaml."""
    from kagglecifar.models import registry

    family = registry.constructor(model).__module__.rsplit(".", 1)[-1]
    path = SPACES_DIR / f"{family}.yaml"
    return path if path.is_file() else SPACES_DIR / "default.yaml"


def read_space(path: Path) -> list[Dimension]:
    path = Path(path)
    where = f"--space {path}"
    data = train_config.read_yaml_or_json(path, where, "search-space")
    if not isinstance(data, dict) or not data:
        raise KaggleCifarError(f"{where}: expected recipe options, each with {{low, high}} or {{choices: [...]}}")
    return [parse_dimension(str(key), spec, where) for key, spec in data.items()]


def parse_dimension(key: str, spec, where: str) -> Dimension:
    where = f"{where}: {key}"
    searchable = [k for k in train_config.fields_of(train_config.Recipe) if k not in NOT_SEARCHABLE]
    if key not in searchable:
        raise KaggleCifarError(f"{where}: not a searchable recipe option; choose from {', '.join(searchable)}")
    kind = train_config.field_types(train_config.Recipe)[key]
    if not isinstance(spec, dict):
        raise KaggleCifarError(f"{where}: expected {{low: A, high: B}} or {{choices: [...]}}")
    unknown = sorted(set(spec) - {"low", "high", "log", "step", "choices"})
    if unknown:
        raise KaggleCifarError(f"{where}: unknown field {unknown[0]!r} (use low, high, log, step or choices)")
    if "choices" in spec:
        if set(spec) != {"choices"} or not isinstance(spec["choices"], list) or not spec["choices"]:
            raise KaggleCifarError(f"{where}: choices must be a non-empty list, on its own")
        choices = tuple(train_config.coerce(key, value, where) for value in spec["choices"])
        return Dimension(key, kind, choices=tuple(dict.fromkeys(choices)))
    if kind not in (int, float):
        raise KaggleCifarError(f"{where}: a {kind.__name__} option takes {{choices: [...]}}, not a range")
    if "low" not in spec or "high" not in spec:
        raise KaggleCifarError(f"{where}: a range needs both low and high")
    low, high = (train_config.coerce(key, spec[bound], f"{where}.{bound}") for bound in ("low", "high"))
    log, step = spec.get("log", False), spec.get("step")
    if not isinstance(log, bool):
        raise KaggleCifarError(f"{where}: log must be true or false")
    if not low < high:
        raise KaggleCifarError(f"{where}: low ({low}) must be below high ({high})")
    if log and low <= 0:
        raise KaggleCifarError(f"{where}: a log range needs low > 0")
    if step is not None:
        step = train_config.coerce(key, step, f"{where}.step")
        if step <= 0 or log:
            raise KaggleCifarError(f"{where}: step must be positive, and cannot be combined with log")
    return Dimension(key, kind, low, high, log, step)


def grid_space(dimensions: list[Dimension]) -> dict[str, list]:
    return {d.key: d.grid() for d in dimensions}
