"""Shared by the whole suite. Being here puts tests/ on sys.path, so `import helpers` works."""
