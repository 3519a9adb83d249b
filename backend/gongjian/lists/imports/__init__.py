"""Import and export of the lists (communities, grids, resources, needs) in the interchange format."""
