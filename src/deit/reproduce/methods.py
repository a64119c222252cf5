"""The methods of the paper's distillation study (its Table 5) and the rows each one reports.

Every method is a training config: the regime's convnet preset for the teacher, its DeiT preset for the students
(``Regime.teacher_preset``, ``Regime.student_preset``), plus the overrides below. Soft distillation uses the
paper's temperature (tau 3) with the per-sample KL (``batchmean``, the paper's formula). Its weight follows the
paper for the class token ("usual distillation", lambda 0.1, with the label term at 0.9) and the reference code for
the distillation token (alpha 0.5: that head has no other signal). Hard distillation is always 1/2 label + 1/2
teacher label, as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

HEADS: tuple[str, ...] = ("cls", "dist", "avg")


@dataclass(frozen=True)
class Method:
    name: str  # results.json's `method` (with "-cls"/"-dist"/"-avg" appended for a two-token model's heads)
    title: str  # the row label in table.md
    distillation: str  # none | soft | hard
    token: str | None  # where the teacher term goes: "cls", "dist", or None (no teacher term)
    overrides: tuple[str, ...]  # config overrides on top of the preset

    @property
    def is_teacher(self) -> bool:
        return self.name == "teacher"

    @property
    def two_tokens(self) -> bool:
        """A student with a distillation token: it reports each head and their average."""
        return self.token == "dist"

    @property
    def cost_kind(self) -> str:
        """Methods with the same per-epoch cost (soft and hard cost the same): one calibration run each."""
        if self.is_teacher:
            return "teacher"
        if self.token is None:
            return "deit"
        return f"deit-{self.token}"

    @property
    def rows(self) -> tuple[str, ...]:
        """The `method` names of this method's rows in results.json."""
        return tuple(f"{self.name}-{h}" for h in HEADS) if self.two_tokens else (self.name,)


_NO_TOKEN = "model.args.distilled=false"
_SOFT_CLS = ("distillation.type=soft", "distillation.tau=3", "distillation.alpha=0.1",
             "distillation.kl_normalisation=batchmean")
_SOFT_DIST = ("distillation.type=soft", "distillation.tau=3", "distillation.alpha=0.5",
              "distillation.kl_normalisation=batchmean")
_HARD = ("distillation.type=hard", "distillation.alpha=0.5")

METHODS: tuple[Method, ...] = (
    Method("teacher", "convnet teacher", "none", None, ()),
    Method("deit-none", "DeiT, no distillation", "none", None, (_NO_TOKEN, "distillation.type=none")),
    Method("deit-cls-soft", "DeiT, usual distillation, soft", "soft", "cls",
           (_NO_TOKEN, *_SOFT_CLS, "distillation.token=cls")),
    Method("deit-cls-hard", "DeiT, usual distillation, hard", "hard", "cls",
           (_NO_TOKEN, *_HARD, "distillation.token=cls")),
    Method("deit-dist-hard", "DeiT⚗ (distillation token), hard", "hard", "dist",
           ("model.args.distilled=true", *_HARD, "distillation.token=dist")),
    Method("deit-dist-soft", "DeiT⚗ (distillation token), soft", "soft", "dist",
           ("model.args.distilled=true", *_SOFT_DIST, "distillation.token=dist")),
)

# Row name -> (method, head or None): the table's order.
ROWS: dict[str, tuple[Method, str | None]] = {
    row: (m, row.rsplit("-", 1)[1] if m.two_tokens else None) for m in METHODS for row in m.rows
}


def get_method(name: str) -> Method:
    for m in METHODS:
        if m.name == name:
            return m
    raise ValueError(f"unknown method {name!r}; the methods are {', '.join(m.name for m in METHODS)}")


__all__ = ["HEADS", "METHODS", "ROWS", "Method", "get_method"]
