"""The regimes of the study (``deit reproduce --regime NAME``): which presets, how much data, which augmentation,
how long a schedule, what budget.

- ``digits`` (the default): the small-data regime on scikit-learn's digits found by the search recorded in
  ``docs/results/reproduce-digits.md``;
- ``cifar10``: natural images at 32 px (``docs/results/reproduce-cifar10.md``): the CIFAR-10 archive (downloaded
  once), or whatever ``--root`` holds (the archive, or image folders such as the CIFAR-10 JPEGs), since
  ``data.root`` decides the format (``deit.data.formats.follow_root``).

A regime is config overrides on top of its presets, so every run it makes is an ordinary ``deit train`` config
(each run directory keeps its ``config.yaml``). The epochs here are the schedule the study aims for; the planner
shortens both (by the same factor) when the budget does not allow them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from deit.data import DataConfig
from deit.data.formats import follow_root


@dataclass(frozen=True)
class Regime:
    name: str = "digits"  # the --regime that names it
    teacher_preset: str = "digits-convnet-teacher"
    student_preset: str = "digits-deit-distilled"
    # The data set the runs read (data.dataset): the presets' own, or the format found under ``root``.
    dataset: str = "digits"
    train_per_class: int | None = 20  # None: the whole training split (1,200 digits)
    root: str | None = None  # the data's folder or archive (without it: the presets' data set, downloaded if need be)
    teacher_epochs: int = 100
    student_epochs: int = 300
    # Overrides for every run (teacher and students): stronger crops than the presets' (area 35-100% instead of
    # 60-100%) and random erasing.
    common: tuple[str, ...] = ("data.scale=[0.35,1.0]", "data.reprob=0.25")
    # Overrides for the students only (after ``common``): batch 32 (7 steps an epoch on 200 images) and
    # RandAugment at magnitude 5 on top, the paper's kind of augmentation: views on which the teacher's label
    # often differs from the true one. There the students without a teacher fall behind and every distilled
    # student gains 4.9-9.2 points over five seeds (docs/results/reproduce-digits.md); the teacher is trained on
    # the milder views, where it is strongest.
    student: tuple[str, ...] = ("data.batch_size=32", "data.auto_augment=rand-m5-mstd0.5-inc1")
    # Each seed's distilled students read one teacher-output cache built after the teacher (the teacher runs once
    # over their common data stream); False: every distilled student runs the teacher itself.
    teacher_cache: bool = True

    def __post_init__(self) -> None:
        if self.train_per_class is not None and self.train_per_class < 1:
            raise ValueError(f"train_per_class must be >= 1, got {self.train_per_class}")
        if self.teacher_epochs < 1 or self.student_epochs < 1:
            raise ValueError(f"epochs must be >= 1, got teacher {self.teacher_epochs}, student {self.student_epochs}")

    def data_overrides(self) -> list[str]:
        tpc = "null" if self.train_per_class is None else str(self.train_per_class)
        root = [f"data.root={self.root}"] if self.root else []
        return [f"data.dataset={self.dataset}", *root, f"data.train_per_class={tpc}", *self.common]


    budget_minutes: float = 30.0  # the default budget of a study in this regime

    def with_user_settings(self, *, train_per_class: int | None = None, root: str | None = None,
                           overrides: tuple[str, ...] = (), student_overrides: tuple[str, ...] = (),
                           schedule: tuple[int, int] | None = None, teacher_cache: bool = True) -> Regime:
        """The regime with a user's command-line settings: ``train_per_class`` 0 means all images, None the
        regime's; ``overrides`` apply to every run, after the regime's (and after its student overrides too, so
        what the user sets wins); ``student_overrides`` to the students only."""
        if train_per_class is not None and train_per_class < 0:
            raise ValueError(f"--train-per-class must be >= 0 (0: all training images), got {train_per_class}")
        tpc = self.train_per_class if train_per_class is None else (train_per_class or None)
        teacher_epochs, student_epochs = schedule or (self.teacher_epochs, self.student_epochs)
        root = root or self.root
        # The format found under the root, once for the whole study (a missing or unreadable root, or one that holds
        # no data set, fails here, before anything runs).
        dataset = follow_root(DataConfig(dataset=self.dataset, root=root))[0].dataset if root else self.dataset
        return replace(self, train_per_class=tpc, root=root, dataset=dataset, teacher_cache=teacher_cache,
                       common=(*self.common, *overrides),
                       student=(*self.student, *overrides, *student_overrides),
                       teacher_epochs=teacher_epochs, student_epochs=student_epochs)


DEFAULT_REGIME = Regime()
# Natural images at 32 px (CIFAR-10, or an image folder of such images): see docs/results/reproduce-cifar10.md.
# Sized for a 60-minute study on 2 CPU cores: 100 images per class (1,000; at ~100 images/s an epoch takes ~10 s, so
# 18 runs fit at all; at 500 per class the calibration timed 65 s a teacher epoch and 53 s a student's, which
# leaves each run a handful of epochs), batch 64 for
# every run (16 steps an epoch instead of 4-8: the plan's few epochs need the steps), one thread per run and one run
# per core (two small models side by side train ~10% more images/s in all than one run on two threads: 162 vs 147
# for the teacher's step at batch 64, 164 vs 147 for the DeiT's, measured on a 2-core CPU). The teacher
# gets 60 epochs for the students' 100: it is one run of six per seed and the students learn from it. A hundred
# epochs is a long schedule: the students take the DeiT recipe's RandAugment and Mixup/CutMix back (the preset
# leaves them out for its own few epochs).
CIFAR_REGIME = Regime(name="cifar10", teacher_preset="cifar10-convnet-teacher", student_preset="cifar10-deit-distilled",
                      dataset="cifar10", train_per_class=100, teacher_epochs=60, student_epochs=100,
                      common=("data.batch_size=64", "threads=1"),
                      student=("data.auto_augment=rand-m5-mstd0.5-inc1", "data.mixup=0.8", "data.cutmix=1.0",
                               "data.mixup_prob=0.5"), budget_minutes=60.0)
REGIMES: dict[str, Regime] = {regime.name: regime for regime in (DEFAULT_REGIME, CIFAR_REGIME)}


def regime_named(name: str) -> Regime:
    """The regime ``deit reproduce --regime NAME`` picks; a ValueError naming the regimes for any other name."""
    if name not in REGIMES:
        raise ValueError(f"regime {name!r}: the study has the regimes {', '.join(REGIMES)}")
    return REGIMES[name]


def regime_from_dict(saved: dict) -> Regime:
    """A regime as study.json keeps it (tuples saved as lists). One saved before regimes had names was picked by
    --dataset (digits, cifar10, or imagefolder: the cifar10 regime on image folders): its regime's presets fill in."""
    known = {f.name for f in fields(Regime)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in known}
    if "name" not in values:
        base = REGIMES.get(values.get("dataset"), CIFAR_REGIME)
        values = {"name": base.name, "teacher_preset": base.teacher_preset, "student_preset": base.student_preset,
                  **values}
    return Regime(**values)


__all__ = ["CIFAR_REGIME", "DEFAULT_REGIME", "REGIMES", "Regime", "regime_from_dict", "regime_named"]
