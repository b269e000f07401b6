"""Core of the data layer: models, schemas, repositories and database plumbing."""
