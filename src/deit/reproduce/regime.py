"""The regime of the study: how much data, which augmentation, how long a schedule.

The defaults are the small-data regime on digits found by the search recorded in
``docs/results/reproduce-digits.md``. A regime is config overrides on top of the digits presets, so every run it
makes is an ordinary ``deit train`` config (each run directory keeps its ``config.yaml``). The epochs here are the
schedule the study aims for; the planner shortens both (by the same factor) when the budget does not allow them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

DATASETS: tuple[str, ...] = ("digits", "cifar10", "imagefolder")
# The presets each data set's study builds on (imagefolder: natural images at CIFAR's size, e.g. the CIFAR-10 JPEGs).
PRESETS: dict[str, tuple[str, str]] = {
    "digits": ("digits-convnet-teacher", "digits-deit-distilled"),
    "cifar10": ("cifar10-convnet-teacher", "cifar10-deit-distilled"),
    "imagefolder": ("cifar10-convnet-teacher", "cifar10-deit-distilled"),
}


@dataclass(frozen=True)
class Regime:
    dataset: str = "digits"
    train_per_class: int | None = 20  # None: the whole training split (1,200 digits)
    root: str | None = None  # the data's folder or archive (imagefolder; cifar10 without it downloads the archive)
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
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset {self.dataset!r}: the study has presets for {', '.join(DATASETS)} only")
        if self.dataset == "imagefolder" and not self.root:
            raise ValueError("--dataset imagefolder needs --root DIR (ROOT/train/CLASS/*.jpg and a held-out folder)")
        if self.train_per_class is not None and self.train_per_class < 1:
            raise ValueError(f"train_per_class must be >= 1, got {self.train_per_class}")
        if self.teacher_epochs < 1 or self.student_epochs < 1:
            raise ValueError(f"epochs must be >= 1, got teacher {self.teacher_epochs}, student {self.student_epochs}")

    @property
    def teacher_preset(self) -> str:
        return PRESETS[self.dataset][0]

    @property
    def student_preset(self) -> str:
        return PRESETS[self.dataset][1]

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
        return replace(self, train_per_class=tpc, root=root or self.root, teacher_cache=teacher_cache,
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
# gets 60 epochs for the students' 100: it is one run of six per seed and the students learn from it.
CIFAR_REGIME = Regime(dataset="cifar10", train_per_class=100, teacher_epochs=60, student_epochs=100,
                      common=("data.batch_size=64", "threads=1"), student=(), budget_minutes=60.0)


def default_regime(dataset: str, root: str | None = None) -> Regime:
    """The study's regime for ``dataset`` (digits: DEFAULT_REGIME; cifar10 and imagefolder: CIFAR_REGIME)."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset {dataset!r}: the study has presets for {', '.join(DATASETS)} only")
    if dataset == "digits":
        return DEFAULT_REGIME
    return replace(CIFAR_REGIME, dataset=dataset, root=root)

__all__ = ["CIFAR_REGIME", "DATASETS", "DEFAULT_REGIME", "PRESETS", "Regime", "default_regime"]
