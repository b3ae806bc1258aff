"""The typed schema of bench's configuration: every option of ``presets/default.yaml``.

Each section is a class whose annotations give every option its type, and with
``Annotated[..., Range(...)]`` or ``Literal[...]`` its range or allowed values.
``bench.config.load_config`` checks a merged configuration against it (one-line
``ConfigError`` naming the option) and returns it as these classes, so code reads
``config.finetune.rounds``. A section is also a ``dict`` (``config["finetune"]["rounds"]``
reads the same value), so the configuration hashes, pickles and serialises exactly
as the plain YAML tree it was loaded from. A test keeps this schema and
``default.yaml`` option for option equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal


class Section(dict):
    """A configuration section: a dict whose keys are also attributes."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"no option {name!r} in this section") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value


@dataclass(frozen=True)
class Range:
    """Bounds of a number (or of each number of a list): ``low <= x`` (``low < x`` if open)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def contains(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (
            self.high is not None and (value >= self.high if self.high_open else value > self.high)
        )

    def describe(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        return " and ".join(parts)


Positive = Annotated[int, Range(1)]
NonNegative = Annotated[int, Range(0)]
PositiveNumber = Annotated[float, Range(0, low_open=True)]
NonNegativeNumber = Annotated[float, Range(0)]


class SyntheticConfig(Section):
    layout: Literal["acdc", "hvsmr"]
    phantom: Literal["easy", "cine"]
    train: Positive
    test: NonNegative
    seed: int
    real_sizes: bool


class PreprocessConfig(Section):
    spacing_mm: PositiveNumber
    size: Positive
    normalise: Literal["minmax", "zscore"]
    clip_percentiles: list[Annotated[float, Range(0, 100)]]
    n4: bool


class DataConfig(Section):
    root: str | None
    manifest: str | None
    synthetic: SyntheticConfig
    phases: list[Literal["ED", "ES"]]
    include_cine: bool
    preprocess: PreprocessConfig


class SplitConfig(Section):
    protocol: Literal["own", "fcl", "chaitanya"]
    clients: Positive
    scheme: Literal["iid", "group", "dirichlet", "sites"]  # sites: from a federation manifest
    alpha: PositiveNumber
    n_values: list[Positive]
    folds: Positive
    val_per_client: NonNegative
    test: Literal["auto", "holdout"]
    test_fraction: Annotated[float, Range(0, 1, low_open=True, high_open=True)]
    seed: int


class ModelConfig(Section):
    widths: list[Positive]
    norm: Literal["instance", "batch", "group"]
    norm_kernel: Literal["native", "group"]
    encoder: str  # "unet" or "timm/<name>" (bench.config.validate checks the name)
    embed_grid: Positive


class PlateauConfig(Section):
    patience: Positive
    loss_min_delta: NonNegativeNumber
    loss_window: Positive


class EarlyStoppingConfig(Section):
    patience: Positive
    min_rounds: Positive
    min_delta: NonNegativeNumber
    loss_min_delta: NonNegativeNumber
    loss_window: Positive


class PretrainConfig(Section):
    setting: Literal["federated", "local", "centralized"]
    rounds: Positive
    epochs_per_round: PositiveNumber
    local_steps: Positive | None
    min_steps_per_round: Positive | None
    plateau: PlateauConfig
    volumes_per_batch: Positive
    partitions: Positive
    lr: PositiveNumber
    weight_decay: NonNegativeNumber
    methods: dict[str, Any]
    from_run: str | None
    fedavg_weights: Literal["examples", "uniform"]


class FinetuneConfig(Section):
    modes: list[Literal["local", "federated"]]
    rounds: Positive
    epochs_per_round: PositiveNumber
    local_steps: Positive | None
    min_steps_per_round: Positive | None
    early_stopping: EarlyStoppingConfig
    batch_size: Positive
    lr: PositiveNumber
    weight_decay: NonNegativeNumber
    fedavg_weights: Literal["examples", "uniform"]


class EvaluationConfig(Section):
    hd95: bool
    native_dice: bool


class FlowerConfig(Section):
    workers: PositiveNumber
    cpus_per_client: PositiveNumber
    gpus_per_client: NonNegativeNumber
    round_timeout: PositiveNumber
    ray_tmpdir: str | None


class RunConfig(Section):
    engine: Literal["inprocess", "flower", "deployment"]
    federation: str | None
    min_clients: NonNegative
    flower: FlowerConfig
    seeds: list[int]
    device: Literal["cpu", "cuda"]
    threads: NonNegative
    amp: Literal["none", "bf16"]
    channels_last: bool
    tracker: Literal["tensorboard", "mlflow", "none"]
    tracking_uri: str | None
    tune_malloc: bool


class Config(Section):
    """The whole configuration (``preset``: the preset's name, set by ``load_config``)."""

    data: DataConfig
    split: SplitConfig
    model: ModelConfig
    pretrain: PretrainConfig
    finetune: FinetuneConfig
    evaluation: EvaluationConfig
    run: RunConfig
    preset: str | None
