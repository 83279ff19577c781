"""A task: a named dataset, which of its splits train, select and test, and the evaluations it runs."""

from __future__ import annotations

from evalkit.data.base import DatasetSpec
from evalkit.paths import checked_name


class Task:
    """What a task config file describes (``configs/tasks/*.yaml``).

    Args:
        name: the task's name in results and tables (``crc``, ``bach``).
        dataset: the dataset spec (``class_path: ImageFolder`` and its arguments).
        train_split: the split the heads are fitted on.
        val_split: the split for early stopping and the reported validation metrics.
        test_split: an optional held-out split, scored with the weights chosen on ``val_split``.
        evaluations: the evaluations this task runs (registry names, ``evalkit evaluations list``), the
            default first; ``--evaluation`` picks another. Default: the ones its dataset declares.
    """

    def __init__(
        self,
        name: str,
        dataset: DatasetSpec,
        train_split: str = "train",
        val_split: str = "val",
        test_split: str | None = None,
        evaluations: list[str] | None = None,
    ) -> None:
        self.name = checked_name(name, "task name")
        for split in (train_split, val_split, test_split):
            if split is not None:
                checked_name(split, "split name")
        self.dataset = dataset
        self.train_split = train_split
        self.val_split = val_split
        self.test_split = test_split
        self.evaluations = list(evaluations or dataset.evaluations)

    @property
    def splits(self) -> list[str]:
        return list(dict.fromkeys(s for s in (self.train_split, self.val_split, self.test_split) if s))

    def warnings(self) -> list[str]:
        """Lines for what the config declares but the task never uses (results.json ``warnings``)."""
        unused = [split for split in self.dataset.declared_splits() if split not in self.splits]
        if not unused:
            return []
        return [f"the dataset declares split(s) {unused} that task '{self.name}' never embeds nor scores; set "
                f"test_split (or train_split/val_split) to use one, or remove it from the dataset's splits"]

    @property
    def eval_splits(self) -> list[str]:
        return [s for s in (self.val_split, self.test_split) if s]
