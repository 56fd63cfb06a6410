"""The command line (`python -m analysis`): `main` (the parser), `common` (shared options, loading, output,
one-line errors) and one module per command group: basic, rank, compress, plan, sensitivity, report."""
