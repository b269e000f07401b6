"""SkillMeat marketplace data layer: models, migrations, tenant isolation and catalog sync."""

__version__ = "0.1.0"
