"""The command line (`python -m analysis`): the parser and one module per command group."""
