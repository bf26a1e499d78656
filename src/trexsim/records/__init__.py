"""Records: every run written to an embedded DuckDB database, exportable, summarised."""
