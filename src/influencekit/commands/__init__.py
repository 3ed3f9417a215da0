"""CLI subcommands; see ``influencekit.cli``."""
