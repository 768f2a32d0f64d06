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


def run(args: argparse.Namespace) -> None:
    """Print the catalogue of task families."""
    from rich.console import Console
    from rich.table import Table

    from adaptrl.envs.catalog import family_catalog

    rows = family_catalog()
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="adaptrl task families  (make(NAME) · gymnasium.make('adaptrl/NAME-v0'))")
    for col in ("family", "obs", "act", "horizon", "backend", "task distribution", "paper"):
        table.add_column(col, overflow="fold")
    for r in rows:
        name = r["name"] + (f" ({', '.join(r['aliases'])})" if r["aliases"] else "")
        table.add_row(name, str(r["obs_dim"]), str(r["act_dim"]), str(r["horizon"]), r["backend"],
                      r["tasks"], r["paper"])
    console = Console()
    console.print(table)
    if args.details:
        for r in rows:
            if r["deviations"]:
                console.print(f"[bold]{r['name']}[/bold] deviations from the original code:")
                for d in r["deviations"]:
                    console.print(f"  - {d}")
