"""Command-line tools: the `netkit` CLI (cli.py) and the tools it runs."""
