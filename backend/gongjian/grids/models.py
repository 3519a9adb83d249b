"""Grid cells, their workers and buildings (filled in by the grids work)."""
