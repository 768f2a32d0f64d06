"""``adaptrl envs``: the task families, as a table or JSON."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``envs`` to ``subparsers`` (an argparse subparsers object); returns its parser."""
    parser = subparsers.add_parser("envs", help="list the task families", description=(
        "List every task family: observation/action dimensions, default horizon, simulator "
        "backend and task distribution. Families are usable as adaptrl.envs.make(NAME) and "
        "gymnasium.make('adaptrl/NAME-v0')."))
    parser.add_argument("--details", action="store_true",
                        help="also print each family's deviations from the original code")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    parser.set_defaults(func=run)
    return parser


def family_table(rows: list[dict[str, Any]]) -> Any:
    """The catalogue ``rows`` as a rich table that reads at 80 columns. Names never break: the
    family column does not wrap (each alias on a line of its own, in parentheses); the last column,
    the task distribution with the paper under it, gives way, wrapping at spaces."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title="adaptrl task families  (make(NAME) · gymnasium.make('adaptrl/NAME-v0'))")
    table.add_column("family", no_wrap=True)
    for col in ("obs", "act", "horizon", "backend"):
        table.add_column(col, no_wrap=True)
    table.add_column("task distribution · paper", overflow="fold")
    for r in rows:
        name = "\n".join([r["name"], *(f"({alias})" for alias in r["aliases"])])
        tasks = Text.assemble(r["tasks"], ("\n" + r["paper"], "dim")) if r["paper"] else Text(r["tasks"])
        table.add_row(Text(name), str(r["obs_dim"]), str(r["act_dim"]), str(r["horizon"]), r["backend"],
                      tasks)
    return table


def run(args: argparse.Namespace) -> None:
    """Print the catalogue of task families."""
    from rich.console import Console

    from adaptrl.envs.catalog import family_catalog

    rows = family_catalog()
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    console = Console()
    console.print(family_table(rows))
    if args.details:
        for r in rows:
            if r["deviations"]:
                console.print(f"[bold]{r['name']}[/bold] deviations from the original code:")
                for d in r["deviations"]:
                    console.print(f"  - {d}")
