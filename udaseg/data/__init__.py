"""Datasets: the class catalog, loaders for the real datasets in their real formats, MiniCity."""
