"""Help text conventions shared by every ``bench`` subcommand: a description and examples."""

from __future__ import annotations

import argparse
import textwrap


def add_command(subparsers, name: str, *, summary: str, description: str, examples: str):
    """A subcommand whose ``--help`` has a description and an Examples section."""
    return subparsers.add_parser(
        name,
        help=summary,
        description=textwrap.fill(description, 88),
        **with_examples(examples),
    )


def with_examples(examples: str) -> dict:
    """``add_parser`` keyword arguments that append an Examples section to a command's help."""
    return {
        "epilog": "examples:\n" + textwrap.indent(textwrap.dedent(examples).strip(), "  "),
        "formatter_class": argparse.RawDescriptionHelpFormatter,
    }
