"""Party members and 双报到 reporting (filled in by the members work)."""
