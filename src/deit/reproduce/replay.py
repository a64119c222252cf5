"""The teacher's predictions on the validation split, recorded once per seed and replayed to each student's
evaluation (the agreement column) instead of running the teacher again for each of them.

On CIFAR-10's 10,000 test images a teacher pass costs about as much as the student's own evaluation; five
students a seed made it a sixth of the study's budget. The predictions are recorded through the students' eval
loader (their preprocessing, the data set's order), so a replayed evaluation gives the agreement the live teacher
would, to the last digit (tested).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from deit.inference.teacher import Teacher
from deit.models.preprocessing import Preprocessing
from deit.runtime.files import atomic_torch_save

PREDICTIONS_FILE = "val_predictions.pt"  # in the teacher's run directory


@torch.no_grad()
def record_predictions(teacher: nn.Module, loader: Iterable, preprocessing: Preprocessing, path: Path
                       ) -> torch.Tensor:
    """The teacher's top-1 class of every image of ``loader`` (the students' eval loader, built with their
    ``preprocessing``), in its order, saved to ``path``."""
    frozen = Teacher(teacher)
    predictions = torch.cat([frozen(x).argmax(dim=1) for x, _ in loader])
    num_classes = frozen.num_classes or int(predictions.max()) + 1
    atomic_torch_save({"predictions": predictions, "num_classes": num_classes,
                       "preprocessing": dataclasses.asdict(preprocessing)}, path)
    return predictions


def replayed_teacher(path: Path, preprocessing: Preprocessing) -> ReplayedTeacher | None:
    """The recorded predictions at ``path`` for a student with ``preprocessing``; None when there are none or
    they were recorded through another preprocessing (the caller then runs the teacher)."""
    if not path.is_file():
        return None
    replay = ReplayedTeacher(path)
    return replay if replay.preprocessing == dataclasses.asdict(preprocessing) else None


class ReplayedTeacher:
    """A ``TeacherFn`` for ``evaluate``: one-hot logits of the recorded predictions, batch by batch in the order
    they were recorded (the eval loader keeps the data set's order). ``finish`` checks that every recorded
    prediction was used: a loader of another length is an error, not a silently wrong agreement."""

    def __init__(self, path: Path) -> None:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        self.predictions, self.num_classes = saved["predictions"], int(saved["num_classes"])
        self.preprocessing = saved["preprocessing"]
        self.path, self.seen = path, 0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        n = images.shape[0]
        if self.seen + n > len(self.predictions):
            raise RuntimeError(f"{self.path} holds {len(self.predictions)} predictions; the evaluation has more "
                               "images: record them again from the teacher")
        batch = self.predictions[self.seen:self.seen + n].to(images.device)
        self.seen += n
        return F.one_hot(batch, self.num_classes).float()

    def finish(self) -> None:
        if self.seen != len(self.predictions):
            raise RuntimeError(f"{self.path} holds {len(self.predictions)} predictions but the evaluation had "
                               f"{self.seen} images: record them again from the teacher")


__all__ = ["PREDICTIONS_FILE", "ReplayedTeacher", "record_predictions", "replayed_teacher"]
