"""The operator's web console at `/ui`: a page shipped in the package (no network needed) over the
`/os` endpoints, with the overview it refreshes from (`routes.py`)."""
