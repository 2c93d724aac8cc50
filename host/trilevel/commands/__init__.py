"""Subcommands of the `trilevel` CLI."""
