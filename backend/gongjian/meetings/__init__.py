"""Joint meetings (联席会议) and consultation meetings (议事协商会议): where projects are decided."""
