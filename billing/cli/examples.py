"""``billing init --example DIR``: the sample catalog and configuration, shipped inside the package
(``billing/examples/``, the same files as the repository's ``catalog.toml`` and ``config.toml``), written to a
folder so that an installed ``billing`` has something to start from outside the repository.

The configuration's relative paths (``catalog = "catalog.toml"``, ``database_url = "sqlite:///billing.db"``) are
relative to its own folder, so the written folder works from any working directory.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from billing.cli._common import console, fail

__all__ = ["EXAMPLE_FILES", "example_text", "write_example"]

EXAMPLE_FILES = ("catalog.toml", "config.toml")


def example_text(name: str) -> str:
    """The packaged example file ``name`` (one of :data:`EXAMPLE_FILES`)."""
    return (resources.files("billing") / "examples" / name).read_text(encoding="utf-8")


def write_example(folder: Path, *, force: bool = False) -> Path:
    """Write the example files into ``folder`` (created if needed) and return its configuration file.

    Files already there are refused (exit 1) unless ``force``; nothing is written then.
    """
    targets = [folder / name for name in EXAMPLE_FILES]
    if folder.exists() and not folder.is_dir():
        fail(f"--example: {folder} is not a folder")
    existing = [str(target) for target in targets if target.exists()]
    if existing and not force:
        which = f"{existing[0]} already exists" if len(existing) == 1 else f"{' and '.join(existing)} already exist"
        fail(f"{which}; use --force to replace the example (and the database)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for target in targets:
            target.write_text(example_text(target.name), encoding="utf-8")
    except OSError as error:
        fail(f"cannot write the example into {folder}: {error.strerror or error}")
    console.print(f"wrote {', '.join(str(t) for t in targets)}", highlight=False, soft_wrap=True)
    return targets[-1]
