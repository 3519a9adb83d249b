"""Unit and community standings, computed from the records (agreements, projects, reportings, evaluations)."""
