"""ccctl, the command-line client: one module per command group. Commands parse, call, format."""
