"""`repeval check-data`: read a whole dataset once and list every file that does not fit its
format. Torch-free at import, like `cli.py`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from repeval.app.console import progress_default
from repeval.app.options import DataOptions, check_data_dir, one_of, parse_key_values
from repeval.datasets import DATASETS


def check_data(
    dataset: str = typer.Argument(..., help=f"Dataset, {one_of(DATASETS.names())}."),
    data_dir: Optional[Path] = typer.Option(None, help="The dataset's folder, as `repeval train` reads it."),
    data_option: DataOptions = [],  # noqa: B006 - typer reads the default, never mutates it
    split_seed: int = typer.Option(0, help="Seed of the train/test split."),
    batch_size: Optional[int] = typer.Option(None, min=2, help="Batch size for the empty-batch estimate. "
                                             "Default: the dataset's training recipe's."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Default: on a terminal only."),
) -> None:
    """Read every sample of a dataset once and list each file that does not fit its format (one
    line each), then a summary, and for each task with samples that have no valid target
    (a PASCAL image without a person) how often a training batch would have none. Exit 0: no
    problem; 1: bad files found (training would stop at the first); 2: the dataset cannot be
    opened at all."""
    from repeval import datasets
    from repeval.datasets.scan import scan
    from repeval.training.config import recipe_batch_size

    DATASETS.check(dataset)
    check_data_dir(dataset, data_dir)
    args = {"split_seed": split_seed, **parse_key_values(data_option, "--data-option")}
    if data_dir is not None:
        args["data_dir"] = str(data_dir)
    datasets.check_args(dataset, args)
    result = scan(datasets.build(dataset, **args), progress=progress_default() if progress is None else progress)
    for line in result.skipped:
        typer.echo(f"left out: {line}")
    for line in result.problems:
        typer.echo(line)
    typer.echo(result.summary())
    for line in result.empty_batch_lines(batch_size or recipe_batch_size(dataset)):
        typer.echo(line)
    if not result.clean:
        raise typer.Exit(1)
